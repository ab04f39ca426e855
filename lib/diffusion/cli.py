"""Commands for the diffusion study, registered into ``python -m lib``.

train --subset N | --images DIR --out RUN_DIR [--steps N] [--resume] [config options]
model export RUN_DIR --out data/models/NAME      fp16 EMA weights + model.json
model list [--models ROOT] [--pipeline DIR]      bundled models (and a local pipeline)
sample MODEL --n 16 --out DIR [--prompt TEXT]    a bundled model, a run or a pipeline
study [--models ROOT] [--samples 64] [--json]    the paper's table, one row per model
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lib.cli import UsageError
from lib.progress import ProgressCallback, tqdm_progress

CONFIG_OPTIONS = {
    "image_size": "--image-size",
    "block_channels": "--blocks",
    "layers_per_block": "--layers-per-block",
    "attention": "--attention",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "ema_decay": "--ema-decay",
    "prediction_type": "--prediction",
    "seed": "--seed",
    "steps": "--steps",
    "checkpoint_every": "--checkpoint-every",
}


@contextlib.contextmanager
def _progress(args: argparse.Namespace, desc: str, unit: str) -> Iterator[ProgressCallback | None]:
    if getattr(args, "quiet", False):
        yield None
        return
    with tqdm_progress(desc, unit=unit) as callback:
        yield callback


def _command() -> str:
    return shlex.join(["python", "-m", "lib", *sys.argv[1:]])


# ---------------------------------------------------------------- train, export, list
def cmd_train(args: argparse.Namespace) -> int:
    from lib.diffusion.data import fashion_mnist_subset, openmoji_subset
    from lib.diffusion.train import train

    images: Any = None
    dataset = ""
    if args.subset is None and args.images is None and not args.resume:
        raise UsageError("give --subset N (OpenMoji) or --images DIR (or --resume a run)")
    if args.subset is not None and args.dataset == "fashion-mnist":
        images = fashion_mnist_subset(args.fashion_dir, args.subset, seed=args.subset_seed)
        dataset = "fashion-mnist"
    elif args.subset is not None:
        train_dir = Path(args.openmoji_dir)
        if not train_dir.is_dir():
            raise FileNotFoundError(
                f"{train_dir} is missing; render OpenMoji with `python -m lib data prepare`"
            )
        images = openmoji_subset(train_dir, args.subset, seed=args.subset_seed)
        dataset = "openmoji"
    elif args.images is not None:
        images = args.images
    overrides = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k) is not None}
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    with _progress(args, "training", "step") as progress:
        result = train(
            args.out,
            images=images,
            resume=args.resume,
            dataset=dataset,
            command=_command(),
            device=args.device,
            overrides=overrides,
            progress=progress,
        )
    print(
        f"{result.run_dir}: step {result.step}/{result.steps}, loss {result.last_loss:.4f}, "
        f"{result.elapsed_s / 60:.1f} min of training on {result.device}; "
        f"checkpoint {result.checkpoint}"
    )
    return 0


def cmd_model_export(args: argparse.Namespace) -> int:
    from lib.diffusion.export import export_model

    manifest = export_model(args.run_dir, args.out, name=args.name)
    print(
        f"exported {manifest.name} ({manifest.n_train} training images, step {manifest.steps}, "
        f"{manifest.wall_time_s / 60:.1f} min of training) to {Path(args.out).resolve()}"
    )
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    from lib.diffusion.pipelines import bundled_models, models_message

    models = bundled_models(args.models)
    if args.json:
        rows = [
            {"name": m.name, "path": str(m.path), "manifest": json.loads(m.manifest.to_json())}
            for m in models
        ]
        print(json.dumps({"models": rows, "pipeline": args.pipeline}, indent=2))
        return 0
    for m in models:
        mf = m.manifest
        print(
            f"{m.name:24s} {mf.n_train:6d} training images  {mf.image_size}px  "
            f"{mf.steps} steps  {mf.wall_time_s / 60:.0f} min"
        )
    print(models_message(args.pipeline, args.models))
    return 0


# ---------------------------------------------------------------- sample
def cmd_sample(args: argparse.Namespace) -> int:
    from lib.diffusion.export import is_model
    from lib.diffusion.pipelines import generate, is_pipeline, load_pipeline
    from lib.diffusion.sample import sample, save_images
    from lib.diffusion.train import is_run

    if args.n < 1:
        raise UsageError("--n must be at least 1")
    if is_model(args.model) or is_run(args.model):
        if args.prompt:
            raise UsageError(f"{args.model} is unconditional: leave out --prompt")
        with _progress(args, "sampling", "step") as progress:
            images = sample(
                args.model,
                args.n,
                steps=args.steps,
                sampler=args.sampler,
                seed=args.seed,
                batch_size=args.batch_size,
                device=args.device,
                progress=progress,
            )
    elif is_pipeline(args.model):
        pipeline = load_pipeline(args.model, device=args.device)
        images = generate(pipeline, args.prompt, args.n, steps=args.steps, seed=args.seed)
    else:
        raise FileNotFoundError(
            f"{args.model} is not a Replica model, a training run or a diffusers pipeline folder"
        )
    paths = save_images(images, args.out)
    print(f"wrote {len(paths)} image(s) to {Path(args.out).resolve()}")
    return 0


# ---------------------------------------------------------------- study
def cmd_study(args: argparse.Namespace) -> int:
    from lib.diffusion.study import run_study

    with _progress(args, "study", "step") as progress:
        rows = run_study(
            args.models,
            args.samples,
            steps=args.steps,
            sampler=args.sampler,
            seed=args.seed,
            embedder=args.embedder,
            heldout_dir=args.heldout,
            out_dir=args.out,
            cache_dir=args.cache,
            device=args.device,
            progress=progress,
        )
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    print(format_table(rows))
    print(f"\nwritten: {Path(args.out).resolve()}/study.json, study.csv, <model>/*.png")
    return 0


def cmd_memorization(args: argparse.Namespace) -> int:
    """``memorization MODEL``: memorized generations found without the training set
    (:mod:`lib.diffusion.memorization`); for a bundled model, also how the flag agrees
    with the training-set verdict."""
    from lib.diffusion.memorization import check_model
    from lib.embedders import create_embedder

    if args.samples < 2:
        raise UsageError("--samples must be at least 2")
    with _progress(args, "sampling", "step") as progress:
        report, _ = check_model(
            args.model,
            args.samples,
            embedder=create_embedder(args.embedder),
            heldout_dir=args.heldout,
            steps=args.steps,
            seed=args.seed,
            progress=progress,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(report.sentence())
    for number, group in enumerate(report.groups, start=1):
        seeds = ", ".join(str(args.seed + i) for i in group)
        print(f"  group {number}: {len(group)} generations, seeds {seeds}")
    if report.agreement:
        a = report.agreement
        precision = "-" if a["precision"] is None else f"{a['precision']:.0%}"
        recall = "-" if a["recall"] is None else f"{a['recall']:.0%}"
        print(
            f"against the model's training images: {a['copies']} of "
            f"{report.n} generations are copies; of the {a['flagged']} flagged, {a['both']} "
            f"are (precision {precision}); recall {recall}"
        )
    return 0


def format_table(rows: list[Any]) -> str:
    """The paper-style table: generations against held-out real images, per model."""
    head = (
        f"{'model':20s} {'train':>6s} {'steps':>6s} | {'copies':>6s} {'>0.5':>6s} "
        f"{'mean':>6s} {'p95':>6s} {'cal':>6s} {'>held95':>7s} | held-out: "
        f"{'copies':>6s} {'>0.5':>6s} {'mean':>6s} {'p95':>6s} {'cal':>6s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        h = r.heldout
        lines.append(
            f"{r.model:20s} {r.n_train:6d} {r.training_steps:6d} | {r.copy_rate:6.1%} "
            f"{r.rate_above_0_5:6.1%} {r.mean_top1:6.3f} {r.p95_top1:6.3f} "
            f"{r.mean_calibrated:+6.3f} {r.above_heldout_p95:7.1%} |           "
            f"{h.copy_rate:6.1%} {h.rate_above_0_5:6.1%} {h.mean_top1:6.3f} {h.p95_top1:6.3f} "
            f"{h.mean_calibrated:+6.3f}"
        )
    lines.append(
        f"(raw SSCD top-1 cosines; 'copies' = calibrated copy verdicts; 'cal' = mean calibrated "
        f"top-1; '>held95' = samples above the held-out 95th percentile of calibrated top-1; "
        f"{rows[0].embedder if rows else ''})"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- parser
def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected e.g. 32,64,64, got {text!r}") from exc


def register(sub: Any) -> None:
    """Add ``train``, ``model``, ``sample`` and ``study`` to the ``python -m lib`` parser."""
    from lib.diffusion.export import REPO_ROOT
    from lib.diffusion.pipelines import DEFAULT_MODELS_ROOT
    from lib.diffusion.sample import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
    from lib.diffusion.study import DEFAULT_CACHE, DEFAULT_HELDOUT, DEFAULT_OUT

    models_default = str(DEFAULT_MODELS_ROOT)
    train = sub.add_parser(
        "train",
        help="train a small pixel-space diffusion model (resumable)",
        description="Config options default to TrainConfig; on --resume only --steps and "
        "--checkpoint-every may change.",
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument("--subset", type=int, help="the first N of the seeded subsets of --dataset")
    source.add_argument("--images", help="a folder of training images instead")
    train.add_argument("--out", required=True, help="run folder (config, checkpoints, losses)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--subset-seed", type=int, default=0)
    train.add_argument(
        "--dataset",
        choices=("openmoji", "fashion-mnist"),
        default="openmoji",
        help="where --subset draws from: OpenMoji's training split (default) or "
        "Fashion-MNIST's (Debian dataset-fashion-mnist, written once as PNGs to --fashion-dir)",
    )
    train.add_argument(
        "--fashion-dir",
        default=str(REPO_ROOT / "data" / "fashion-mnist" / "train"),
        help="where Fashion-MNIST's training split is written as PNGs (for --subset)",
    )
    train.add_argument(
        "--openmoji-dir",
        default=str(REPO_ROOT / "data" / "openmoji" / "train"),
        help="the OpenMoji training split (for --subset)",
    )
    train.add_argument("--steps", type=int, help="total optimiser steps")
    train.add_argument("--image-size", type=int, help="32 (default) or 64")
    train.add_argument("--blocks", dest="block_channels", type=_channels, help="e.g. 32,64,64")
    train.add_argument("--layers-per-block", type=int)
    train.add_argument("--attention", choices=("none", "mid", "bottom"))
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--ema-decay", type=float)
    train.add_argument(
        "--prediction",
        dest="prediction_type",
        choices=("v_prediction", "epsilon"),
        help="what the UNet predicts (default v_prediction)",
    )
    train.add_argument("--seed", type=int, help="training seed (init, noise, data order)")
    train.add_argument("--checkpoint-every", type=int)
    train.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    train.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    train.set_defaults(func=cmd_train)

    model = sub.add_parser("model", help="export and list the bundled diffusion models")
    msub = model.add_subparsers(dest="model_command", required=True)
    export = msub.add_parser("export", help="ship a run's EMA weights (fp16) with a manifest")
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, help="e.g. data/models/openmoji-100")
    export.add_argument("--name", help="model name (default: the folder name)")
    export.set_defaults(func=cmd_model_export)
    lst = msub.add_parser("list", help="the bundled models")
    lst.add_argument("--models", default=models_default)
    lst.add_argument("--pipeline", help="a local diffusers pipeline folder, if any")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_model_list)

    smp = sub.add_parser("sample", help="generate images with a model, run or local pipeline")
    smp.add_argument("model", help="data/models/NAME, a run folder or a diffusers pipeline folder")
    smp.add_argument("--n", type=int, default=16)
    smp.add_argument("--out", required=True, help="folder for the PNGs")
    smp.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    smp.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER)
    smp.add_argument("--seed", type=int, default=0, help="image i starts from seed + i")
    smp.add_argument("--batch-size", type=int, default=64)
    smp.add_argument("--prompt", help="for a text-to-image pipeline")
    smp.add_argument("--device")
    smp.set_defaults(func=cmd_sample)

    mem = sub.add_parser(
        "memorization",
        help="memorized generations found without the training set (many seeds, one picture)",
    )
    mem.add_argument("model", help="data/models/NAME")
    mem.add_argument("--samples", type=int, default=64)
    mem.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    mem.add_argument("--seed", type=int, default=0, help="generation i starts from seed + i")
    mem.add_argument("--embedder", default="sscd")
    mem.add_argument(
        "--heldout",
        default=str(DEFAULT_HELDOUT),
        help="real pictures of the same kind, different works: they calibrate 'near-identical'",
    )
    mem.add_argument("--json", action="store_true")
    mem.set_defaults(func=cmd_memorization)

    study = sub.add_parser("study", help="replication against training-set size, per model")
    study.add_argument("--models", default=models_default)
    study.add_argument("--samples", type=int, default=64)
    study.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    study.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER)
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--embedder", default="sscd", help="sscd (the paper's), or e.g. pixels")
    study.add_argument("--heldout", default=str(DEFAULT_HELDOUT))
    study.add_argument("--out", default=str(DEFAULT_OUT), help="report folder")
    study.add_argument("--cache", default=str(DEFAULT_CACHE), help="prepared images, indexes")
    study.add_argument("--device")
    study.add_argument("--json", action="store_true")
    study.set_defaults(func=cmd_study)
