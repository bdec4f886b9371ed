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
from .cli_support import (
    HelpFormatter,
    add_data_flags,
    data_arrays,
    fit_data,
    holding_run,
    show_defaults,
)
from .config import FitConfig, upgrade_legacy_keys
from .data.datasets import DATASETS, DatasetNotFoundError
from .estimator import VarClust
from .inference.checkpoint import CheckpointError, load_latest_checkpoint, write_atomic
from .inference.distributed import run_distributed_fit
from .inference.run_folder import RunLock
from .metrics import clustering_scores
from .registry import GUIDES, LIKELIHOODS, PRIORS

#: per-dataset defaults for settings the user does not give (small data need more epochs;
#: on Fashion-MNIST the codes cluster better with longer pretraining, and 30 SVI epochs add
#: about 0.01 ACC over 15: benchmarks/pretraining.py and BENCHMARKS.md)
DATASET_DEFAULTS: dict[str, dict] = {
    "digits": {"epochs": 60, "pretrain_epochs": 100, "em_iterations": 60,
               "diffusion_width": 16},
    "fashion-mnist": {"epochs": 30, "pretrain_epochs": 40},
}

#: --recipe: settings a recipe picks, unless typed on the command line. "scratch" trains end to
#: end with no autoencoder pretraining: the best from-scratch settings measured on the digits
#: (BENCHMARKS.md; ACC still below the pretrained recipe), cluster_information being a term
#: outside the ELBO
RECIPES: dict[str, dict] = {
    "pretrained": {},
    "scratch": {"pretrain_epochs": 0, "epochs": 120, "cluster_information": 3.0,
                "kl_warmup_epochs": 20, "batch_size": 64, "lr_decay": 1.0},
}


#: per-generator defaults, applied before the data set's: the diffusion generator's noisy
#: gradients need a smaller step than the decoders' (digits, EM: ACC 0.63 at 2e-3, 0.81 at 5e-4;
#: BENCHMARKS.md)
GENERATOR_DEFAULTS: dict[str, dict] = {"ddpm": {"lr": 5e-4}}


