"""Stochastic variational inference with the cluster enumerated in parallel.

The ELBO is Pyro's ``TraceEnum_ELBO`` turned into a ``torch.nn.Module`` (``elbo(model, guide)``),
optimised with plain ``torch.optim``: parameters, optimiser state and checkpoints are ordinary
PyTorch, as in Pyro's ``examples/svi_torch.py``.

A step whose loss or gradient is not finite is skipped and counted (:mod:`.guards`); the trainer
also records where it is inside an epoch, so a checkpoint taken mid-epoch resumes exactly.

The ELBO is :class:`~varclust.inference.elbo.SyncFreeTraceEnum_ELBO`: the same estimator without
Pyro's two per-step NaN checks (host syncs on a GPU), which the finiteness guard replaces.
The hooks ``wrap_elbo``, ``batches`` and ``reduce_epoch_total`` are what data-parallel training
(:mod:`.distributed`) overrides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor

from .batching import epoch_batches
from .elbo import SyncFreeTraceEnum_ELBO
from .guards import BadStepCounter, NonFiniteTrainingError, describe_bad_step

__all__ = ["EpochPosition", "SVITrainer"]

#: how torch.distributions' argument validation reports NaN/inf (or out-of-support) parameters
INVALID_VALUES = "but found invalid values"


class EpochPosition:
    """Where training is inside an epoch: ``step`` batches of ``epoch`` done, their summed loss
    (a 0-dim tensor on the training device), how many of them counted and how many were skipped.
    """

    def __init__(self) -> None:
        self.start(0)

    def start(self, epoch: int) -> None:
        self.epoch, self.step, self.batches, self.skipped = epoch, 0, 0, 0
        self.loss_sum: Tensor | float = 0.0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "batches": self.batches,
                "skipped": self.skipped, "loss_sum": torch.as_tensor(self.loss_sum).cpu()}

    def load_state_dict(self, state: dict, device: torch.device | None = None) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batches, self.skipped = int(state["batches"]), int(state["skipped"])
        self.loss_sum = torch.as_tensor(state["loss_sum"]).to(device)


class SVITrainer:
    """One ELBO, one Adam optimiser, an exponential learning-rate schedule, gradient clipping.

    Args:
        model, guide: PyroModules with the signature ``(x, indices, num_data)``.
        learning_rate: Adam's step size.
        lr_decay: the learning rate is multiplied by this after every epoch from
            ``decay_from`` on: epoch e runs at learning_rate * lr_decay^max(0, e - decay_from).
        clip_norm: gradients are clipped to this global norm.
        max_bad_steps: this many steps in a row with a non-finite loss or gradient stop the run
            with :class:`~.guards.NonFiniteTrainingError`; fewer are skipped and counted.
        regularisers: terms outside the ELBO (:mod:`.regularisers`), each with
            ``loss(guide, prior, x, indices, num_data, log_q)`` where log_q (B, K) is the batch's
            log q(c | x), computed once for the terms that read it (``needs_cluster_posterior``;
            None for the others); added to the loss that is minimised,
            never to the ELBO that :meth:`step` returns; a term joins once it has
            ``started`` (:meth:`start_terms`). Their sum is multiplied by
            :attr:`terms_weight` (1 unless a warm-up sets it, ``FitConfig.warm_up_terms``).
    """

    def __init__(
        self,
        model: PyroModule,
        guide: PyroModule,
        learning_rate: float,
        lr_decay: float = 1.0,
        clip_norm: float = 10.0,
        max_bad_steps: int = 10,
        regularisers: Sequence = (),
        decay_from: int = 0,
    ) -> None:
        self.model = model
        self.decay_from = decay_from
        self.guide = guide
        self.regularisers = tuple(regularisers)
        self.elbo = self.wrap_elbo(SyncFreeTraceEnum_ELBO(max_plate_nesting=1)(model, guide))
        self.clip_norm = clip_norm
        params = list(self.elbo.parameters())
        # the fused CUDA kernel updates every parameter in one launch
        fused = bool(params) and all(p.is_cuda for p in params)
        self.optimizer = torch.optim.Adam(params, lr=learning_rate, fused=fused or None)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=lr_decay)
        self.bad_steps = BadStepCounter(max_bad_steps)
        self.position = EpochPosition()
        #: the factor on the terms outside the ELBO in the steps to come (the KL warm-up's beta
        #: when they warm up with it; set by the loop that runs the epochs)
        self.terms_weight = 1.0
        #: steps skipped in the last finished epoch
        self.last_epoch_skipped = 0
        self._last_bad = ""  # what the last bad step showed

    def start_terms(self, data: Tensor, epoch: int = 0) -> None:
        """As epoch ``epoch`` starts on ``data`` (N, ...), let each term outside the ELBO that
        acts from this epoch or an earlier one build what it needs from the guide
        (:meth:`~.objective_term.TermOutsideELBO.start`); a term already started, or restored
        from a checkpoint, keeps its state."""
        for term in self.regularisers:
            if epoch >= term.start_epoch and not term.started:
                term.start(self.guide, data)

    def sync_parameters(self) -> None:
        """Make every process hold the same parameters after a change outside the optimiser
        (a data-parallel trainer broadcasts rank 0's). One process: nothing to do."""

    def step(
        self, x: Tensor, indices: Tensor, num_data: int, **labels: Tensor
    ) -> Tensor | None:
        """One gradient step on a mini-batch; returns the detached loss (-ELBO scaled to N), or
        None when the loss or the gradient was not finite and the step was skipped (parameters
        and optimiser state untouched). The finiteness test is the step's one host sync.

        ``labels``: in semi-supervised fits, ``cluster`` (B,) and ``cluster_mask`` (B,) for
        the batch, passed on to model and guide.
        """
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss = self.elbo(x, indices, num_data, **labels)
        except ValueError as err:  # a distribution built from NaN/inf (argument validation)
            if INVALID_VALUES not in str(err):
                raise
            self._last_bad = str(err).split(":\n")[0]
            return None
        objective = loss
        terms = [term for term in self.regularisers if term.started]
        if terms:
            prior = self.model.prior
            needed = any(term.needs_cluster_posterior for term in terms)
            log_q = self.guide.cluster_logits(x, prior) if needed else None
            for term in terms:  # one at a time: the summation order of before
                objective = objective + self.terms_weight * term.loss(
                    self.guide, prior, x, indices, num_data, log_q)
        objective.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.elbo.parameters(), self.clip_norm)
        if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            loss_value, norm_value = float(loss.detach()), float(grad_norm)
            self._last_bad = f"loss {loss_value:.4g}, gradient norm {norm_value:.4g}"
            return None
        self.optimizer.step()
        return loss.detach()

    def epoch(
        self,
        data: Tensor,
        batch_size: int,
        seed: int,
        epoch: int,
        on_step: Callable[[int, Tensor], None] | None = None,
        cluster: Tensor | None = None,
        cluster_mask: Tensor | None = None,
    ) -> float:
        """One pass over ``data`` (N, ...) in shuffled mini-batches, then a scheduler step
        (from epoch ``decay_from`` on).

        ``cluster`` (N,) and ``cluster_mask`` (N,) bool: semi-supervised labels, observed where
        the mask is true.
        When :attr:`position` says part of this epoch is done (a resumed mid-epoch checkpoint),
        those batches are passed over; the batch order depends only on (seed, epoch).
        ``on_step(i, loss)`` runs after batch i (loss NaN for a skipped step), once
        :attr:`position` counts it.

        Returns the mean ELBO per datum over the epoch's good batches (NaN if there were none).

        Raises:
            NonFiniteTrainingError: ``max_bad_steps`` bad steps in a row; the message names the
                epoch, the batch and the sites whose log-probability is not finite.
        """
        num_data = len(data)
        pos = self.position
        if pos.epoch != epoch:
            pos.start(epoch)
        batches = list(self.batches(num_data, batch_size, seed, epoch, data.device))
        # the data were validated before training: Pyro's per-step argument checks are skipped
        with pyro.validation_enabled(False):
            self._run_batches(data, batches, epoch, on_step, cluster, cluster_mask)
        if epoch >= self.decay_from:
            self.scheduler.step()
        loss_sum, good = self.reduce_epoch_total(
            torch.as_tensor(pos.loss_sum, device=data.device), pos.batches)
        elbo = -float(loss_sum) / (good * num_data) if good else float("nan")
        self.last_epoch_skipped = pos.skipped
        pos.start(epoch + 1)
        return elbo

    def _run_batches(self, data: Tensor, batches: list[Tensor], epoch: int,
                     on_step: Callable[[int, Tensor], None] | None,
                     cluster: Tensor | None = None, cluster_mask: Tensor | None = None) -> None:
        num_data = len(data)
        pos = self.position
        for i in range(pos.step, len(batches)):
            self.start_step(epoch, i)
            idx = batches[i]
            x = data[idx]
            labels = {} if cluster_mask is None else {
                "cluster": cluster[idx], "cluster_mask": cluster_mask[idx]}
            loss = self.step(x, idx, num_data, **labels)
            if loss is None:
                self.bad_steps.bad()
                pos.skipped += 1
                if self.bad_steps.should_stop:
                    self._stop(x, idx, num_data, epoch, i, len(batches))
                loss = torch.full((), float("nan"))
            else:
                self.bad_steps.good()
                pos.loss_sum = pos.loss_sum + loss
                pos.batches += 1
            pos.step = i + 1
            if on_step is not None:
                on_step(i, loss)

    # hooks that data-parallel training (inference/distributed.py) overrides
    def start_step(self, epoch: int, step: int) -> None:
        """Before batch ``step`` of ``epoch``. Default: nothing (one process draws its noise
        from the RNG stream that its checkpoints capture and restore)."""

    def wrap_elbo(self, elbo: torch.nn.Module) -> torch.nn.Module:
        """The module whose call gives the loss (here the ELBO module itself)."""
        return elbo

    def batches(
        self, num_data: int, batch_size: int, seed: int, epoch: int, device: torch.device
    ) -> Iterator[Tensor]:
        """The index batches of one epoch."""
        return epoch_batches(num_data, batch_size, seed, epoch, device)

    def reduce_epoch_total(self, total: Tensor, batches: int) -> tuple[Tensor, int]:
        """The epoch's summed loss and good-batch count (over all processes when distributed)."""
        return total, batches

    def _stop(
        self, x: Tensor, idx: Tensor, num_data: int, epoch: int, i: int, num_batches: int
    ) -> None:
        why = describe_bad_step(self.model, self.guide, self.elbo, x, idx, num_data)
        raise NonFiniteTrainingError(
            f"training stopped at epoch {epoch + 1}, batch {i + 1} of {num_batches}: "
            f"{self.bad_steps.in_a_row} steps in a row had a non-finite loss or gradient "
            f"({self.bad_steps.total} skipped in all); the last: {self._last_bad}. On that batch: "
            f"{why}. Lower the learning rate, check the data, or raise max_bad_steps; the last "
            "checkpoint holds the last good parameters"
        )

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "position": self.position.state_dict(),
            "bad_steps": self.bad_steps.state_dict(),
            "terms": [term.state_dict() for term in self.regularisers],
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "position" in state:  # written by varclust >= the mid-epoch checkpoints
            device = next(iter(self.elbo.parameters())).device
            self.position.load_state_dict(state["position"], device)
            self.bad_steps.load_state_dict(state["bad_steps"])
        for term, term_state in zip(self.regularisers, state.get("terms", ()), strict=False):
            term.load_state_dict(term_state)
