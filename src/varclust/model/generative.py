"""The generative model: c ~ Categorical(pi), z | c ~ Normal(mu_c, sigma_c), x | z ~ p(x | z)."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor, nn

from .likelihoods import Likelihood
from .pretraining_losses import AutoencoderLoss

__all__ = ["ClusteringModel", "GenerativeModel", "data_plate"]


def data_plate(x: Tensor, indices: Tensor | None = None, num_data: int | None = None):
    """The ``data`` plate shared by model and guides.

    Args:
        x: (B, ...) the mini-batch.
        indices: (B,) the batch's indices into the full data (default ``arange(B)``).
        num_data: N, the full data size; the ELBO is scaled by N / B (default B).
    """
    batch = x.shape[0]
    size = batch if num_data is None else int(num_data)
    if indices is None:
        indices = torch.arange(batch, device=x.device)
    return pyro.plate("data", size, subsample=indices, device=x.device)


class GenerativeModel(PyroModule):
    """What every model of a fit shares, whatever its generator p(x | z): a ``prior``, the
    Pyro model ``forward(x, indices, num_data, cluster, cluster_mask)`` and the methods below,
    so the fit never asks which generator it holds (registered in :mod:`varclust.registry`).
    """

    #: True when the model scores x by a likelihood, a density of x (a decoder's); False for a
    #: generator whose ``x`` factor is a training loss (the diffusion generator)
    scores_with_likelihood: bool = True

    def check_data(self, x: Tensor) -> None:
        """Raise ValueError when data x (N, ...) lie outside what the generator models."""
        raise NotImplementedError

    def generator_modules(self) -> list[nn.Module]:
        """The modules autoencoder pretraining trains with the guide's encoder."""
        raise NotImplementedError

    def pretraining_loss(self, encoder: nn.Module) -> nn.Module:
        """x (B, ...) -> the scalar autoencoder pretraining minimises with ``encoder``."""
        raise NotImplementedError

    def generate(self, z: Tensor, steps: int | None = None, guidance: float = 0.0) -> Tensor:
        """Data for codes z (B, D): (B, *data_shape). ``steps`` and ``guidance`` concern
        generators that sample by a reverse chain; others ignore them."""
        raise NotImplementedError

    def latent_reliance(self, x: Tensor, codes: Tensor, seed: int) -> float | None:
        """How much the generator uses the codes (B, D) of data x (B, ...), or None when the
        generator does not measure it. Default: None."""
        return None

    def decode_mean(self, z: Tensor) -> Tensor:
        """The expected datum for codes z (..., D): (..., *data_shape), the reconstructions of
        ``to_inference_data``. Default: :meth:`generate`."""
        return self.generate(z)

    def density_kind(self) -> str:
        """The name of the density of x, so that held-out comparisons refuse fits whose
        log-likelihoods are not of the same kind. Default: the model's class name."""
        return type(self).__name__

    def relax_cluster(self, temperature: float | None) -> None:
        """Draw the cluster as a relaxed one-hot (the ``relaxed`` guide's model). Default: a
        model without a relaxed cluster refuses."""
        if temperature is not None:
            raise ValueError(
                f"the relaxed guide needs a model with a relaxed cluster, which "
                f"{type(self).__name__} does not have: implement relax_cluster(temperature) "
                "(see ClusteringModel), or use guide='marginal' or 'mixture'")


