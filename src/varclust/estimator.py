"""The user-facing object: build, fit, predict, sample, save and load a clustering model."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from ._version import __version__
from .config import STRUCTURAL_KEYS, FitConfig
from .data.validation import as_image_tensor, check_num_clusters
from .guides.base import ClusterGuide
from .inference.batching import batched_apply
from .inference.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_latest_checkpoint,
    previous_path,
    restore_rng_state,
    save_checkpoint,
    write_atomic,
)
from .inference.collapse import cluster_usage, collapse_warning
from .inference.distributed import DistributedContext, DistributedSVITrainer
from .inference.em import fit_em, kl_warmup, make_e_step
from .inference.kl_warmup import KLScale, kl_warmup_weight
from .inference.pretrain import Pretrainer
from .inference.progress import Progress
from .inference.regularisers import cluster_information, regularisers_of
from .inference.run_folder import (
    RunLock,
    check_resume_record,
    clear_derived,
    data_fingerprint,
    holds_run,
    prepare_run_folder,
    save_arrays,
    segment_record,
)
from .inference.speed import configure_fast_math, scaled_learning_rate
from .inference.svi import SVITrainer
from .metrics import clustering_scores
from .model.generative import ClusteringModel
from .model.likelihoods import Likelihood
from .model.mixture_fit import align_to_labels, fit_mixture_to_codes
from .registry import CUSTOM, build_likelihood, build_model_and_guide, check_data, generator_of
from .summaries import cluster_means, describe, mean_elbo, mixture_parameters

__all__ = ["ClusterPrediction", "VarClust", "resolve_device"]

log = logging.getLogger("varclust")
#: below this relative rise of the noise loss under shuffled codes, warn that a diffusion
#: generator ignores z. Calibrated on EM fits of the UCI digits (BENCHMARKS.md, issue 13): from
#: reliance 0.02 the clusters collapsed (ACC 0.29), from 0.13 they held but ACC fell to 0.72,
#: from 0.27 / 0.48 / 0.76 ACC was 0.79 / 0.80 / 0.81.
LATENT_RELIANCE_WARNING = 0.25

#: epochs between two measurements of the latent reliance in diffusion pretraining
RELIANCE_CHECK_EVERY = 5

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
#: settings a fit must share with the one whose autoencoder it starts from (``pretrained=``)
AUTOENCODER_KEYS = ("latent_dim", "network", "hidden", "likelihood", "generator_name")


@dataclass
class ClusterPrediction:
    """Cluster assignments of N data points under K clusters.

    Attributes:
        labels: (N,) the posterior mode of the cluster.
        responsibilities: (N, K) the cluster posterior, rows sum to 1.
        entropy: (N,) the posterior's entropy in nats (0: certain, log K: undecided).
    """

    labels: np.ndarray
    responsibilities: np.ndarray
    entropy: np.ndarray


def resolve_device(device: str) -> torch.device:
    """"auto" picks CUDA when available; "cuda" without a GPU is an error, not a silent CPU run."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            "device='cuda' was asked for but PyTorch sees no GPU; use 'cpu' or 'auto'"
        )
    return torch.device(device)


def make_likelihood(name: str) -> Likelihood:
    return build_likelihood(FitConfig(likelihood=name))


COMPONENTS = ("prior", "guide", "likelihood")


