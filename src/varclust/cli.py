"""The ``varclust`` command: fit, evaluate and sample from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from ._version import __version__
from .analysis.plots import plot_cluster_samples, plot_training_curve
from .analysis.run_data import load_run
from .cli_config import (
    DATASET_DEFAULTS,
    add_config_flags,
    config_from_args,
    with_resumed_settings,
)
from .cli_support import (
    HelpFormatter,
    add_data_flags,
    data_arrays,
    fit_data,
    heldout_array,
    holding_run,
    show_defaults,
)
from .config import SCRATCH, FitConfig
from .data.datasets import DATASETS, DatasetNotFoundError
from .estimator import VarClust
from .inference.checkpoint import CheckpointError, write_atomic
from .inference.distributed import init_distributed, shutdown_distributed
from .inference.run_folder import RunLock
from .metrics import clustering_scores
from .recipes import RECIPES
from .restarts import (
    CONSENSUS_FOLDER,
    RESTARTS_FILE,
    check_consensus,
    check_select_after,
    fit_restarts,
    restart_folder,
)
from .selection import SELECTION_CRITERIA, SelectionCriterion, selection_criterion

__all__ = ["DATASET_DEFAULTS", "RECIPES", "build_parser", "config_from_args", "main"]

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="varclust", description="Deep clustering with Gaussian-mixture VAEs in Pyro.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"varclust {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **kw: _add_parser(  # type: ignore[method-assign]
        *a, allow_abbrev=False, formatter_class=HelpFormatter, **kw)

    fit = sub.add_parser("fit", help="fit a model to a data set and write a run folder")
    fit.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    fit.add_argument("--data", type=Path,
                     help="fit your own array instead of --dataset: a .npy file of floats in "
                     "[0, 1], shape (N, D), (N, H, W) or (N, C, H, W)")
    fit.add_argument("--labels", type=Path,
                     help="with --data: a .npy file of N integer labels, for the scores")
    fit.add_argument("--labelled-fraction", type=float, default=0.0,
                     help="semi-supervised: give the model this fraction of the labels "
                     "(drawn with --seed)")
    fit.add_argument("--lr-decay", type=float, default=None,
                     help="the learning rate's factor per epoch (per M-step epoch in EM); "
                     "default 0.97 for svi, 1 (constant, as ClusterDDPM) for em")
    fit.add_argument("--out", required=True, type=Path, help="run folder")
    fit.add_argument("--resume", action="store_true",
                     help="continue from --out's checkpoint; settings not typed are the run's")
    fit.add_argument("--overwrite", action="store_true",
                     help="replace the run in --out, removing every file of the old run")
    fit.add_argument("--pretrained", type=Path, default=None,
                     help="start from this run folder's autoencoder instead of pretraining "
                     "(same networks; the prior, guide and K may differ)")
    fit.add_argument("--restarts", type=int, default=1,
                     help="fit from the seeds --seed .. --seed + R - 1, each into OUT/seed_S, "
                     "and keep the best by --select-by (OUT/restarts.json); the labels "
                     "never enter the choice")
    fit.add_argument("--select-by", choices=tuple(SELECTION_CRITERIA), default="elbo",
                     help="with --restarts: keep the highest ELBO (elbo), the fit whose "
                     "clusters agree most with the other fits' (agreement: mean adjusted Rand "
                     "index, R >= 3), the most decided assignments (confidence: lowest mean "
                     "entropy of p(c|x)), or the clusters that keep the data's 10 nearest "
                     "neighbours together most (neighbours: chance-corrected)")
    fit.add_argument("--select-after", type=int, default=None, metavar="E",
                     help="with --restarts: score the fits after E SVI epochs and continue "
                     "only the best to --epochs (R x E + epochs - E epochs in all)")
    fit.add_argument("--consensus", type=float, default=0.0, metavar="W",
                     help="with --restarts R: fit once more, from scratch, to the R fits' "
                     "consensus (OUT/consensus.npy) through a term of weight W outside the "
                     "ELBO, into OUT/consensus, and keep that fit (R + 1 fits)")
    fit.add_argument("--data-root", type=Path, help="torchvision data folder")
    fit.add_argument("--download", action="store_true", help="download a missing data set")
    fit.add_argument("--quiet", action="store_true",
                     help="no progress bars; each epoch's numbers as one plain line")
    fit.add_argument("--distributed", action="store_true",
                     help="data-parallel over the processes that torchrun starts, e.g. "
                     "`torchrun --nproc_per_node 2 -m varclust.cli fit ... --distributed`; "
                     "--batch-size is the global batch")
    fit.add_argument("--config", type=Path,
                     help="JSON object of FitConfig settings; flags typed on the command line "
                     "override it")
    groups = add_config_flags(fit)  # one flag per FitConfig field
    groups[SCRATCH].add_argument(
        "--recipe", choices=sorted(RECIPES), default="pretrained",
        help="pretrained: autoencoder pretraining, then the mixture fitted to the codes ("
        + RECIPES["pretrained"].describe() + "); scratch: end to end from a random start ("
        + RECIPES["scratch"].describe() + ")")

    evaluate = sub.add_parser("evaluate", help="score a run's clusters against the labels")
    evaluate.add_argument("run", type=Path, help="run folder written by `varclust fit`")
    evaluate.add_argument("--data-root", type=Path)
    add_data_flags(evaluate)

    sample = sub.add_parser("sample", help="draw images per cluster from a fitted run")
    sample.add_argument("run", type=Path, help="run folder written by `varclust fit`")
    sample.add_argument("--cluster", type=int, help="only this cluster (default: every cluster)")
    sample.add_argument("--num", type=int, default=8, help="images per cluster")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", type=Path, help="PNG path (default RUN/samples_cluster{K}.png, "
                        "or RUN/samples_seed{SEED}.png for every cluster)")
    sample.add_argument("--steps", type=int,
                        help="diffusion-generator runs: reverse steps (0: all T, ancestral; "
                        "default: the run's)")

    report = sub.add_parser("report", help="write a run's figures as PNG and an HTML page")
    report.add_argument("run", type=Path, help="run folder written by `varclust fit`")
    report.add_argument("--out", type=Path, help="report folder (default RUN/report)")
    report.add_argument("--compare", type=Path, nargs="+", default=[], metavar="RUN",
                        help="other run folders on the same data set to rank: PSIS-LOO when "
                        "every run has a posterior over its globals, else importance-weighted "
                        "log-likelihood per datum")
    report.add_argument("--heldout", type=Path, metavar="NPY",
                        help="with --compare, for runs with point estimates: a .npy of data "
                        "(M, ...) in [0, 1] none of the runs was trained on; they are then "
                        "ranked by their held-out importance-weighted log-likelihood")
    report.add_argument("--num-data", type=int, default=1000,
                        help="data points drawn at random for the figures")
    report.add_argument("--num-samples", type=int, default=50,
                        help="posterior draws per datum in the InferenceData")
    report.add_argument("--importance-samples", type=int, default=16,
                        help="guide proposals behind each log-likelihood estimate")
    report.add_argument("--latent-map", choices=("pca", "tsne"), default="pca")
    report.add_argument("--data-root", type=Path)
    add_data_flags(report)
    report.add_argument("--seed", type=int, default=0)
    for command in (fit, evaluate, sample, report):
        show_defaults(command)
    return parser


def _write_figures(vc: VarClust, out: Path, num: int = 8) -> None:
    grids = [vc.sample(k, num) for k in range(vc.config.num_clusters)]
    plot_cluster_samples(grids, out / "samples.png", title="samples per cluster")
    plot_training_curve(vc.history, out / "loss.png", vc.pretrain_losses)


def cmd_fit(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.restarts < 1:
        raise ValueError(f"--restarts must be at least 1, got {args.restarts}")
    if args.select_after is not None and args.restarts < 2:
        raise ValueError("--select-after chooses among restarts; give --restarts R (R >= 2) "
                         "or drop --select-after")
    if args.select_by != "elbo" and args.restarts < 2:
        fewest = max(2, SELECTION_CRITERIA[args.select_by].min_candidates)
        raise ValueError(f"--select-by chooses among restarts; give --restarts R "
                         f"(R >= {fewest}) or drop --select-by")
    if args.consensus and args.restarts < 2:
        raise ValueError("--consensus fits the consensus of restarts; give --restarts R "
                         "(R >= 2) or drop --consensus")
    if args.restarts > 1:
        if args.distributed:
            raise ValueError("--restarts runs its fits one after another in one process; "
                             "drop --distributed or --restarts")
        if args.resume:
            # the first candidate's settings; but a part-way choice's candidates stop at
            # epoch E, so the fit's length is the command's
            resumed = with_resumed_settings(config, restart_folder(args.out, config.seed),
                                            args)
            config = (resumed if args.select_after is None
                      else resumed.replace(epochs=config.epochs))
        check_select_after(config, args.select_after)  # before the data are read
        check_consensus(args.consensus, args.restarts, args.select_after)
        return _fit_restarts(args, config, selection_criterion(args.select_by, args.restarts))
    if args.resume:
        config = with_resumed_settings(config, args.out, args)
    if not args.distributed:
        return _fit_and_report(args, config, None)
    context = init_distributed(config.device)  # in a process started by torchrun
    try:
        return _fit_and_report(args, config, context)
    finally:
        shutdown_distributed()


def _fit_and_report(args: argparse.Namespace, config: FitConfig, distributed) -> int:
    """Fit and write the run folder, locked before the data are read (a second writer is
    refused at once); under --distributed only rank 0 prints and writes."""
    main_rank = distributed is None or distributed.is_main
    with RunLock(args.out) if main_rank else contextlib.nullcontext():
        data, metadata = fit_data(args)
        vc = VarClust(config=config)
        if main_rank:
            where = distributed.describe() if distributed is not None else str(vc.device)
            print(f"varclust: fitting K={config.num_clusters} to {data.name} "
                  f"({len(data)} x {'x'.join(map(str, data.image_shape))}) on {where}")
        labelled = _labelled_mask(args.labelled_fraction, data, config.seed)
        try:
            vc.fit(data.images, data.labels, out_dir=args.out, resume=args.resume,
                   overwrite=args.overwrite, progress="lines" if args.quiet else True,
                   metadata=metadata, distributed=distributed, labelled=labelled,
                   pretrained=args.pretrained)
        except KeyboardInterrupt:
            if main_rank:
                _interrupted(vc, args.out)
            return 130
        if not main_rank:
            return 0
        _write_figures(vc, args.out)
    last = vc.history[-1] if vc.history else {}
    scores = _scores_text(last)
    collapsed = (f"; WARNING: the clustering collapsed ({last['clusters_used']} of "
                 f"{config.num_clusters} clusters in use, the largest holds "
                 f"{last['largest_cluster']:.0%} of the data)" if vc.collapse_warning_ else "")
    print(f"varclust: done; {scores}; run folder {args.out}{collapsed}")
    return 0


def _scores_text(last: dict) -> str:
    """'ACC a, NMI n, ARI r' of an epoch record, for the scores it has (none without labels)."""
    return ", ".join(f"{k.upper()} {last[k]:.4f}" for k in ("acc", "nmi", "ari") if k in last)


def _fit_restarts(args: argparse.Namespace, config: FitConfig,
                  criterion: SelectionCriterion) -> int:
    """--restarts R: R fits into OUT/seed_S, the best by ``criterion`` (--select-by) kept
    (:mod:`varclust.restarts`); OUT is locked while they run."""
    with RunLock(args.out):
        data, metadata = fit_data(args)
        seeds = f"{config.seed} to {config.seed + args.restarts - 1}"
        when = ("" if args.select_after is None
                else f" after {args.select_after} epochs, and only it continued")
        print(f"varclust: {args.restarts} fits of K={config.num_clusters} to {data.name} "
              f"({len(data)} x {'x'.join(map(str, data.image_shape))}), seeds {seeds}; "
              f"{criterion.kept} is kept{when}")
        try:
            result = fit_restarts(
                config, data.images, data.labels, restarts=args.restarts,
                select_after=args.select_after, select_by=criterion.name, out_dir=args.out,
                consensus=args.consensus,
                resume=args.resume, overwrite=args.overwrite,
                progress="lines" if args.quiet else True, metadata=metadata,
                labelled=_labelled_mask(args.labelled_fraction, data, config.seed),
                pretrained=args.pretrained)
        except KeyboardInterrupt:
            print(f"varclust: interrupted; the finished fits and the last checkpoint are in "
                  f"{args.out}/seed_*; continue with the same command and --resume",
                  file=sys.stderr)
            return 130
        chosen = result.candidates[result.chosen]
        kept = Path(chosen.folder) if result.consensus is None else args.out / CONSENSUS_FOLDER
        _write_figures(result.best, kept)
    mark = "  <- kept" if result.consensus is None else "  <- chosen"
    for fit, c in zip(result.fits, result.candidates, strict=True):
        scores = _scores_text(fit.history[-1] if fit.history else {})
        print(f"  seed {c.seed}: ELBO {c.elbo:.3f}{criterion.score_text(c.score)} at epoch "
              f"{c.epochs}; after epoch "
              f"{len(fit.history)}{': ' + scores if scores else ''}"
              f"{mark if c is chosen else ''}")
    if result.consensus is not None:
        scores = _scores_text(result.consensus.history[-1] if result.consensus.history else {})
        print(f"  consensus of the {args.restarts} fits{': ' + scores if scores else ''}"
              "  <- kept")
    what = f"seed {chosen.seed}" if result.consensus is None else "the consensus fit"
    print(f"varclust: done; kept {what}; run folder {kept} (all: {args.out / RESTARTS_FILE})")
    return 0


def _interrupted(vc: VarClust, out: Path) -> None:
    """Ctrl-C: one line naming the checkpoint and --resume, and the figures of what was fitted."""
    checkpoint = out / "checkpoint.pt"
    if vc.history:
        try:
            _write_figures(vc, out)
        except Exception:  # noqa: BLE001 - the figures are a courtesy; the message matters
            pass
    where = (f"the last checkpoint is {checkpoint}" if checkpoint.exists()
             else "no checkpoint was written yet")
    print(f"varclust: interrupted after {len(vc.history)} epochs; {where}; continue with the "
          "same command and --resume", file=sys.stderr)


def _labelled_mask(fraction: float, data, seed: int):
    """A random (seeded) boolean mask over the data selecting ``fraction`` of them, or None."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"--labelled-fraction must be in [0, 1], got {fraction}")
    if fraction == 0:
        return None
    if data.labels is None:
        raise ValueError(f"{data.name} has no labels to give the model")
    import numpy as np

    rng = np.random.default_rng(seed)
    mask = np.zeros(len(data), dtype=bool)
    mask[rng.choice(len(data), max(1, round(fraction * len(data))), replace=False)] = True
    return mask


