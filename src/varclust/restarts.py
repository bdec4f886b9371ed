"""Several fits from different seeds, the best by a label-free criterion kept (the ELBO by
default; :mod:`varclust.selection`).

A fit from scratch (no pretraining) ends in a seed-dependent local optimum: on the UCI digits
the relaxed guide's ACC under ``--recipe scratch`` ranges 0.74 to 0.91 over 25 seeds. As
scikit-learn's ``GaussianMixture(n_init=...)`` keeps its best initialisation by likelihood,
:func:`fit_restarts` fits R seeds and keeps the highest bound. The labels never enter the
choice (they only feed the per-epoch scores when given). Whether the bound picks the better
partition depends on the settings (BENCHMARKS.md, issue 12): with the cluster term at lambda 6,
mu 1 the final ELBO ranked the digits fits almost as ACC did (Spearman 0.89 over 18 fits; best
of 3 0.802 against single fits' 0.753), with today's ``--recipe scratch`` (lambda 0.5, mu 12) it
does not (Spearman 0.06 over 25 fits; best of 3 0.816 against 0.818).

The ELBO of a candidate is :func:`varclust.summaries.mean_elbo` on the fitted data, averaged
over ``draws`` passes that all start from the same random seed, so every candidate is scored
with the same noise. Candidates share every setting but ``seed``. ``select_by="agreement"``
keeps instead the candidate whose partition agrees most (mean ARI) with the others', the
medoid of the R partitions (R >= 3), ``select_by="confidence"`` the one with the lowest mean
entropy of p(c | x), ``select_by="neighbours"`` the one whose clusters keep the data's nearest
neighbours together most (:mod:`varclust.selection`); every candidate's ELBO is recorded
either way.

**Choosing part-way** (``select_after=E``): a from-scratch fit's ELBO says nothing about its
fate at the end of the KL warm-up but ranks the fits by mid-fit about as well as at the end (on
the digits with the cluster term at lambda 6, mu 1, Spearman with the final ACC 0.85 at epoch 60
of 120; BENCHMARKS.md, issue 12). So every candidate is fitted for its first E SVI epochs only,
scored there, and the chosen one alone is continued to ``config.epochs``: R E + (epochs - E)
epochs instead of R epochs. The continuation is the checkpoint resumed (exact), so the kept fit
is the very fit a single run of its seed would give; the others stay E-epoch fits (resumable).
Without an output folder the candidates are checkpointed to a temporary folder, removed at the
end.

With an output folder ``out``, candidate r is a complete run folder ``out/seed_S`` (resumable
as any run) and ``out/restarts.json`` (written atomically once all are scored, and again when the
chosen one is continued) lists each candidate's seed, folder, ELBO and the epochs it was scored
at and its score under the criterion, and names the criterion and the chosen one.
``resume=True`` of a part-way choice reuses a recorded choice and continues the chosen fit.

**The consensus instead of one candidate** (``consensus=w``, ``--consensus W``): the R fits'
cluster posteriors on X are matched and averaged into their consensus t (N, K)
(:mod:`varclust.inference.consensus`), written to ``out/consensus.npy``, and one more fit from
scratch (seed ``config.seed``, every other setting the candidates') learns it through the term
w N mean_b KL(t_b || q(c | x_b)) outside the ELBO, in ``out/consensus``; that fit is the one
kept (``Restarts.best``; ``restarts.json``'s ``kept_folder``), the criterion's choice is still
recorded. On Fashion-MNIST under ``--recipe scratch`` the single fits vary with the seed
(ACC sd 0.056 over 10 seeds) and the consensus of five is steadier (BENCHMARKS.md, issue 12);
it costs R + 1 fits. The consensus fit's checkpoint records a hash of its targets, and a
resume compares their content, not their path: a moved restarts folder resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import FitConfig
from .estimator import VarClust
from .inference.checkpoint import write_atomic
from .inference.consensus import consensus_responsibilities, write_consensus
from .inference.run_folder import RESTARTS_FILE
from .selection import SelectionCriterion, score_by_elbo, selection_criterion

__all__ = ["CONSENSUS_FOLDER", "CONSENSUS_TARGETS", "RESTARTS_FILE", "Candidate", "Restarts",
           "check_consensus", "check_select_after", "fit_restarts", "restart_folder",
           "score_by_elbo"]

#: inside a restarts folder: the consensus fit's run folder, and its targets (consensus=w)
CONSENSUS_FOLDER = "consensus"
CONSENSUS_TARGETS = "consensus.npy"


@dataclass
class Candidate:
    """One restart: its seed, its run folder (None in memory), its mean ELBO per datum, the
    SVI epochs it had when scored (the whole fit, or ``select_after``) and its score under the
    selection criterion (the ELBO again for ``select_by="elbo"``; None in records written
    before the criterion was recorded)."""

    seed: int
    folder: str | None
    elbo: float
    epochs: int
    score: float | None = None


@dataclass
class Restarts:
    """What :func:`fit_restarts` returns: every fit, its candidate record, and the choice.
    With ``select_after`` the fits not chosen stop at that epoch; the chosen one is whole.
    With ``consensus=w``, the fit of the candidates' consensus (module docstring)."""

    fits: list[VarClust]
    candidates: list[Candidate]
    chosen: int
    select_after: int | None = None
    consensus: VarClust | None = None

    @property
    def best(self) -> VarClust:
        """The fit kept: the consensus fit where there is one, else the candidate with the
        highest score under the selection criterion."""
        return self.consensus if self.consensus is not None else self.fits[self.chosen]