def _hidden(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden takes widths like 500,500,2000, not {text!r}"
        ) from None


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
    fit.add_argument("--clusters", type=int, default=10, help="K, the number of clusters")
    fit.add_argument("--epochs", type=int,
                     help="SVI epochs (digits: 60, fashion-mnist: 30, others: 50)")
    fit.add_argument("--pretrain-epochs", type=int,
                     help="autoencoder epochs before the mixture is fitted "
                     "(digits: 100, fashion-mnist: 40, others: 10)")
    fit.add_argument("--latent-dim", type=int, default=10)
    fit.add_argument("--network", choices=("mlp", "conv"), default="mlp")
    fit.add_argument("--hidden", type=_hidden, default=(500, 500, 2000),
                     help="encoder widths, mirrored by the decoder")
    fit.add_argument("--likelihood", choices=sorted(LIKELIHOODS), default="bernoulli")
    fit.add_argument("--prior", choices=sorted(PRIORS), default="gmm",
                     help="gmm (learned mixture), normal (plain VAE + mixture fitted to the "
                     "codes), bayes-gmm (Dirichlet/Normal/LogNormal priors on the mixture), "
                     "dp (Dirichlet process: --clusters is the truncation, unused clusters "
                     "switch off)")
    fit.add_argument("--guide", choices=sorted(GUIDES), default="marginal",
                     help="marginal q(z|x), mixture q(c|x)q(z|x,c), relaxed (Gumbel-softmax)")
    fit.add_argument("--concentration", type=float, default=1.0,
                     help="bayes-gmm: Dirichlet concentration per cluster (< 1 is sparse)")
    fit.add_argument("--global-guide", choices=("map", "mean-field"), default="map",
                     help="bayes-gmm: guide of the mixture's weights, means and scales")
    fit.add_argument("--dp-concentration", type=float, default=1.0,
                     help="dp: concentration alpha of the sticks Beta(1, alpha) (small: few "
                     "clusters)")
    fit.add_argument("--dp-learn-concentration", action="store_true",
                     help="dp: a Gamma hyperprior on alpha (mean --dp-concentration), learned")
    fit.add_argument("--dp-settle-steps", type=int, default=1000,
                     help="dp: SVI steps of the prior alone on the pretrained codes (0: none)")
    fit.add_argument("--labelled-fraction", type=float, default=0.0,
                     help="semi-supervised: give the model this fraction of the labels "
                     "(drawn with --seed)")
    fit.add_argument("--batch-size", type=int, default=256)
    fit.add_argument("--lr", type=float, help="Adam learning rate (default 2e-3; ddpm: 5e-4)")
    fit.add_argument("--lr-decay", type=float, default=None,
                     help="the learning rate's factor per epoch (per M-step epoch in EM); "
                     "default 0.97 for svi, 1 (constant, as ClusterDDPM) for em")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--device", default="auto", help="auto, cpu or cuda")
    fit.add_argument("--out", required=True, type=Path, help="run folder")
    fit.add_argument("--resume", action="store_true",
                     help="continue from --out's checkpoint; settings not typed are the run's")
    fit.add_argument("--overwrite", action="store_true",
                     help="replace the run in --out, removing every file of the old run")
    fit.add_argument("--pretrained", type=Path, default=None,
                     help="start from this run folder's autoencoder instead of pretraining "
                     "(same networks; the prior, guide and K may differ)")
    fit.add_argument("--data-root", type=Path, help="torchvision data folder")
    fit.add_argument("--download", action="store_true", help="download a missing data set")
    fit.add_argument("--quiet", action="store_true",
                     help="no progress bars; each epoch's numbers as one plain line")
    fit.add_argument("--lr-scaling", choices=("none", "sqrt", "linear"), default="none",
                     help="scale --lr from batch 256 to --batch-size (large batches)")
    fit.add_argument("--distributed", action="store_true",
                     help="data-parallel over the processes that torchrun starts, e.g. "
                     "`torchrun --nproc_per_node 2 -m varclust.cli fit ... --distributed`; "
                     "--batch-size is the global batch")
    fit.add_argument("--config", type=Path,
                     help="JSON object of FitConfig settings; flags typed on the command line "
                     "override it")
    fit.add_argument("--checkpoint-every", type=int, default=0,
                     help="also checkpoint every N mini-batches inside an epoch (0: per epoch)")
    fit.add_argument("--max-bad-steps", type=int, default=10,
                     help="stop after this many steps in a row with a non-finite loss")
    scratch = fit.add_argument_group("relaxed guide and training from scratch")
    scratch.add_argument("--recipe", choices=sorted(RECIPES), default="pretrained",
                         help="pretrained: autoencoder pretraining, then the mixture fitted to "
                         "the codes; scratch: end to end from a random start (" + ", ".join(
                             f"{k}={v}" for k, v in RECIPES["scratch"].items()) + ")")
    scratch.add_argument("--cluster-information", type=float, default=0.0,
                         help="lambda of lambda * N * I_q(c; x), a term outside the ELBO")
    scratch.add_argument("--augmentation-consistency", type=float, default=0.0,
                         help="gamma of gamma * N * KL(q(c|x) || q(c|shifted x)), outside the "
                         "ELBO (images only)")
    scratch.add_argument("--kl-warmup-epochs", type=int, default=0,
                         help="scale the latent terms of the ELBO up from 1/E to 1 over E epochs")
    scratch.add_argument("--temperature", type=float, default=1.0,
                         help="relaxed guide: the Concrete temperature of the first epoch")
    scratch.add_argument("--temperature-decay", type=float, default=0.93,
                         help="relaxed guide: per-epoch factor of the temperature")
    scratch.add_argument("--temperature-min", type=float, default=0.5,
                         help="relaxed guide: the temperature's floor")
    scratch.add_argument("--prior-temperature", type=float, default=0.01,
                         help="relaxed model: the fixed temperature of p(w)")
    em = fit.add_argument_group("EM and generator (ClusterDDPM)")
    em.add_argument("--method", choices=("svi", "em"), default="svi",
                    help="svi: joint SVI; em: M-steps with the prior frozen + closed-form E-steps")
    em.add_argument("--generator", choices=("mlp", "conv", "ddpm"),
                    help="p(x|z): a decoder or the conditional diffusion model "
                    "(default: the --network decoder)")
    em.add_argument("--em-iterations", type=int,
                    help="EM iterations (digits: 60, others: 20)")
    em.add_argument("--m-step-epochs", type=int, default=1)
    em.add_argument("--e-step-iterations", type=int, default=10,
                    help="closed-form E-steps (vade, means): EM steps on the codes")
    em.add_argument("--e-step", choices=("clusterddpm", "vade", "means"), default="clusterddpm",
                    help="clusterddpm: scikit-learn's GaussianMixture refitted to convergence on "
                    "codes sampled from q, warm-started (ClusterDDPM); vade: closed form with "
                    "q's variances (VaDE's bound, never decreasing); means: q's means only")
    em.add_argument("--kl-warmup", type=int, default=0,
                    help="EM iterations over which the M-step's KL weight rises to 1")
    em.add_argument("--diffusion-steps", type=int, default=1000, help="T of the ddpm")
    em.add_argument("--diffusion-schedule", choices=("linear", "clusterddpm", "cosine"),
                    default="linear", help="linear: betas 1e-4..0.02 scaled by 1000/T; "
                    "clusterddpm: 1e-4..0.02 at any T (ClusterDDPM); cosine")
    em.add_argument("--diffusion-width", type=int,
                    help="U-Net base width (default 64; digits: 16)")
    em.add_argument("--diffusion-weight", type=float, default=10.0,
                    help="the noise loss's weight against the KL (10: ClusterDDPM's 1 : 0.1)")
    em.add_argument("--ddpm-pretrain", choices=("autoencoder", "diffusion"),
                    default="autoencoder",
                    help="autoencoder: a plain autoencoder, then the generator on its frozen "
                    "codes; diffusion: both as a diffusion autoencoder (ClusterDDPM)")
    em.add_argument("--diffusion-pretrain-epochs", type=int, default=100,
                    help="autoencoder pretraining: the most epochs of the generator stage")
    em.add_argument("--pretrain-reliance", type=float, default=0.5,
                    help="end the diffusion pretraining once the generator's latent reliance "
                    "reaches this (0: run all its epochs)")
    em.add_argument("--sample-steps", type=int, default=100,
                    help="ddpm sampling: strided steps, 0 for the full ancestral chain")

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
                        help="ddpm runs: reverse steps (0: all T, ancestral; default: the run's)")

    report = sub.add_parser("report", help="write a run's figures as PNG and an HTML page")
    report.add_argument("run", type=Path, help="run folder written by `varclust fit`")
    report.add_argument("--out", type=Path, help="report folder (default RUN/report)")
    report.add_argument("--compare", type=Path, nargs="+", default=[], metavar="RUN",
                        help="other run folders on the same data set to rank by az.compare")
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
    if args.resume:
        config = with_resumed_settings(config, args.out, args.argv)
    if args.distributed:
        return run_distributed_fit(args, config, _fit_and_report)
    return _fit_and_report(args, config, None)