def cmd_evaluate(args: argparse.Namespace) -> int:
    vc, data = load_run(args.run, args.data_root, arrays=data_arrays(args))
    pred = vc.predict(data.images)
    result = {"dataset": data.name, "num_data": len(data),
              "mean_assignment_entropy": float(pred.entropy.mean())}
    if data.labels is not None:
        result.update(clustering_scores(data.labels.numpy(), pred.labels))
    write_atomic(args.run / "evaluation.json", json.dumps(result, indent=2).encode())
    print(json.dumps(result, indent=2))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    vc = VarClust.load(args.run, device="auto")
    if args.steps is not None:
        vc.config = vc.config.replace(sample_steps=args.steps)
    torch.manual_seed(args.seed)
    clusters = [args.cluster] if args.cluster is not None else list(range(
        vc.config.num_clusters))
    grids = [vc.sample(k, args.num) for k in clusters]
    out = args.out or args.run / (
        f"samples_cluster{args.cluster}.png" if args.cluster is not None
        else f"samples_seed{args.seed}.png")  # samples.png is the fit's own figure
    plot_cluster_samples(grids, out, row_labels=clusters)
    print(f"varclust: wrote {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .analysis.report import write_report

    page = write_report(
        args.run, args.out, compare=args.compare, num_data=args.num_data,
        num_samples=args.num_samples, importance_samples=args.importance_samples,
        method=args.latent_map, data_root=args.data_root, seed=args.seed,
        arrays=data_arrays(args), heldout=heldout_array(args),
    )
    print(f"varclust: wrote {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="varclust: %(message)s")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handlers = {"fit": cmd_fit, "evaluate": cmd_evaluate, "sample": cmd_sample,
                "report": cmd_report}
    try:
        with holding_run(args):
            return handlers[args.command](args)
    except KeyboardInterrupt:
        print("varclust: interrupted", file=sys.stderr)
        return 130
    except (DatasetNotFoundError, CheckpointError, ValueError, TypeError, OSError,
            RuntimeError) as err:
        print(f"varclust: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