def restart_folder(out: Path, seed: int) -> Path:
    """The run folder of the candidate with this seed inside a restarts folder."""
    return out / f"seed_{seed}"


def fit_restarts(
    config: FitConfig, X: Any, y: Any = None, *, restarts: int, select_after: int | None = None,
    out_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
    draws: int = 3, select_by: str = "elbo", components: dict[str, Any] | None = None,
    consensus: float = 0.0, **fit_kwargs: Any,
) -> Restarts:
    """Fit ``config`` from the seeds config.seed, ..., config.seed + restarts - 1 and return
    them with their ELBO on X (N, ...) and the index of the one kept (module docstring).

    ``select_by``: the label-free criterion that keeps one, ``"elbo"`` (the highest bound),
    ``"agreement"`` (the partition that agrees most with the others'; restarts >= 3) or
    ``"confidence"`` (the lowest mean entropy of p(c | x)); :mod:`varclust.selection`.

    ``select_after``: score the candidates after this many SVI epochs (1 .. epochs - 1) and
    continue the chosen one alone; None scores the whole fits. ``y`` (N,) labels only feed the
    per-epoch scores, never the choice. ``out_dir``: a folder of candidate run folders and
    ``restarts.json``; ``resume`` continues the candidates whose folder holds a checkpoint and
    starts the others; ``overwrite`` as :meth:`VarClust.fit`. ``components``: your own
    prior, guide, likelihood or model objects, as ``VarClust(config=..., prior=...)`` takes
    them (a config naming a custom component needs them). ``consensus``: w > 0 fits the
    candidates' consensus with that weight and keeps that fit (module docstring; restarts >= 2,
    no ``select_after``). Other keyword arguments go to :meth:`VarClust.fit`.
    """
    components = dict(components or {})
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    check_select_after(config, select_after)
    check_consensus(consensus, restarts, select_after)
    criterion = selection_criterion(select_by, restarts)
    if fit_kwargs.get("distributed") is not None:
        raise ValueError("restarts run one fit after another in one process; run a "
                         "distributed fit without --restarts")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and (out / "checkpoint.pt").exists():
        raise ValueError(f"{out} holds a single run (checkpoint.pt); give restarts a new "
                         "folder, or --overwrite that run's folder elsewhere first")
    recorded = _recorded_choice(out, config, restarts, select_after, select_by) if resume else None
    if out is not None and (overwrite or (resume and recorded is None)):
        # the candidates will change: the record, derived from them, is rewritten
        (out / RESTARTS_FILE).unlink(missing_ok=True)
    scored = config if select_after is None else config.replace(epochs=select_after)
    # a part-way choice continues a checkpoint: without out, the candidates' go to a temp folder
    with (contextlib.nullcontext(out) if out is not None or (select_after is None
                                                             and not consensus)
          else tempfile.TemporaryDirectory(prefix="varclust-restarts-")) as root:
        root = None if root is None else Path(root)
        if recorded is not None:  # a part-way choice made before: its candidates as they were
            # the record names folders inside out: found wherever out now is (moved, copied);
            # a record without scores chose by the ELBO
            candidates = [Candidate(**{"score": c["elbo"], **c,
                                       "folder": str(restart_folder(out, c["seed"]))})
                          for c in recorded["candidates"]]
            fits = [VarClust.load(c.folder, device=config.device, **components)
                    for c in candidates]
        else:
            fits, candidates = [], []
            for seed in range(config.seed, config.seed + restarts):
                folder = restart_folder(root, seed) if root is not None else None
                fit = _fit_one(scored.replace(seed=seed), X, y, folder, resume, overwrite,
                               fit_kwargs, components)
                if select_after is not None and len(fit.history) != select_after:
                    raise ValueError(
                        f"{folder} holds a fit of {len(fit.history)} epochs, not the "
                        f"{select_after} that select_after scores; choose in a new folder")
                fits.append(fit)
                candidates.append(Candidate(seed, None if out is None else str(folder),
                                            score_by_elbo(fit, X, draws), len(fit.history)))
            scores = criterion.scores(fits, X, [c.elbo for c in candidates])
            for candidate, score in zip(candidates, scores, strict=True):
                candidate.score = score
        best = int(np.argmax([c.score for c in candidates]))
        _write_record(out, candidates, best, draws, select_after, criterion)
        if select_after is not None:  # the chosen one continued from its checkpoint (exact)
            seed = candidates[best].seed
            fits[best] = _fit_one(config.replace(seed=seed), X, y, restart_folder(root, seed),
                                  True, False, fit_kwargs, components)
            _write_record(out, candidates, best, draws, select_after, criterion,
                          final_elbo=score_by_elbo(fits[best], X, draws))
        consensus_fit = None
        if consensus:
            consensus_fit = _fit_consensus(config, X, y, fits, consensus, root, resume,
                                           overwrite, fit_kwargs, components)
            _write_record(out, candidates, best, draws, select_after, criterion,
                          consensus=consensus)
    return Restarts(fits, candidates, best, select_after, consensus_fit)


