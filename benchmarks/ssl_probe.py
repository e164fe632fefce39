"""Does self-supervised pretraining save labels on PneumoniaMNIST?

1. Pretrain each method on the training images with labels hidden (`workbench pretrain`).
2. With `--fraction` of the training labels (stratified; 1% = 47 images) and each seed, train
   (a) a linear probe on the frozen pretrained backbone, (b) the pretrained backbone finetuned
   (with `--backbone-lr-scale`, also finetuned with the backbone at that fraction of the learning
   rate; with `--head-only-epochs`, also LP-FT: the head alone first, then the backbone joins),
   (c) the same architecture from scratch: all through `workbench train`, under one protocol:
   model selection uses a stratified subset of the official val split at the same fraction; the
   decision threshold calls as many unlabeled training images positive as the labeled prior says
   (`--threshold prior`; `val` for Youden's J on the val subset); the test split is scored once,
   at the end.

    python benchmarks/ssl_probe.py --methods simclr=20 byol=15 --width 0.5 --workers 1

A method is `name` or `name=epochs` (default `--pretrain-epochs`), so each gets a similar
CPU budget. Model selection monitors the val loss by default: with 1% of the val split (5
images) the val AUC reaches 1.0 within a few epochs and the earliest such checkpoint would win.

Writes benchmarks/results/ssl_probe.json (`--out`): one record per method, mode and seed with
`auc`, `acc` and `pretrain_seconds`, and prints mean ± std per method and mode. Runs under
benchmarks/results/ssl_probe_runs/ (`--runs`, not tracked).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from common import add_threshold_argument, add_trainer_argument, mean_sd, run_stage, trainer_overrides

from workbench.pretrain import pretrain
from workbench.train import train

RESULTS = Path(__file__).parent / "results"


def finetune_modes(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(mode, task overrides) for every way of training on a pretrained backbone that the options make."""
    modes = [("linear_probe", ["task.freeze_backbone=true"]), ("finetune", [])]
    scale = [f"task.backbone_lr_scale={args.backbone_lr_scale}"] if args.backbone_lr_scale else []
    if scale:
        modes.append((f"finetune_lr{args.backbone_lr_scale:g}", scale))
    if args.head_only_epochs is not None:
        name = f"lp_ft{args.head_only_epochs}" + (f"_lr{args.backbone_lr_scale:g}" if scale else "")
        modes.append((name, [f"task.head_only_epochs={args.head_only_epochs}", *scale]))
    return modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["simclr", "byol"], help="name or name=pretrain_epochs")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of the backbone")
    parser.add_argument("--monitor", default="val/loss", help="model-selection metric (val/loss: min, else max)")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--pretrain-batch", type=int, default=128)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--finetune-batch", type=int, default=16)
    parser.add_argument("--backbone-lr-scale", type=float, default=None,
                        help="also finetune with the pretrained backbone at this fraction of the learning rate (mode finetune_lr<scale>)")
    parser.add_argument("--head-only-epochs", type=int, default=None,
                        help="also LP-FT: the head learns alone this many epochs, then the backbone joins (at --backbone-lr-scale; mode lp_ft<epochs>...)")
    parser.add_argument("--modes", nargs="+", default=None, help="run only these modes (default: all that the options make)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="folder holding pneumoniamnist/ (default: ../shared/data)")
    parser.add_argument("--limit-batches", type=int, default=None, help="smoke test: this many training batches per epoch")
    parser.add_argument("--out", default=str(RESULTS / "ssl_probe.json"))
    parser.add_argument("--runs", default=str(RESULTS / "ssl_probe_runs"), help="where the runs go (reused when finished)")
    add_threshold_argument(parser)
    add_trainer_argument(parser)
    args = parser.parse_args()
    modes = finetune_modes(args)
    known = {"scratch", *(mode for mode, _ in modes)}
    if args.modes and not set(args.modes) <= known:
        parser.error(f"--modes: unknown {sorted(set(args.modes) - known)}; with these options, expected some of {sorted(known)}")
    modes = [(mode, extra) for mode, extra in modes if not args.modes or mode in args.modes]
    warnings.filterwarnings("ignore")
    runs = Path(args.runs)
    data = ["data=pneumoniamnist", f"data.num_workers={args.workers}", *trainer_overrides(args)]
    if args.data_dir:
        data.append(f"paths.data_dir={args.data_dir}")
    if args.limit_batches:
        data.append(f"+trainer.limit_train_batches={args.limit_batches}")
    common_train = [
        "experiment=pneumoniamnist", *data, f"data.label_fraction={args.fraction}", f"data.batch_size={args.finetune_batch}",
        f"task.backbone={args.backbone}", f"task.width={args.width}", f"trainer.max_epochs={args.finetune_epochs}", "logger=csv",
        f"monitor.metric={args.monitor}", f"monitor.mode={'min' if args.monitor.endswith('loss') else 'max'}",
        f"task.threshold={args.threshold}",
    ]
    records = []

    def record(method: str, mode: str, seed: int, metrics: dict, pretrain_seconds: float | None) -> None:
        records.append({
            "method": method, "mode": mode, "seed": seed, "auc": metrics["test/auc"], "acc": metrics["test/acc"],
            "pretrain_seconds": pretrain_seconds, "train_seconds": metrics["train_seconds"],
            "labeled_images": metrics["labeled_images"], "val_images": metrics["val_images"],
        })
        print(f"{method:>8} {mode:>12} seed {seed}: AUC {metrics['test/auc']:.4f} ACC {metrics['test/acc']:.4f}", flush=True)

    for seed in args.seeds if not args.modes or "scratch" in args.modes else []:
        metrics = run_stage(train, "train", [*common_train, f"seed={seed}"], runs / f"scratch-{seed}")
        record("none", "scratch", seed, metrics, None)
    for spec in args.methods:
        method, _, epochs = spec.partition("=")
        pre = run_stage(
            pretrain,
            "pretrain",
            [f"ssl={method}", *data, f"ssl.backbone={args.backbone}", f"ssl.width={args.width}",
             "data.pretrain_views.size=28", f"data.batch_size={args.pretrain_batch}",
             f"trainer.max_epochs={epochs or args.pretrain_epochs}",
             f"data.label_fraction={args.fraction}"],  # labels only for online kNN monitoring
            runs / f"pretrain-{method}",
        )
        print(f"{method}: pretrained {pre['epochs']} epochs in {pre['pretrain_seconds']:.0f} s", flush=True)
        for seed in args.seeds:
            for mode, extra in modes:
                overrides = [*common_train, f"seed={seed}", f"task.pretrained={runs / f'pretrain-{method}'}", *extra]
                metrics = run_stage(train, "train", overrides, runs / f"{method}-{mode}-{seed}")
                record(method, mode, seed, metrics, pre["pretrain_seconds"])

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "records": records}, indent=2) + "\n")
    print("\n| method | mode | test AUC (mean ± std) | test ACC (mean ± std) |\n|---|---|---|---|")
    groups = sorted({(r["method"], r["mode"]) for r in records})
    for method, mode in groups:
        rows = [r for r in records if (r["method"], r["mode"]) == (method, mode)]
        print(f"| {method} | {mode} | {mean_sd([r['auc'] for r in rows])} | {mean_sd([r['acc'] for r in rows])} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
