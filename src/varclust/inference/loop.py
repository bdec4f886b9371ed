"""The fit loop: from a built model and guide to a fitted one.

:func:`run` resumes a checkpoint or starts warm (:mod:`.warm_start`), then runs SVI epochs
or EM iterations (:class:`FitLoop`); after every epoch it refits the clusters of a prior that
fits them to the codes, records the epoch (ELBO, seconds, the components' numbers, the collapse
guard's record, scores against labels) in ``fit.history`` and tells the callbacks
(:mod:`.callbacks`: progress, checkpoints).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import FitConfig
from ..metrics import clustering_scores
from ..modes import evaluating
from . import warm_start
from .callbacks import Callback, Checkpointing, EMProgress, SVIProgress
from .checkpoint import restore_rng_state
from .collapse import cluster_usage, collapse_warning
from .distributed import DistributedContext, DistributedSVITrainer
from .em import fit_em, kl_warmup, make_e_step
from .kl_warmup import KLScale, kl_warmup_weight
from .persistence import CHECKPOINT_NAME, FitRecord, restore_record, save_fit
from .prediction import encode_codes, predict_clusters
from .progress import Progress
from .regularisers import cluster_information, regularisers_of, terms_outside_elbo
from .revival import revive_dead_clusters
from .run_folder import segment_record
from .speed import scaled_learning_rate
from .svi import SVITrainer

__all__ = ["FitLoop", "make_trainer", "run"]

log = logging.getLogger("varclust")


def make_trainer(model: nn.Module, guide: nn.Module, config: FitConfig,
                 distributed: DistributedContext | None = None,
                 data: Tensor | None = None) -> SVITrainer:
    """The SVI trainer of the config's learning rate (scaled to the batch), decay, clipping,
    guard and terms outside the ELBO (for a fit to ``data`` (N, ...), which the neighbour
    term needs); data-parallel with ``distributed``."""
    c = config
    lr = scaled_learning_rate(c.learning_rate, c.batch_size, c.lr_scaling)
    terms = regularisers_of(c, data)
    if distributed is None:
        return SVITrainer(model, guide, lr, c.active_lr_decay, c.clip_norm, c.max_bad_steps,
                          regularisers=terms, decay_from=c.active_lr_decay_from)
    # every parameter exists now (built before), as DDP needs at wrapping time
    return DistributedSVITrainer(
        model, guide, lr, c.active_lr_decay, c.clip_norm, c.max_bad_steps,
        regularisers=terms, decay_from=c.active_lr_decay_from, context=distributed,
    )


class FitLoop:
    """SVI epochs or EM iterations of ``fit`` (its model, guide, config and history) on data
    x (N, ...), with labels (N,) for per-epoch scores and the semi-supervised ``supervision``
    (cluster (N,), cluster_mask (N,))."""

    def __init__(self, fit: FitRecord, trainer: SVITrainer, x: Tensor,
                 labels: np.ndarray | None, supervision: dict[str, Tensor]) -> None:
        self.fit, self.trainer, self.x, self.labels = fit, trainer, x, labels
        self.supervision = supervision
        self.config = fit.config

    def steps_per_epoch(self) -> int:
        return -(-len(self.x) // self.config.batch_size)

    def run_svi(self, start_epoch: int, callbacks: list[Callback]) -> None:
        """SVI epochs ``start_epoch`` .. ``epochs`` - 1 (KL warm-up, the guide's epoch hook)."""
        c, fit, x = self.config, self.fit, self.x
        epoch = start_epoch

        def on_step(i: int, loss: Tensor) -> None:
            for callback in callbacks:
                callback.on_step(epoch, i, loss)

        if c.epochs == 0 or start_epoch >= c.epochs:
            self.refit_clusters()
        for epoch in range(start_epoch, c.epochs):
            t0 = time.perf_counter()
            fit.model.train()
            fit.guide.train()
            fit.guide.start_epoch(epoch)  # e.g. the relaxed guide's temperature
            self.trainer.start_terms(x, epoch)  # e.g. UMAP's graph from umap_graph_epoch on
            beta = kl_warmup_weight(epoch, c.kl_warmup_epochs)
            self.trainer.terms_weight = beta if c.warm_up_terms else 1.0
            with KLScale(beta):
                elbo = self.trainer.epoch(x, c.batch_size, c.seed, epoch, on_step,
                                          **self.supervision)
            fit.model.prior.end_epoch(self.codes, c.seed)
            record: dict[str, float] = {
                "epoch": epoch + 1,
                "elbo": elbo,
                "seconds": time.perf_counter() - t0,
                "skipped_steps": self.trainer.last_epoch_skipped,
            }
            record.update(self.restart_mixture(epoch))
            record.update(self.revive_clusters(epoch, c.kl_warmup_epochs))
            record.update(self.component_summary())
            if c.kl_warmup_epochs:
                record["kl_weight"] = beta
            record.update(self.epoch_scores())
            fit.history.append(record)
            for callback in callbacks:
                callback.on_epoch(epoch + 1, record)
        for callback in callbacks:
            callback.close()

    def run_em(self, start: int, callbacks: list[Callback]) -> None:
        """EM iterations (M-step epochs with the prior frozen, labels of a semi-supervised fit
        included, then the E-step ``e_step``), each recorded like an SVI epoch."""
        c, fit = self.config, self.fit

        def on_m_step(i: int, loss: Tensor) -> None:
            for callback in callbacks:
                callback.on_step(-1, i, loss)

        def on_iteration(record: dict[str, Any]) -> None:
            record["skipped_steps"] = self.trainer.last_epoch_skipped
            # the M-step's KL weight reaches 1 at iteration W (kl_warmup): W + 1 in these units
            record.update(self.revive_clusters(record["iteration"] - 1,
                                               c.kl_warmup_iterations + 1))
            record.update(self.component_summary())
            record.update(self.epoch_scores())
            fit.history.append(record)
            for callback in callbacks:
                callback.on_epoch(record["iteration"], record)

        e_step = make_e_step(c.e_step, c.e_step_iterations, c.e_step_reg_covar,
                             c.e_step_min_weight)
        fit_em(
            fit.model, fit.guide, self.x, self.trainer, iterations=c.em_iterations,
            m_step_epochs=c.m_step_epochs, batch_size=c.batch_size, seed=c.seed,
            e_step=e_step, start_iteration=start, supervision=self.supervision,
            kl_weight=kl_warmup(c.kl_warmup_iterations), warm_up_terms=c.warm_up_terms,
            on_epoch_start=fit.guide.start_epoch,
            on_m_step=on_m_step, on_iteration=on_iteration,
        )
        for callback in callbacks:
            callback.close()

    def epoch_scores(self) -> dict[str, float]:
        """The collapse guard's record (clusters_used, largest_cluster; see
        :mod:`varclust.inference.collapse`), I_q(c; x) when terms outside the ELBO act on it,
        ACC/NMI/ARI (clusters matched to classes) when labels are known, and for a labelled fit
        ``labelled_agreement``: the share of the labelled data in the cluster of their label,
        unmatched (cluster k = label k); keeps ``fit.cluster_sizes_`` (K,)."""
        k = self.config.num_clusters
        pred = predict_clusters(self.fit.model, self.fit.guide, self.x)
        assigned = pred.labels
        self.fit.cluster_sizes_ = np.bincount(assigned, minlength=k)
        out = cluster_usage(assigned, k)
        if terms_outside_elbo(self.config):  # what the terms outside the ELBO push up, all data
            out["cluster_information_nats"] = float(cluster_information(
                torch.as_tensor(pred.responsibilities).clamp_min(1e-30).log()))
        if self.labels is not None:
            out.update(clustering_scores(self.labels, assigned))
        given = self.supervision.get("cluster_mask")
        if given is not None and bool(given.any()):  # cluster k = label k, unmatched
            given = given.cpu().numpy()
            label = self.supervision["cluster"].cpu().numpy()
            out["labelled_agreement"] = float((assigned[given] == label[given]).mean())
        return out

    def restart_mixture(self, epoch: int) -> dict[str, float]:
        """With ``mixture_restart_epoch`` E > 0: after epoch ``epoch`` (0-based) = E - 1, the
        prior and the guide's cluster heads start again at a mixture fitted to the codes
        (:func:`.warm_start.restart_mixture`); the record's ``mixture_restarted`` is 1 there,
        0 at the other epochs."""
        restart = self.config.mixture_restart_epoch
        if not restart:
            return {}
        if epoch + 1 != restart:
            return {"mixture_restarted": 0}
        warm_start.restart_mixture(self.fit, self.x, self.supervision)
        self.trainer.sync_parameters()  # every rank starts again from rank 0's mixture
        return {"mixture_restarted": 1}

    def revive_clusters(self, epoch: int, warmup: int) -> dict[str, float]:
        """With ``revive_clusters`` f > 0: split the largest cluster into each one holding less
        than f of the data (:mod:`.revival`), from the last epoch (EM: iteration) of the KL
        warm-up on, ``epoch`` (0-based) >= ``warmup`` - 1 (before it the codes are not yet
        shaped by the prior, and splits of them are arbitrary: on the digits from scratch
        they fixed a clustering of ACC 0.6); the record's ``revived_clusters`` counts them."""
        f = self.config.revive_clusters
        if not f:
            return {}
        if epoch + 1 < warmup:
            return {"revived_clusters": 0}
        splits = revive_dead_clusters(self.fit.model, self.fit.guide, self.x, f,
                                      self.config.seed * 1_000_003 + epoch)
        self.trainer.sync_parameters()  # ranks whose rounding split otherwise follow rank 0
        return {"revived_clusters": len(splits)}

    def codes(self) -> tuple[Tensor, Tensor]:
        """q(z | x) of the data set under the guide (in eval mode meanwhile; its mode is
        restored after): its loc and scale, each (N, D)."""
        with evaluating(self.fit.guide):
            return encode_codes(self.fit.guide, self.x)

    def refit_clusters(self) -> None:
        """A fit without SVI epochs (or resumed after its last): a prior whose clusters are
        fitted to the codes (the standard normal) fits them; nothing else changes."""
        prior = self.fit.model.prior
        if prior.fits_clusters_to_codes:
            prior.fit_to_codes(self.codes()[0], self.config.seed)

    def component_summary(self) -> dict[str, float]:
        """Per-epoch facts of the components: the relaxed guide's temperature, the clusters a
        Bayesian prior keeps in use, the DP's concentration."""
        out: dict[str, float] = dict(self.fit.guide.epoch_summary())
        out.update(self.fit.model.prior.epoch_summary())
        return out


def warn_if_collapsed(fit: FitRecord) -> None:
    """Log the collapse guard's warning when the last epoch's clusters collapsed; kept as
    ``fit.collapse_warning_`` (None when the fit did not collapse)."""
    last = fit.history[-1] if fit.history else {}
    prunes = fit.model.prior.prunes_clusters
    fit.collapse_warning_ = (collapse_warning(last, fit.config.num_clusters, prunes)
                             if "clusters_used" in last else None)
    if fit.collapse_warning_:
        log.warning(fit.collapse_warning_)


def run(
    fit: FitRecord, x: Tensor, labels: np.ndarray | None, supervision: dict[str, Tensor], *,
    state: dict | None, out: Path | None, show: Progress,
    distributed: DistributedContext | None = None,
    pretrained: Callable[[], FitRecord] | None = None,
    own_pretraining: Callable[..., list[float]] | None = None,
) -> None:
    """Fit the built ``fit`` to data x (N, ...) on its device.

    ``state``: a checkpoint to resume (mid-pretraining included); else ``pretrained()`` gives
    the fit whose autoencoder starts this one, or the autoencoder is pretrained
    (``own_pretraining``: the generator's own, :mod:`.warm_start`). With ``out``, checkpoints
    go there (by the main process of a distributed fit).
    """
    c = fit.config
    if (c.umap_graph and not c.umap_graph_epoch and state is None and pretrained is None
            and c.pretrain_epochs == 0):
        raise ValueError("umap_graph keeps UMAP's graph of the codes at the start of SVI, and an "
                         "untrained encoder's codes have no neighbourhoods worth keeping: set "
                         "pretrain_epochs > 0, start from a pretrained fit, build the graph "
                         "later (umap_graph_epoch >= 1), or set umap_graph=0")
    trainer = make_trainer(fit.model, fit.guide, c, distributed, data=x)
    main = distributed is None or distributed.is_main
    path = out / CHECKPOINT_NAME if out is not None and main else None
    start_epoch = 0

    def save(phase: str, epoch: int, pretrainer: dict | None = None) -> None:
        if path is not None:
            save_fit(fit, path, phase, epoch, trainer, fit.metadata_, pretrainer)

    def pretrain(resume: dict | None = None) -> None:
        warm_start.pretrain(fit, x, show, own_pretraining, distributed, supervision,
                            lambda pretrainer: save("pretrain", 0, pretrainer), resume)

    if state is not None:
        restore_record(fit, state)
        start_epoch = int(state["epoch"])
        fit.segments.append(segment_record(c.to_dict(), start_epoch, state["phase"]))
        if state["phase"] == "train":
            trainer.load_state_dict(state["trainer"])
        restore_rng_state(state["rng"])
        if state["phase"] == "pretrain":  # stopped inside pretraining: finish it
            pretrain(state["pretrainer"])
    else:
        fit.history, fit.pretrain_losses = [], []
        fit.segments = [segment_record(c.to_dict(), 0, "new")]
        if pretrained is not None:
            warm_start.start_from(fit, pretrained(), x, supervision)
        elif c.pretrain_epochs > 0:
            pretrain()
        elif c.fit_mixture_at_start:  # from scratch: the mixture at the untrained codes
            warm_start.init_mixture(fit, x, supervision)
    trainer.start_terms(x, start_epoch)  # e.g. UMAP's graph of the codes as training starts
    if state is None or state["phase"] == "pretrain":
        save("init", 0)
    trainer.sync_parameters()  # pretraining on a GPU is not bit-reproducible over ranks

    loop = FitLoop(fit, trainer, x, labels, supervision)
    if c.method == "em":
        progress: Callback = EMProgress(show, c.em_iterations, start_epoch,
                                        c.m_step_epochs * loop.steps_per_epoch())
        saving = [Checkpointing(lambda epoch: save("train", epoch))] if path else []
        loop.run_em(start_epoch, [progress, *saving])
    else:
        progress = SVIProgress(show, c.epochs, loop.steps_per_epoch(), start_epoch, len(x))
        saving = [Checkpointing(lambda epoch: save("train", epoch), c.checkpoint_every_steps,
                                loop.steps_per_epoch())] if path else []
        loop.run_svi(start_epoch, [progress, *saving])
    warn_if_collapsed(fit)