def check_consensus(consensus: float, restarts: int, select_after: int | None) -> None:
    """Refuse a negative consensus weight, a consensus of fewer than 2 fits, or one with a
    part-way choice (the candidates would be fits stopped part-way)."""
    if consensus < 0:
        raise ValueError(f"consensus must be >= 0 (the weight of the consensus term; 0: off), "
                         f"got {consensus}")
    if consensus and restarts < 2:
        raise ValueError(f"a consensus needs at least 2 restarts to agree on, got {restarts}")
    if consensus and select_after is not None:
        raise ValueError("consensus fits the consensus of whole fits: drop select_after "
                         "(--select-after) or consensus (--consensus)")


def _fit_consensus(config: FitConfig, X: Any, y: Any, fits: list[VarClust], weight: float,
                   root: Path, resume: bool, overwrite: bool, fit_kwargs: dict[str, Any],
                   components: dict[str, Any]) -> VarClust:
    """The consensus of ``fits`` on X written to ``root/consensus.npy`` (kept as it is when
    resuming a consensus fit that has a checkpoint: it was fitted to those targets), then one
    fit of ``config`` with the consensus term of ``weight`` into ``root/consensus``."""
    folder, targets = root / CONSENSUS_FOLDER, root / CONSENSUS_TARGETS
    resumable = resume and (folder / "checkpoint.pt").exists() and targets.exists()
    if not resumable:
        write_consensus(targets, consensus_responsibilities(
            [fit.predict(X).responsibilities for fit in fits]))
    fit = VarClust(config=config.replace(consensus_targets=weight,
                                         consensus_file=str(targets)), **components)
    return fit.fit(X, y, out_dir=folder, resume=resumable, overwrite=overwrite, **fit_kwargs)