def config_from_args(args: argparse.Namespace) -> FitConfig:
    """The FitConfig of a parsed ``fit`` command: flags, data set presets, the --recipe (for
    the settings not typed), --config file, --lr-decay."""
    preset = {**GENERATOR_DEFAULTS.get(args.generator, {}),
              **DATASET_DEFAULTS.get(args.dataset, {})}
    epochs = _preset(args.epochs, preset, "epochs", 50)
    pretrain = _preset(args.pretrain_epochs, preset, "pretrain_epochs", 10)
    config = FitConfig(
        num_clusters=args.clusters, latent_dim=args.latent_dim, network=args.network,
        hidden=args.hidden, likelihood=args.likelihood, epochs=epochs, pretrain_epochs=pretrain,
        batch_size=args.batch_size, learning_rate=_preset(args.lr, preset, "lr", 2e-3),
        seed=args.seed, device=args.device,
        prior=args.prior, guide=args.guide, dirichlet_concentration=args.concentration,
        global_guide=args.global_guide, dp_concentration=args.dp_concentration,
        dp_learn_concentration=args.dp_learn_concentration, dp_settle_steps=args.dp_settle_steps,
        method=args.method, generator=args.generator,
        em_iterations=_preset(args.em_iterations, preset, "em_iterations", 20),
        m_step_epochs=args.m_step_epochs, e_step_iterations=args.e_step_iterations,
        diffusion_steps=args.diffusion_steps, diffusion_schedule=args.diffusion_schedule,
        diffusion_width=_preset(args.diffusion_width, preset, "diffusion_width", 64),
        diffusion_weight=args.diffusion_weight,
        sample_steps=args.sample_steps, lr_scaling=args.lr_scaling,
        cluster_information=args.cluster_information,
        augmentation_consistency=args.augmentation_consistency,
        kl_warmup_epochs=args.kl_warmup_epochs, temperature=args.temperature,
        temperature_decay=args.temperature_decay, temperature_min=args.temperature_min,
        prior_temperature=args.prior_temperature,
    )
    config = config.replace(checkpoint_every_steps=args.checkpoint_every,
                            max_bad_steps=args.max_bad_steps, e_step=args.e_step,
                            kl_warmup_iterations=args.kl_warmup,
                            ddpm_pretrain=args.ddpm_pretrain,
                            diffusion_pretrain_epochs=args.diffusion_pretrain_epochs,
                            pretrain_reliance=args.pretrain_reliance)
    typed = typed_fields(args.argv)
    config = config.replace(**{k: v for k, v in RECIPES[args.recipe].items() if k not in typed})
    if args.config is not None:
        config = with_config_file(config, args.config, args.argv)
    if args.lr_decay is not None:  # the decay of the loop that runs
        config = config.replace(**{LR_DECAY_FIELD[config.method]: args.lr_decay})
    return config


