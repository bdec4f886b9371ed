"""The user-facing object: build, fit, predict, sample, save and load a clustering model."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from .config import FitConfig
from .data.validation import (
    as_image_tensor,
    check_fit_input,
    check_num_clusters,
    check_supervised_settings,
)
from .guides.base import ClusterGuide
from .inference import loop
from .inference.consensus import configured_targets
from .inference.distributed import DistributedContext
from .inference.persistence import read_fit, read_resume_state, restore_fitted, save_fitted
from .inference.prediction import ClusterPrediction, encode_means, predict_clusters
from .inference.progress import Progress
from .inference.run_folder import RunLock, check_writable, data_fingerprint, prepare_run_folder
from .inference.speed import fast_math, resolve_device
from .metrics import clustering_scores
from .model.generative import GenerativeModel
from .notebook_methods import NotebookMethods
from .registry import CUSTOM, build_model_and_guide, check_data, generator_of
from .summaries import mean_elbo

__all__ = ["ClusterPrediction", "VarClust", "resolve_device"]

#: the components given by name or as your own object or factory (:mod:`varclust.registry`)
COMPONENTS = ("prior", "guide", "likelihood")


class VarClust(NotebookMethods):
    """A Gaussian-mixture VAE for clustering, fitted by SVI with the cluster enumerated.

    Example::

        vc = VarClust(num_clusters=10, epochs=30)
        vc.fit(images)                 # (N, H, W) or (N, C, H, W) floats in [0, 1]
        pred = vc.predict(images)      # labels (N,), responsibilities (N, K), entropy (N,)
        new = vc.sample(cluster=3, num_samples=16)   # (16, C, H, W)

    Args:
        num_clusters: K >= 2.
        config: a full :class:`FitConfig`; keyword settings override its fields.
        **settings: any :class:`FitConfig` field (``latent_dim``, ``epochs``, ``network`` ...).
            ``prior``, ``guide`` and ``likelihood`` take a registered name or your own object
            or factory (:mod:`varclust.registry`).
    """

    def __init__(
        self, num_clusters: int | None = None, *, config: FitConfig | None = None, **settings: Any
    ) -> None:
        base = config.to_dict() if config is not None else {}
        if num_clusters is not None:
            settings["num_clusters"] = num_clusters
        #: user objects/factories given instead of registered names
        self.components: dict[str, Any] = {}
        for kind in COMPONENTS:
            if kind in settings and not isinstance(settings[kind], str):
                self.components[kind] = settings[kind]
                settings[kind] = CUSTOM
        self.config = FitConfig.from_dict({**base, **settings})
        check_num_clusters(self.config.num_clusters)
        self.device = resolve_device(self.config.device)
        self.model: GenerativeModel | None = None
        self.guide: ClusterGuide | None = None
        self.data_shape: tuple[int, ...] | None = None
        self.history: list[dict[str, float]] = []
        self.pretrain_losses: list[float] = []
        #: the parts of the fit (the first run, then each resume): see run_folder.segment_record
        self.segments: list[dict[str, Any]] = []
        #: N, datum shape and hash of the data fitted (run_folder.data_fingerprint)
        self.data_fingerprint_: dict[str, Any] | None = None
        #: what the run folder records beside the model (data set name, data paths ...)
        self.metadata_: dict[str, Any] = {}
        #: (K,) data of the fit in each cluster after the last epoch (None before a fit)
        self.cluster_sizes_: np.ndarray | None = None
        #: the collapse guard's warning about the last epoch, None when it did not collapse
        self.collapse_warning_: str | None = None
        #: the generator's reliance on the codes after pretraining (None: not measured)
        self.latent_reliance: float | None = None

    def build(self, data_shape: tuple[int, ...]) -> None:
        """Build the untrained model and guide for data of ``data_shape`` (one datum, e.g.
        (1, 28, 28)) from the registry (:func:`varclust.registry.build_model_and_guide`)."""
        self.model, self.guide = build_model_and_guide(self.config, data_shape, self.components)
        self.model.to(self.device)
        self.guide.to(self.device)
        self.data_shape = tuple(data_shape)

    def _require_fitted(self) -> None:
        if self.model is None:
            raise RuntimeError(
                "this VarClust is not fitted yet: call fit(X) or VarClust.load(path)"
            )

    def _prepare(self, X: ArrayLike | Tensor, name: str = "X") -> Tensor:
        x = as_image_tensor(X if isinstance(X, Tensor) else np.asarray(X), name=name)
        if self.data_shape is not None and tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"{name} has data shape {tuple(x.shape[1:])} but the model was built for "
                f"{self.data_shape}"
            )
        self._check_data(x)
        return x.to(self.device)

    def _check_data(self, x: Tensor) -> None:
        """The generator's support (for a decoder, the likelihood's)."""
        if self.model is not None:
            self.model.check_data(x)
        else:
            check_data(self.config, x, self.components)

    def fit(
        self, X: ArrayLike | Tensor, y: ArrayLike | None = None, *,
        out_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
        progress: bool | str = True, metadata: dict[str, Any] | None = None,
        labelled: ArrayLike | None = None, distributed: DistributedContext | None = None,
        pretrained: VarClust | str | os.PathLike | None = None,
    ) -> VarClust:
        """Fit to data X (N, ...) of floats in [0, 1]; y (N,) labels only for per-epoch scores.

        ``out_dir``: a run folder, locked while the fit runs, with a checkpoint (atomic) after
        every pretraining epoch, after pretraining and after every epoch, and ``metrics.json``.
        A folder holding another run is refused unless ``overwrite=True`` (its files are
        removed first); ``resume=True`` continues its checkpoint (mid-pretraining included),
        refusing other data or changed run-defining settings. ``progress``: True bars on a
        terminal, plain lines elsewhere; "lines"; False nothing.
        ``labelled`` (N,) bool: the data whose label y the model is given (semi-supervised;
        cluster k = label k; ``label_weight`` > 0 adds label_weight * log p(c = label | z)).
        ``pretrained`` (a fit, a run folder or checkpoint file): start from its autoencoder
        (same ``latent_dim``, ``network``, ``hidden``, ``likelihood``, generator, data shape)
        instead of pretraining. ``distributed`` (under torchrun): data-parallel SVI; rank 0
        alone shows progress, scores and writes (:mod:`varclust.inference.distributed`).
        """
        if resume and overwrite:
            raise ValueError("resume and overwrite contradict each other: choose one")
        c = self.config
        main = distributed is None or distributed.is_main
        if distributed is not None:
            self.device = distributed.device
            distributed.per_rank_batch(c.batch_size)  # refuse a batch that does not split
            if not main:
                progress, y = False, None
        show = Progress(progress)
        x, labels, supervision = check_fit_input(X, y, labelled, c.num_clusters,
                                                 self._check_data, self.device)
        pyro.set_rng_seed(c.seed)
        self.build(tuple(x.shape[1:]))  # before the run folder is touched: a refusal loses nothing
        if supervision:
            check_supervised_settings(c.revive_clusters, self.model.prior)
        out = Path(out_dir) if out_dir is not None else None
        with contextlib.ExitStack() as stack:
            stack.enter_context(fast_math(self.device))  # TF32 on a recent GPU, for the fit
            if out is not None:
                check_writable(out)
                if main:
                    stack.enter_context(RunLock(out))
                    prepare_run_folder(out, resume=resume, overwrite=overwrite)
            x = x.to(self.device)
            self.data_fingerprint_ = data_fingerprint(
                x, **supervision, targets=configured_targets(c, len(x)))
            self.metadata_ = dict(metadata or {})
            state = (read_resume_state(self, out, tuple(x.shape[1:]), self.device, main)
                     if resume else None)
            if state is not None:  # the run's metadata go on; what is typed now is added
                self.metadata_ = {**state.get("metadata", {}), **self.metadata_}
            if pretrained is not None:  # metrics.json names where the autoencoder came from
                self.metadata_["pretrained_from"] = (
                    "a VarClust object" if isinstance(pretrained, VarClust) else str(pretrained))
            if distributed is not None:
                distributed.barrier()  # every rank has read the checkpoint before one is written
            loop.run(self, x, labels, supervision, state=state, out=out, show=show,
                     distributed=distributed, pretrained=self._source(pretrained),
                     own_pretraining=generator_of(c).pretrain)
        return self

    def _source(self, pretrained: VarClust | str | os.PathLike | None):
        """``pretrained=`` as a thunk that gives the fitted source when the fit needs it."""
        if pretrained is None:
            return None

        def source() -> VarClust:
            fit = (pretrained if isinstance(pretrained, VarClust)
                   else VarClust.load(pretrained, device=str(self.device)))
            fit._require_fitted()
            return fit

        return source

    def predict(self, X: ArrayLike | Tensor) -> ClusterPrediction:
        """Cluster labels, responsibilities (N, K) and their entropy for data X (N, ...)."""
        self._require_fitted()
        return predict_clusters(self.model, self.guide, self._prepare(X))

    @torch.no_grad()
    def encode(self, X: ArrayLike | Tensor) -> np.ndarray:
        """Posterior means of the codes: (N, D)."""
        self._require_fitted()
        return encode_means(self.guide, self._prepare(X)).cpu().numpy()

    @torch.no_grad()
    def sample(self, cluster: int, num_samples: int) -> Tensor:
        """Draw z from component ``cluster`` and generate: (num_samples, *data_shape) expected
        images (for Bernoulli pixels, probabilities in [0, 1]), or for a generator with a
        reverse chain, images from it (``sample_steps``, ``guidance``)."""
        self._require_fitted()
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        z = self.model.prior.sample_component(cluster, num_samples)
        steps = self.config.sample_steps or None
        return self.model.generate(z, steps=steps, guidance=self.config.guidance).cpu()

    def score(self, X: ArrayLike | Tensor, y: ArrayLike | None = None) -> float | dict:
        """Without y: the mean ELBO per datum of X (N, ...) (held-out data: higher is better;
        one draw of z per datum). With labels y (N,): ACC, NMI and ARI of the clusters."""
        if y is None:
            self._require_fitted()
            return mean_elbo(self.model, self.guide, self._prepare(X))
        return clustering_scores(np.asarray(y), self.predict(X).labels)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, X: ArrayLike | Tensor | None = None,
             y: ArrayLike | None = None, *, overwrite: bool = False) -> None:
        """Write the fitted model to ``path`` (atomically): a checkpoint file when ``path`` has
        a suffix (``model.pt``), else a run folder (``checkpoint.pt``, ``metrics.json``) that
        ``varclust evaluate`` / ``report`` read; given X (N, ...) and labels y (N,), the folder
        keeps them as ``data.npy`` / ``labels.npy`` for those commands. A folder holding
        another run is refused unless ``overwrite`` (which removes that run's files first);
        the fit's own ``out_dir`` is updated in place."""
        self._require_fitted()
        save_fitted(self, Path(path), X, y, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", **components: Any) -> VarClust:
        """Rebuild a fitted model from a checkpoint written by ``fit(out_dir=...)`` or ``save``.

        A model fitted with your own prior/guide/likelihood object needs it again:
        ``VarClust.load(path, prior=MyPrior)``. When the newest checkpoint is damaged, its
        previous good copy (``checkpoint.prev.pt``) is loaded instead, with a logged warning.
        """
        state, config = read_fit(Path(path), device)
        vc = cls(config=config)
        vc.components.update(components)
        with torch.random.fork_rng(devices=[]):  # the initial weights the checkpoint replaces
            vc.build(tuple(state["data_shape"]))  # (built on the CPU) leave the RNG untouched
        restore_fitted(vc, state)
        return vc