class VarClust:
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
        self.model: ClusteringModel | None = None
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
        #: ddpm generator: ConditionalDDPM.latent_reliance on the data after pretraining
        self.latent_reliance: float | None = None

    # ------------------------------------------------------------------ building
    def build(self, data_shape: tuple[int, ...]) -> None:
        """Build the model and guide for data of ``data_shape`` (one datum, e.g. (1, 28, 28))
        from the registry (:func:`varclust.registry.build_model_and_guide`), untrained."""
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

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: ArrayLike | Tensor,
        y: ArrayLike | None = None,
        *,
        out_dir: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool | str = True,
        metadata: dict[str, Any] | None = None,
        labelled: ArrayLike | None = None,
        distributed: DistributedContext | None = None,
        pretrained: VarClust | str | os.PathLike | None = None,
    ) -> VarClust:
        """Fit to data X (N, ...) of floats in [0, 1]; y (N,) labels only for per-epoch scores.

        ``out_dir`` is locked while the fit runs (a second writer is refused, naming the
        holder's pid). A new fit into a folder holding another run is refused unless
        ``overwrite=True``, which first removes every artefact of the old run. ``progress``:
        True shows progress bars on a terminal and plain per-epoch lines elsewhere, "lines"
        always prints the lines, False prints nothing. See :meth:`_fit` for the rest.
        """
        if resume and overwrite:
            raise ValueError("resume and overwrite contradict each other: choose one")
        with contextlib.ExitStack() as stack:

            def claim_folder(out: Path) -> None:  # once the data are validated
                if _is_main(distributed):
                    stack.enter_context(RunLock(out))
                    prepare_run_folder(out, resume=resume, overwrite=overwrite)

            return self._fit(X, y, out_dir=out_dir, resume=resume, progress=progress,
                             metadata=metadata, labelled=labelled, distributed=distributed,
                             pretrained=pretrained, claim_folder=claim_folder)

    def _fit(
        self,
        X: ArrayLike | Tensor,
        y: ArrayLike | None = None,
        *,
        out_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool | str = True,
        metadata: dict[str, Any] | None = None,
        labelled: ArrayLike | None = None,
        distributed: DistributedContext | None = None,
        pretrained: VarClust | str | os.PathLike | None = None,
        claim_folder: Callable[[Path], None] = lambda out: None,
    ) -> VarClust:
        """Fit to data X (N, ...) of floats in [0, 1]; y (N,) labels only for per-epoch scores.

        Semi-supervised: ``labelled`` (N,) bool marks the data whose label y is given to the
        model: their ``cluster`` is observed (cluster k = label k, labels in [0, K)), the rest
        enumerated; the mixture fitted after pretraining has its components reordered to match
        the labels (Hungarian matching), and ``label_weight`` > 0 adds
        label_weight * log p(c = label | z) for the labelled data.

        ``pretrained`` (another fit, or its run folder / checkpoint file) replaces the
        autoencoder pretraining: its encoder and decoder (or diffusion generator) and
        likelihood are copied, then the GaussianMixture is fitted to the codes as after
        pretraining. It must have the same ``latent_dim``, ``network``, ``hidden``,
        ``likelihood``, generator and data shape; the prior, guide and K may differ, so
        priors and guides can be compared from one pretrained autoencoder.

        With ``out_dir``, a checkpoint is written atomically after every pretraining epoch,
        after pretraining and after every epoch, with ``metrics.json`` beside it;
        ``resume=True`` continues from that checkpoint, mid-pretraining included (``pretrained``
        is then unused), and refuses other data or changed run-defining settings
        (:func:`varclust.inference.run_folder.check_resume_record`).
        With ``distributed`` (from :func:`varclust.inference.distributed.init_distributed`, in a
        process launched by torchrun), SVI runs data-parallel over the process group; rank 0
        alone shows progress, computes per-epoch scores and writes the run folder.
        """
        c = self.config
        if distributed is not None:
            self.device = distributed.device
            distributed.per_rank_batch(c.batch_size)  # refuse a batch that does not split
            if not distributed.is_main:
                progress, y = False, None
        show = Progress(progress)
        configure_fast_math(self.device)
        x = as_image_tensor(X if isinstance(X, Tensor) else np.asarray(X))
        check_num_clusters(c.num_clusters, len(x))
        self._check_data(x)
        labels = None
        if y is not None:
            labels = np.asarray(y)
            if labels.shape != (len(x),):
                raise ValueError(f"y must have shape ({len(x)},), got {labels.shape}")
            if not np.issubdtype(labels.dtype, np.integer):
                raise TypeError(f"y must hold integer class labels, got dtype {labels.dtype}")
        supervision = _supervision(labels, labelled, c.num_clusters, len(x), self.device)
        out = Path(out_dir) if out_dir is not None else None
        ckpt_path = out / CHECKPOINT_NAME if out is not None else None
        if out is not None:
            _check_writable(out)
            claim_folder(out)
        x = x.to(self.device)
        self.data_fingerprint_ = data_fingerprint(x, **supervision)
        self.metadata_ = dict(metadata or {})

        state = None
        if resume:
            if ckpt_path is None:
                raise ValueError("resume=True needs out_dir, where the checkpoint lives")
            if ckpt_path.exists() or previous_path(ckpt_path).exists():
                state, _ = load_latest_checkpoint(ckpt_path, map_location=self.device)
                self._check_compatible(state, tuple(x.shape[1:]), ckpt_path)
                check_resume_record(state["config"], c.to_dict(), state.get("data_fingerprint"),
                                    self.data_fingerprint_, ckpt_path)
                if _is_main(distributed):  # evaluation.json, report/ ... describe an older state
                    clear_derived(out)
            else:
                log.warning("no checkpoint in %s: starting a new run", out)
        if distributed is not None:
            distributed.barrier()  # every rank has read the checkpoint before rank 0 writes one
        pyro.set_rng_seed(c.seed)
        self.build(tuple(x.shape[1:]))
        trainer = self._make_trainer(distributed)
        start_epoch = 0

        def save_pretraining(pretrainer_state: dict) -> None:
            if ckpt_path is not None and _is_main(distributed):
                self._save(ckpt_path, "pretrain", 0, trainer, metadata, pretrainer_state)

        if state is not None:
            self._load_modules(state)
            self.history = list(state["history"])
            self.pretrain_losses = list(state["pretrain_losses"])
            start_epoch = int(state["epoch"])
            self.segments = [*state.get("segments", []),
                             segment_record(c.to_dict(), start_epoch, state["phase"])]
            if state["phase"] == "train":
                trainer.load_state_dict(state["trainer"])
            restore_rng_state(state["rng"])
            if state["phase"] == "pretrain":  # stopped inside pretraining: finish it
                self._pretrain(x, show, distributed, supervision, save_pretraining,
                               state["pretrainer"])
        else:
            self.history, self.pretrain_losses = [], []
            self.segments = [segment_record(c.to_dict(), 0, "new")]
            if pretrained is not None:
                self._start_from(pretrained, x, supervision)
            elif c.pretrain_epochs > 0:
                self._pretrain(x, show, distributed, supervision, save_pretraining)
        if (state is None or state["phase"] == "pretrain") and ckpt_path is not None and (
                _is_main(distributed)):
            self._save(ckpt_path, "init", 0, trainer, metadata)
        if isinstance(trainer, DistributedSVITrainer):
            trainer.sync_parameters()  # pretraining on a GPU is not bit-reproducible over ranks

        if c.method == "em":
            self._fit_em(x, labels, trainer, start_epoch, ckpt_path, show, metadata,
                         supervision)
            self._warn_if_collapsed()
            return self

        steps_per_epoch = -(-len(x) // c.batch_size)
        bar = show.bar(
            total=c.epochs * steps_per_epoch,
            initial=start_epoch * steps_per_epoch,
            desc="svi",
            unit="step",
        )
        num_data = len(x)

        def on_step(i: int, loss: Tensor) -> None:
            bar.update(1)
            if i % 20 == 0 and show.bars:
                bar.set_postfix(elbo=f"{-float(loss) / num_data:.2f}")
            every = c.checkpoint_every_steps
            if ckpt_path is not None and every and (i + 1) % every == 0 and (
                    i + 1 < steps_per_epoch) and _is_main(distributed):  # mid-epoch
                self._save(ckpt_path, "train", epoch, trainer, metadata)

        if c.epochs == 0 or start_epoch >= c.epochs:
            self._refit_clusters(x)
        for epoch in range(start_epoch, c.epochs):
            t0 = time.perf_counter()
            self.model.train()
            self.guide.train()
            self.guide.start_epoch(epoch)  # e.g. the relaxed guide's temperature
            beta = kl_warmup_weight(epoch, c.kl_warmup_epochs)
            with KLScale(beta):
                elbo = trainer.epoch(x, c.batch_size, c.seed, epoch, on_step, **supervision)
            self._refit_clusters(x)
            record: dict[str, float] = {
                "epoch": epoch + 1,
                "elbo": elbo,
                "seconds": time.perf_counter() - t0,
                "skipped_steps": trainer.last_epoch_skipped,
            }
            record.update(self._component_summary())
            if c.kl_warmup_epochs:
                record["kl_weight"] = beta
            record.update(self._epoch_scores(x, labels))
            self.history.append(record)
            if show.bars:
                bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
            show.line("svi epoch", epoch + 1, c.epochs, record)
            if ckpt_path is not None and _is_main(distributed):
                self._save(ckpt_path, "train", epoch + 1, trainer, metadata)
        bar.close()
        self._warn_if_collapsed()
        return self

    def _epoch_scores(self, x: Tensor, labels: np.ndarray | None) -> dict[str, float]:
        """The collapse guard's record (clusters_used, largest_cluster; see
        :mod:`varclust.inference.collapse`), I_q(c; x) when terms outside the ELBO act on it, and
        ACC/NMI/ARI when labels (N,) are known."""
        pred = self._predict_tensor(x)
        assigned = pred.labels
        self.cluster_sizes_ = np.bincount(assigned, minlength=self.config.num_clusters)
        out = cluster_usage(assigned, self.config.num_clusters)
        if regularisers_of(self.config):  # what the terms outside the ELBO push up, all data
            out["cluster_information_nats"] = float(cluster_information(
                torch.as_tensor(pred.responsibilities).clamp_min(1e-30).log()))
        if labels is not None:
            out.update(clustering_scores(labels, assigned))
        return out

    def _warn_if_collapsed(self) -> None:
        """Log the collapse guard's warning when the last epoch's clusters collapsed; kept as
        ``collapse_warning_`` (None when the fit did not collapse)."""
        last = self.history[-1] if self.history else {}
        prunes = self.model.prior.prunes_clusters
        self.collapse_warning_ = (collapse_warning(last, self.config.num_clusters, prunes)
                                  if "clusters_used" in last else None)
        if self.collapse_warning_:
            log.warning(self.collapse_warning_)

    def _refit_clusters(self, x: Tensor) -> None:
        """For priors whose clusters are fitted to the codes (the standard normal): refit."""
        if self.model.prior.fits_clusters_to_codes:
            self.guide.eval()
            codes = batched_apply(lambda b: self.guide.encode(b)[0], x)
            self.model.prior.fit_to_codes(codes, self.config.seed)

    def _component_summary(self) -> dict[str, float]:
        """Per-epoch facts of the components: the relaxed guide's temperature, the clusters a
        Bayesian prior keeps in use, the DP's concentration."""
        out: dict[str, float] = dict(self.guide.epoch_summary())
        out.update(self.model.prior.epoch_summary())
        return out

    def _fit_em(
        self, x: Tensor, labels: np.ndarray | None, trainer: SVITrainer, start: int,
        ckpt_path: Path | None, show: Progress, metadata: dict[str, Any] | None,
        supervision: dict[str, Tensor] | None = None,
    ) -> None:
        """EM iterations (M-step epochs with the prior frozen, labels of a semi-supervised fit
        included, then the E-step ``e_step``), each recorded in ``history`` and checkpointed
        like an SVI epoch."""
        c = self.config
        steps = c.m_step_epochs * -(-len(x) // c.batch_size)
        outer = show.bar(total=c.em_iterations, initial=start, desc="EM", unit="iter")
        m_bar = show.bar(total=steps, desc="M-step", unit="step", leave=False)

        def on_m_step(i: int, loss: Tensor) -> None:
            if i == 0 and m_bar.n >= steps:
                m_bar.reset()
            m_bar.update(1)

        def on_iteration(record: dict[str, Any]) -> None:
            record["skipped_steps"] = trainer.last_epoch_skipped
            record.update(self._component_summary())
            record.update(self._epoch_scores(x, labels))
            self.history.append(record)
            show.line("EM iteration", record["iteration"], c.em_iterations, record)
            outer.update(1)
            outer.set_postfix({k: round(v, 3) for k, v in record.items()
                               if k in ("elbo", "loglik", "acc", "nmi")})
            if ckpt_path is not None:
                self._save(ckpt_path, "train", record["iteration"], trainer, metadata)

        e_step = make_e_step(c.e_step, c.e_step_iterations, c.e_step_reg_covar,
                             c.e_step_min_weight)
        fit_em(
            self.model, self.guide, x, trainer, iterations=c.em_iterations,
            m_step_epochs=c.m_step_epochs, batch_size=c.batch_size, seed=c.seed,
            e_step=e_step, start_iteration=start, supervision=supervision,
            kl_weight=kl_warmup(c.kl_warmup_iterations), on_epoch_start=self.guide.start_epoch,
            on_m_step=on_m_step, on_iteration=on_iteration,
        )
        m_bar.close()
        outer.close()

    def _make_trainer(self, distributed: DistributedContext | None) -> SVITrainer:
        c = self.config
        lr = scaled_learning_rate(c.learning_rate, c.batch_size, c.lr_scaling)
        if distributed is None:
            return SVITrainer(self.model, self.guide, lr, c.active_lr_decay, c.clip_norm,
                              c.max_bad_steps, regularisers=regularisers_of(c))
        # every parameter exists now (built above), as DDP needs at wrapping time
        return DistributedSVITrainer(
            self.model, self.guide, lr, c.active_lr_decay, c.clip_norm, c.max_bad_steps,
            regularisers=regularisers_of(c), context=distributed,
        )

    def _pretrain(
        self, x: Tensor, show: Progress, distributed: DistributedContext | None = None,
        supervision: dict | None = None, save: Callable[[dict], None] | None = None,
        resume: dict | None = None,
    ) -> None:
        """Autoencoder pretraining (:class:`Pretrainer`), then the mixture fitted to the codes.
        ``save(state)`` checkpoints it after every epoch and every ``checkpoint_every_steps``
        batches; ``resume`` is such a state to continue from."""
        c = self.config
        dist_kw = dict(batches=distributed.batches, wrap=distributed.wrap) if distributed else {}
        pretrainer = Pretrainer(self._pretrain_loss(), c.pretrain_lr, c.batch_size, c.seed,
                                **dist_kw)
        if resume is not None:
            pretrainer.load_state_dict(resume)
        bar = show.bar(total=c.pretrain_epochs, initial=pretrainer.epoch, desc="pretrain",
                       unit="epoch")

        def on_epoch(epoch: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.2f}")
            show.line("pretrain epoch", epoch + 1, c.pretrain_epochs, {"loss": loss})

        own_pretraining = generator_of(c).pretrain
        if own_pretraining is not None:  # e.g. the diffusion generator's two stages
            self.pretrain_losses = own_pretraining(self.model, self.guide, x, c, on_epoch, bar,
                                                   dist_kw)
        else:
            def checkpoint(state: dict) -> None:
                self.pretrain_losses = list(pretrainer.losses)
                if save is not None:
                    save(state)

            self.pretrain_losses = list(pretrainer.run(
                x, c.pretrain_epochs, on_epoch, checkpoint, c.checkpoint_every_steps))
        bar.close()
        self._init_mixture(x, supervision)

    def _pretrain_loss(self) -> torch.nn.Module:
        """What pretraining minimises: the model's pretraining loss with the guide's encoder."""
        return self.model.pretraining_loss(self.guide.encoder)

    def _autoencoder_modules(self) -> list[torch.nn.Module]:
        """What autoencoder pretraining trains: the encoder and the generator's modules."""
        return [self.guide.encoder, *self.model.generator_modules()]

    def _start_from(
        self, pretrained: VarClust | str | os.PathLike, x: Tensor, supervision: dict | None
    ) -> None:
        """Copy the autoencoder of another fit instead of pretraining; see :meth:`fit`."""
        source = (pretrained if isinstance(pretrained, VarClust)
                  else VarClust.load(pretrained, device=str(self.device)))
        source._require_fitted()
        diffs = [f"{k}: pretrained {getattr(source.config, k)!r} vs {getattr(self.config, k)!r}"
                 for k in AUTOENCODER_KEYS
                 if getattr(source.config, k) != getattr(self.config, k)]
        if tuple(source.data_shape) != tuple(x.shape[1:]):
            diffs.append(f"data shape: pretrained {tuple(source.data_shape)} vs "
                         f"{tuple(x.shape[1:])}")
        if diffs:
            raise ValueError(
                f"the pretrained fit has other networks ({'; '.join(diffs)}), so its "
                "autoencoder cannot start this fit; pretrain one with the same settings"
            )
        for mine, theirs in zip(self._autoencoder_modules(), source._autoencoder_modules()):
            mine.load_state_dict(theirs.state_dict())
        self.pretrain_losses = list(source.pretrain_losses)
        self._init_mixture(x, supervision)

    def _init_mixture(self, x: Tensor, supervision: dict | None) -> None:
        """Fit a GaussianMixture to the codes of x and start the prior (and the guide's cluster
        heads) at it; q(z | x) starts narrow beside the components."""
        c = self.config
        codes = batched_apply(lambda b: self.guide.encode(b)[0], x)
        self._check_latent_reliance(x[:512], codes[:512])
        weights, loc, scale = fit_mixture_to_codes(codes, c.num_clusters, c.seed)
        if supervision:
            weights, loc, scale = align_to_labels(weights, loc, scale, codes, **supervision)
        self.model.prior.set_mixture(weights, loc, scale)
        self.model.prior.settle_on_codes(codes, c.seed)
        self.guide.init_from_mixture(weights, loc, scale)
        self.guide.set_initial_code_scale(0.1 * float(scale.median()))

    def _check_latent_reliance(self, x: Tensor, codes: Tensor) -> None:
        """Warn when the pretrained diffusion generator ignores the codes (see
        :meth:`ConditionalDDPM.latent_reliance`): the EM/SVI fit would collapse them."""
        self.latent_reliance = self.model.latent_reliance(x, codes, self.config.seed)
        if self.latent_reliance is not None and self.latent_reliance < LATENT_RELIANCE_WARNING:
            log.warning(
                "the pretrained diffusion generator hardly uses the codes (noise loss %+.2f%% "
                "with another datum's code, below %.0f%%): the prior term will then pull the "
                "codes together and clusters merge or collapse. Pretrain longer "
                "(diffusion_pretrain_epochs or pretrain_epochs, pretrain_reliance), widen the "
                "U-Net (diffusion_width) or raise diffusion_weight.",
                100 * self.latent_reliance, 100 * LATENT_RELIANCE_WARNING)

    # ------------------------------------------------------------------ using a fit
    @torch.no_grad()
    def _predict_tensor(self, x: Tensor) -> ClusterPrediction:
        self.guide.eval()
        log_resp = batched_apply(lambda b: self.guide.cluster_logits(b, self.model.prior), x)
        resp = log_resp.exp()
        entropy = -(resp * log_resp).sum(-1)
        return ClusterPrediction(
            labels=log_resp.argmax(-1).cpu().numpy(),
            responsibilities=resp.cpu().numpy(),
            entropy=entropy.cpu().numpy(),
        )

    def predict(self, X: ArrayLike | Tensor) -> ClusterPrediction:
        """Cluster labels, responsibilities (N, K) and their entropy for data X (N, ...)."""
        self._require_fitted()
        return self._predict_tensor(self._prepare(X))

    @torch.no_grad()
    def encode(self, X: ArrayLike | Tensor) -> np.ndarray:
        """Posterior means of the codes: (N, D)."""
        self._require_fitted()
        return batched_apply(lambda b: self.guide.encode(b)[0], self._prepare(X)).cpu().numpy()

    @torch.no_grad()
    def sample(self, cluster: int, num_samples: int) -> Tensor:
        """Draw z from component ``cluster`` and decode: returns (num_samples, *data_shape)
        expected images (for Bernoulli pixels, probabilities in [0, 1]); with the ddpm
        generator, images in [0, 1] from the reverse chain (``sample_steps``, ``guidance``)."""
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

    # ------------------------------------------------------------------ notebook conveniences
    def fit_predict(self, X: ArrayLike | Tensor, y: ArrayLike | None = None, **fit: Any
                    ) -> np.ndarray:
        """``fit(X, y, **fit)``, then the cluster of each datum: (N,)."""
        return self.fit(X, y, **fit).predict(X).labels

    def predict_proba(self, X: ArrayLike | Tensor) -> np.ndarray:
        """The cluster posterior of X (N, ...): (N, K), rows sum to 1."""
        return self.predict(X).responsibilities

    def transform(self, X: ArrayLike | Tensor) -> np.ndarray:
        """The codes of X (N, ...): posterior means (N, D), as :meth:`encode`."""
        return self.encode(X)

    @property
    def mixture_(self) -> dict[str, np.ndarray]:
        """The prior's mixture: ``weights`` (K,), ``means`` (K, D), ``scales`` (K, D)."""
        self._require_fitted()
        return mixture_parameters(self.model.prior)

    def cluster_means(self, X: ArrayLike | Tensor) -> np.ndarray:
        """The mean image of each cluster over X (N, ...), weighted by the responsibilities:
        (K, *data_shape)."""
        self._require_fitted()
        x = self._prepare(X)
        return cluster_means(x, self._predict_tensor(x).responsibilities)

    def __repr__(self) -> str:
        return describe(self)

    # ------------------------------------------------------------------ persistence
    def _payload(self, phase: str, epoch: int, trainer: SVITrainer | None, metadata,
                 pretrainer: dict | None = None) -> dict:
        return {
            "varclust_version": __version__,
            "torch_version": str(torch.__version__),
            "config": self.config.to_dict(),
            "data_shape": list(self.data_shape),
            "model": self.model.state_dict(),
            "guide": self.guide.state_dict(),
            "trainer": trainer.state_dict() if trainer is not None else {},
            "phase": phase,
            "epoch": epoch,
            "history": self.history,
            "pretrain_losses": self.pretrain_losses,
            "rng": capture_rng_state(),
            "metadata": dict(metadata or {}),
            "data_fingerprint": self.data_fingerprint_,
            "segments": self.segments,
            "cluster_sizes": _as_list(self.cluster_sizes_),
            "pretrainer": pretrainer or {},
        }

    def _save(self, path: Path, phase: str, epoch: int, trainer: SVITrainer, metadata,
              pretrainer: dict | None = None) -> None:
        save_checkpoint(path, self._payload(phase, epoch, trainer, metadata, pretrainer))
        summary = {
            "config": self.config.to_dict(),
            "metadata": dict(metadata or {}),
            "pretrain_losses": self.pretrain_losses,
            # terms added to the training objective that are not part of the ELBO
            "objective_terms_outside_elbo": [t.name for t in regularisers_of(self.config)],
            "history": self.history,
            "data": self.data_fingerprint_,
            "segments": self.segments,
            "cluster_sizes": _as_list(self.cluster_sizes_),
            "latent_reliance": self.latent_reliance,
        }
        write_atomic(path.parent / METRICS_NAME, json.dumps(summary, indent=2).encode())

    def save(self, path: str | os.PathLike, X: ArrayLike | Tensor | None = None,
             y: ArrayLike | None = None, *, overwrite: bool = False) -> None:
        """Write the fitted model to ``path`` (atomically): a checkpoint file when ``path`` has
        a suffix (``model.pt``), else a run folder (``checkpoint.pt``, ``metrics.json``) that
        ``varclust evaluate`` / ``report`` read; given X (N, ...) and labels y (N,), the folder
        keeps them as ``data.npy`` / ``labels.npy`` for those commands. A folder holding
        another run is refused unless ``overwrite`` (which removes that run's files first);
        the fit's own ``out_dir`` is updated in place."""
        self._require_fitted()
        path = Path(path)
        if path.suffix and not path.is_dir():
            if X is not None or y is not None:
                raise ValueError(f"{path} is a checkpoint file; X and y are kept only in a run "
                                 "folder: save to a path without a suffix")
            save_checkpoint(path, self._payload("done", len(self.history), None, None))
            return
        with RunLock(path):
            if not holds_run(path, self.segments, self.data_fingerprint_):
                prepare_run_folder(path, resume=False, overwrite=overwrite)
            meta = {**self.metadata_, **save_arrays(path, X, y)}
            self._save(path / CHECKPOINT_NAME, "done", len(self.history), None, meta)

    def _check_compatible(self, state: dict, data_shape: tuple, path: Path) -> None:
        saved = state["config"]
        ours = self.config.to_dict()
        # keys added after a checkpoint was written take their defaults
        saved = {**FitConfig().to_dict(), **saved}
        diffs = [f"{k}: checkpoint {saved.get(k)!r} vs {ours[k]!r}" for k in STRUCTURAL_KEYS
                 if saved.get(k) != ours[k]]
        if tuple(state["data_shape"]) != tuple(data_shape):
            diffs.append(f"data shape: checkpoint {tuple(state['data_shape'])} vs {data_shape}")
        if diffs:
            raise CheckpointError(
                f"{path} was written by a different model ({'; '.join(diffs)}); "
                "use a fresh out_dir or the same settings"
            )

    def _load_modules(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.guide.load_state_dict(state["guide"])

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", **components: Any) -> VarClust:
        """Rebuild a fitted model from a checkpoint written by ``fit(out_dir=...)`` or ``save``.

        A model fitted with your own prior/guide/likelihood object needs it again:
        ``VarClust.load(path, prior=MyPrior)``. When the newest checkpoint is damaged, its
        previous good copy (``checkpoint.prev.pt``) is loaded instead, with a logged warning.
        """
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        state, path = load_latest_checkpoint(path, map_location="cpu")
        if state["phase"] == "pretrain":
            log.warning("%s stopped inside autoencoder pretraining (%d epochs done): its "
                        "clusters are not fitted yet; continue it with --resume (resume=True)",
                        path, len(state["pretrain_losses"]))
        try:
            config = FitConfig.from_dict({**state["config"], "device": device})
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{path} holds an invalid config: {err}") from None
        vc = cls(config=config)
        vc.components.update(components)
        vc.build(tuple(state["data_shape"]))
        vc._load_modules(state)
        vc.history = list(state["history"])
        vc.pretrain_losses = list(state["pretrain_losses"])
        vc.segments = list(state.get("segments", []))
        vc.data_fingerprint_ = state.get("data_fingerprint")
        vc.metadata_ = dict(state.get("metadata", {}))
        if state.get("cluster_sizes") is not None:
            vc.cluster_sizes_ = np.asarray(state["cluster_sizes"])
        return vc


def _as_list(values: np.ndarray | None) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


def _is_main(distributed: DistributedContext | None) -> bool:
    return distributed is None or distributed.is_main


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"the output path {out} is a file, not a folder; choose a "
                                 "folder path for the run (--out)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the output folder {out}: {err.strerror}") from None
    if not os.access(out, os.W_OK):
        raise PermissionError(f"the output folder {out} is not writable; choose another --out")


def _supervision(
    labels: np.ndarray | None, labelled: ArrayLike | None, num_clusters: int, num_data: int,
    device: torch.device,
) -> dict[str, Tensor]:
    """The semi-supervised arguments of the trainer: cluster (N,) long, cluster_mask (N,) bool;
    empty without ``labelled``."""
    if labelled is None:
        return {}
    mask = np.asarray(labelled)
    if mask.dtype != bool or mask.shape != (num_data,):
        raise ValueError(
            f"labelled must be a boolean array of shape ({num_data},) marking the labelled data, "
            f"got dtype {mask.dtype} and shape {mask.shape}"
        )
    if labels is None:
        raise ValueError("labelled=... needs the labels: pass y as well")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"semi-supervised labels must be integers, got dtype {labels.dtype}")
    given = labels[mask]
    if given.size and (given.min() < 0 or given.max() >= num_clusters):
        raise ValueError(
            f"labels of the labelled data must lie in [0, {num_clusters - 1}] (cluster k is "
            f"label k), got values in [{given.min()}, {given.max()}]"
        )
    cluster = torch.as_tensor(np.where(mask, labels, 0), dtype=torch.long, device=device)
    return {"cluster": cluster, "cluster_mask": torch.as_tensor(mask, device=device)}