def _preset(value, preset: dict, key: str, default):
    """A flag's value, else the data set's preset, else the default."""
    return value if value is not None else preset.get(key, default)


#: the FitConfig field that --lr-decay sets, per method
LR_DECAY_FIELD = {"svi": "lr_decay", "em": "em_lr_decay"}


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
        labelled = _labelled_mask(args.labelled_fraction, data, args.seed)
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
    scores = ", ".join(f"{k.upper()} {last[k]:.4f}" for k in ("acc", "nmi", "ari") if k in last)
    collapsed = (f"; WARNING: the clustering collapsed ({last['clusters_used']} of "
                 f"{config.num_clusters} clusters in use, the largest holds "
                 f"{last['largest_cluster']:.0%} of the data)" if vc.collapse_warning_ else "")
    print(f"varclust: done; {scores}; run folder {args.out}{collapsed}")
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


#: the fit flags that set a FitConfig field, for --config: a flag typed overrides the file
FLAG_FIELDS = {
    "--clusters": "num_clusters", "--epochs": "epochs", "--pretrain-epochs": "pretrain_epochs",
    "--latent-dim": "latent_dim", "--network": "network", "--hidden": "hidden",
    "--likelihood": "likelihood", "--batch-size": "batch_size", "--lr": "learning_rate",
    "--seed": "seed", "--device": "device", "--checkpoint-every": "checkpoint_every_steps",
    "--max-bad-steps": "max_bad_steps",
    "--prior": "prior", "--guide": "guide", "--concentration": "dirichlet_concentration",
    "--global-guide": "global_guide", "--dp-concentration": "dp_concentration",
    "--dp-learn-concentration": "dp_learn_concentration", "--dp-settle-steps": "dp_settle_steps",
    "--method": "method", "--generator": "generator", "--em-iterations": "em_iterations",
    "--m-step-epochs": "m_step_epochs", "--e-step-iterations": "e_step_iterations",
    "--diffusion-steps": "diffusion_steps", "--diffusion-schedule": "diffusion_schedule",
    "--diffusion-width": "diffusion_width", "--diffusion-weight": "diffusion_weight",
    "--sample-steps": "sample_steps",
    "--cluster-information": "cluster_information",
    "--augmentation-consistency": "augmentation_consistency",
    "--kl-warmup-epochs": "kl_warmup_epochs", "--temperature": "temperature",
    "--temperature-decay": "temperature_decay", "--temperature-min": "temperature_min",
    "--prior-temperature": "prior_temperature",
    "--e-step": "e_step", "--kl-warmup": "kl_warmup_iterations",
    "--ddpm-pretrain": "ddpm_pretrain", "--diffusion-pretrain-epochs": "diffusion_pretrain_epochs",
    "--pretrain-reliance": "pretrain_reliance",
}


def typed_fields(argv: list[str]) -> set[str]:
    """The FitConfig fields of the flags typed in argv."""
    return {FLAG_FIELDS[a.split("=")[0]] for a in argv if a.split("=")[0] in FLAG_FIELDS}


def with_config_file(flags: FitConfig, path: Path, argv: list[str]) -> FitConfig:
    """The settings of a --config file over the flags' defaults, under the flags typed in argv."""
    typed = typed_fields(argv)
    from_file = FitConfig.from_json(path).to_dict()
    given = upgrade_legacy_keys(json.loads(path.read_text()))
    return flags.replace(**{k: from_file[k] for k in given if k not in typed})


def with_resumed_settings(flags: FitConfig, out: Path, argv: list[str]) -> FitConfig:
    """--resume: the run's own settings (from its checkpoint), under the flags typed in argv; a
    typed flag that changes a run-defining setting is then refused by the fit."""
    if not any((out / n).exists() for n in ("checkpoint.pt", "checkpoint.prev.pt")):
        return flags
    saved, _ = load_latest_checkpoint(out / "checkpoint.pt")
    typed = typed_fields(argv)
    ours = flags.to_dict()
    return FitConfig.from_dict({**saved["config"], **{k: ours[k] for k in typed}})


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
        arrays=data_arrays(args),
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