class ClusteringModel(GenerativeModel):
    """p(x, z, c) = p(c) p(z | c) p(x | z), the prior, decoder and likelihood swappable.

    Args:
        prior: a :class:`~varclust.model.priors.MixturePrior` (or any PyroModule with its
            ``sample_parameters()``, called outside the data plate, and
            ``forward(params, cluster, cluster_mask)``, called inside it, which emits
            ``cluster`` and ``z`` and returns z of shape (..., B, D)).
        decoder: z (..., D) -> raw output (..., *data_shape).
        likelihood: raw output -> distribution over a datum.
        data_shape: the shape of one datum, e.g. (1, 28, 28).
    """

    def __init__(
        self, prior: PyroModule, decoder: nn.Module, likelihood: Likelihood, data_shape: tuple
    ) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.data_shape = tuple(data_shape)
        #: alpha >= 0 of the extra term alpha * log p(c = label | z) on labelled data
        self.label_weight = 0.0
        #: the relaxed model's Concrete temperature T_p of p(w); None: the discrete cluster
        self.cluster_temperature: float | None = None

    def density_kind(self) -> str:
        """The likelihood's class: fits compare on held-out data when theirs agree."""
        return type(self.likelihood).__name__

    def relax_cluster(self, temperature: float | None) -> None:
        """Draw the cluster as a relaxed one-hot w ~ Concrete(temperature, weights) through
        ``prior.relaxed`` instead of enumerating it; None restores the discrete cluster. See
        :mod:`varclust.guides.relaxed`.

        Raises:
            ValueError: the prior has no relaxed form (``prior.relaxed_component``), or the
                temperature is not positive.
        """
        if temperature is not None:  # refuse a prior without p(z | w) now, not at a step
            if not temperature > 0:
                raise ValueError(f"the relaxed model's temperature must be > 0, got {temperature}")
            params = self.prior.point_parameters()
            k = self.prior.num_clusters
            self.prior.relaxed_component(params, params["log_weights"].new_full((1, k), 1 / k))
        self.cluster_temperature = temperature

    def forward(
        self,
        x: Tensor,
        indices: Tensor | None = None,
        num_data: int | None = None,
        cluster: Tensor | None = None,
        cluster_mask: Tensor | None = None,
    ):
        """x: (B, *data_shape); indices: (B,) positions in the full data; num_data: N.

        Semi-supervised batches also pass ``cluster`` (B,) labels, conditioned on where
        ``cluster_mask`` (B,) is true and enumerated elsewhere.
        """
        params = self.prior.sample_parameters()
        with data_plate(x, indices, num_data):
            z = self.latent(params, cluster, cluster_mask)
            if cluster_mask is not None and self.label_weight > 0:
                self._label_term(z, cluster, cluster_mask)
            out = self.decoder(z)
            pyro.sample("x", self.likelihood(out, len(self.data_shape)), obs=x)

    def latent(
        self, params: dict[str, Tensor], cluster: Tensor | None, cluster_mask: Tensor | None
    ) -> Tensor:
        """Inside the data plate: the cluster (enumerated, or relaxed) and z (..., B, D)."""
        if self.cluster_temperature is None:
            return self.prior(params, cluster, cluster_mask)
        temperature = params["log_weights"].new_tensor(self.cluster_temperature)
        return self.prior.relaxed(params, temperature, cluster, cluster_mask)

    def _label_term(self, z: Tensor, cluster: Tensor, cluster_mask: Tensor) -> None:
        """alpha * log p(c = label | z) on the labelled data (M2's alpha-weighted classification
        term, Kingma et al. 2014, with the model's own cluster posterior as the classifier).

        With alpha = 0 the objective is the ELBO of p(X, labels); alpha > 0 gives the few labels
        more say than their likelihood alone. z: (..., B, D); cluster, cluster_mask: (B,).
        """
        log_joint = self.prior.log_joint(z)
        log_post = log_joint - log_joint.logsumexp(-1, keepdim=True)
        index = cluster.expand(log_post.shape[:-1]).unsqueeze(-1)
        with poutine.mask(mask=cluster_mask):
            pyro.factor("cluster_label", self.label_weight * log_post.gather(-1, index).squeeze(-1))

    def decode_mean(self, z: Tensor) -> Tensor:
        """Expected datum for codes z (..., D) -> (..., *data_shape)."""
        return self.likelihood.mean(self.decoder(z))

    def check_data(self, x: Tensor) -> None:
        """The likelihood's support."""
        self.likelihood.check_data(x)

    def generator_modules(self) -> list[nn.Module]:
        return [self.decoder, self.likelihood]

    def pretraining_loss(self, encoder: nn.Module) -> nn.Module:
        """The reconstruction loss -log p(x | z = loc(x)) with the decoder and likelihood."""
        return AutoencoderLoss(encoder, self.decoder, self.likelihood)

    def generate(self, z: Tensor, steps: int | None = None, guidance: float = 0.0) -> Tensor:
        """The expected datum (:meth:`decode_mean`): (B, *data_shape)."""
        return self.decode_mean(z)