def check_select_after(config: FitConfig, select_after: int | None) -> None:
    """Refuse a ``select_after`` that is not an SVI epoch strictly inside the fit."""
    if select_after is None:
        return
    if config.method != "svi":
        raise ValueError(f"select_after counts SVI epochs, but method={config.method!r}; "
                         "drop select_after (--select-after) to choose at the end of the fits")
    if not 1 <= select_after < config.epochs:
        raise ValueError(f"select_after must be between 1 and epochs - 1 = {config.epochs - 1},"
                         f" got {select_after}; drop it to choose at the end of the fits")


def _fit_one(config: FitConfig, X: Any, y: Any, folder: Path | None, resume: bool,
             overwrite: bool, fit_kwargs: dict[str, Any],
             components: dict[str, Any]) -> VarClust:
    """One candidate fitted into ``folder`` (resumed where it holds a checkpoint and resume)."""
    resumable = resume and folder is not None and (folder / "checkpoint.pt").exists()
    fit = VarClust(config=config, **components)  # each fit seeds itself at its start
    return fit.fit(X, y, out_dir=folder, resume=resumable, overwrite=overwrite, **fit_kwargs)


def _write_record(out: Path | None, candidates: list[Candidate], best: int, draws: int,
                  select_after: int | None, criterion: SelectionCriterion,
                  final_elbo: float | None = None, consensus: float = 0.0) -> None:
    """``out/restarts.json``, atomically: the candidates, the choice and how it was made; the
    folders relative to ``out`` (``seed_S``), so the record holds wherever ``out`` is."""
    if out is None:
        return
    when = "at the end of each fit" if select_after is None else f"after {select_after} epochs"
    inside = [{**asdict(c), "folder": Path(c.folder).name} for c in candidates]
    record = {"chosen_seed": candidates[best].seed, "chosen_folder": inside[best]["folder"],
              "kept_folder": CONSENSUS_FOLDER if consensus else inside[best]["folder"],
              "select_by": criterion.name,
              "criterion": f"{criterion.describe(draws)}, {when}",
              "select_after": select_after,
              "candidates": inside}
    if select_after is not None:
        record["chosen_continued"] = final_elbo is not None
        record["chosen_final_elbo"] = final_elbo
    if consensus:
        record["consensus"] = {"weight": consensus, "targets": CONSENSUS_TARGETS,
                               "folder": CONSENSUS_FOLDER,
                               "of_seeds": [c.seed for c in candidates]}
    write_atomic(out / RESTARTS_FILE, json.dumps(record, indent=2).encode())


def _recorded_choice(out: Path | None, config: FitConfig, restarts: int,
                     select_after: int | None, select_by: str) -> dict | None:
    """The record of a part-way choice among these very seeds by this criterion, or None
    (choose anew). Records written before the criterion was recorded chose by the ELBO."""
    if out is None or select_after is None or not (out / RESTARTS_FILE).exists():
        return None
    record = json.loads((out / RESTARTS_FILE).read_text())
    seeds = [c["seed"] for c in record.get("candidates", [])]
    same = (record.get("select_after") == select_after
            and record.get("select_by", "elbo") == select_by
            and seeds == list(range(config.seed, config.seed + restarts)))
    return record if same else None
