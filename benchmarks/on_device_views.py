"""Per-image MONAI views in the DataLoader's workers against the same views drawn per batch on
the training device (`data.pretrain_views.on_device`, `data.unlabeled_views.on_device`): how
fast, and are the features as good?

1. Speed, side by side in one process, alternating `--rounds` times: images per second of
   the views alone, and of training steps under the Lightning Trainer (data loading and
   augmentation included, Trainer setup excluded), on PneumoniaMNIST-sized phantoms. Twice:
   SimCLR's two pretraining views, and FixMatch's weak and strong views of the unlabeled
   images (FixMatch's batch: `--batch` / 8 labeled images and 7 unlabeled ones for each; the
   rates count unlabeled images).
2. Quality (`--quality-epochs N`, 0 skips it): BYOL pretrained on PneumoniaMNIST's training
   images once with each kind of view, same seed, width and epochs; the online kNN and
   linear-probe AUC of the frozen features on the official **val** split, averaged over the last
   three epochs, with every training label in the bank (a check of the features, not a label-efficiency result: the test split
   is not touched).

    python benchmarks/on_device_views.py --workers 1 --quality-epochs 15 --width 0.5

Writes benchmarks/results/on_device_views.json (`--out`); runs under
benchmarks/results/on_device_views_runs/ (not tracked).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from common import ImagesPerSecond, add_trainer_argument, run_stage, trainer_overrides

from workbench.data import MedicalDataModule, PhantomSource
from workbench.data.augment import multi_view, weak_strong
from workbench.pretrain import pretrain
from workbench.runs import epoch_history
from workbench.semi import FixMatch
from workbench.ssl import SimCLR

RESULTS = Path(__file__).parent / "results"
# On-device views leave only deterministic work per image, which data.cache=memory keeps.
CACHE = {"per_image": "none", "on_device": "memory"}
KINDS = ("pretrain", "semi")  # SimCLR's views; FixMatch's weak and strong views
MU = 7  # FixMatch's unlabeled images per labeled one


def datamodule(args: argparse.Namespace, mode: str, kind: str = "pretrain") -> MedicalDataModule:
    source = PhantomSource(size=args.size, num_train=args.images, num_val=2, num_test=2)
    on_device, common = mode == "on_device", dict(num_workers=args.workers, cache=CACHE[mode])
    if kind == "pretrain":
        dm = MedicalDataModule(source, batch_size=args.batch, pretrain_views=multi_view(2, args.size, on_device=on_device), **common)
    else:
        dm = MedicalDataModule(source, label_fraction=0.25, batch_size=args.batch // (MU + 1), unlabeled_ratio=MU,
                               unlabeled_views=weak_strong(2, on_device=on_device), **common)
    dm.setup()
    return dm


def views_alone(args: argparse.Namespace, mode: str, kind: str, device: torch.device) -> float:
    """Images per second of making two views, delivered on `device`, without any network: the
    second pass over the loader (the first starts the workers and fills the cache)."""
    dm = datamodule(args, mode, kind)
    loader, generator = dm.train_dataloader(), torch.Generator(device=device).manual_seed(0)
    make = dm.pretrain_views if kind == "pretrain" else dm.unlabeled_views
    for _ in range(2):  # the last pass counts
        images, start = 0, time.perf_counter()
        for batch in loader:
            if kind == "semi":
                batch = batch[0]["unlabeled"]  # a CombinedLoader yields (batch, index, loader index)
            if mode == "on_device":
                views = make(batch["image"].to(device, non_blocking=True), generator)
            else:
                views = [v.to(device, non_blocking=True) for v in batch["views"]]
            images += len(views[0])
        if device.type == "cuda":
            torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def training(args: argparse.Namespace, mode: str, kind: str) -> float:
    torch.manual_seed(0)
    if kind == "pretrain":
        model = SimCLR(in_channels=1, backbone="resnet18", width=args.width, image_size=args.size, warmup_epochs=0)
    else:
        model = FixMatch(in_channels=1, num_classes=2, backbone="resnet18", width=args.width)
    meter = ImagesPerSecond()
    trainer = pl.Trainer(
        max_epochs=1, accelerator=args.accelerator, devices=1, precision=args.precision, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=[meter],
    )
    trainer.fit(model, datamodule=datamodule(args, mode, kind))
    return meter.rate


def speed(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    rates = {f"{what}_{kind}_{mode}": [] for kind in KINDS for what in ("views", "training") for mode in CACHE}
    for r in range(args.rounds):  # alternate, so drift in machine load hits both sides alike
        for kind in KINDS:
            for mode in CACHE:
                rates[f"views_{kind}_{mode}"].append(views_alone(args, mode, kind, device))
                rates[f"training_{kind}_{mode}"].append(training(args, mode, kind))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in rates.items()), flush=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    ratios = {f"{what}_{kind}": round(medians[f"{what}_{kind}_on_device"] / medians[f"{what}_{kind}_per_image"], 2)
              for kind in KINDS for what in ("views", "training")}
    return {"img_per_s": {k: round(v, 1) for k, v in medians.items()}, "ratios": ratios, "rounds": rates}


def quality(args: argparse.Namespace) -> dict:
    """Per kind of view: the online val metrics averaged over the last three evaluated epochs
    (they swing by up to 0.02 from one epoch to the next), and every epoch's AUCs."""
    results = {}
    for mode, cache in CACHE.items():
        overrides = [
            "data=pneumoniamnist", f"paths.data_dir={args.data_dir}", "ssl=byol", f"ssl.width={args.width}", "seed=0",
            f"trainer.max_epochs={args.quality_epochs}", "data.batch_size=128", "data.pretrain_views.size=28",
            "data.label_fraction=1.0", f"data.num_workers={args.workers}", "logger=csv",
            f"data.pretrain_views.on_device={str(mode == 'on_device').lower()}", f"data.cache={cache}", *trainer_overrides(args),
        ]
        metrics = run_stage(pretrain, "pretrain", overrides, Path(args.runs) / f"byol-{mode}")
        history = epoch_history(metrics["run_dir"]).dropna(subset=["val/knn_auc"])
        results[mode] = {k: round(float(history[k].tail(3).mean()), 4) for k in ("val/knn_auc", "val/probe_auc", "val/knn_acc", "val/probe_acc")}
        results[mode].update(per_epoch_knn_auc=history["val/knn_auc"].round(4).tolist(),
                             per_epoch_probe_auc=history["val/probe_auc"].round(4).tolist(), pretrain_seconds=metrics["pretrain_seconds"])
        print(mode, json.dumps(results[mode]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="phantom images per speed round")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--width", type=float, default=0.5, help="ResNet-18 channel multiplier")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--accelerator", default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bf16-mixed" if torch.cuda.is_available() else "32-true")
    parser.add_argument("--quality-epochs", type=int, default=0, help="BYOL epochs per kind of view; 0 skips the quality check")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--runs", default=str(RESULTS / "on_device_views_runs"))
    parser.add_argument("--out", default=str(RESULTS / "on_device_views.json"))
    add_trainer_argument(parser)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    result = {
        "config": vars(args),
        "machine": platform.platform(),
        "device": torch.cuda.get_device_name() if args.accelerator == "gpu" else f"cpu x{torch.get_num_threads()} threads",
        "speed": speed(args),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.quality_epochs:
        result["quality"] = quality(args)
        out.write_text(json.dumps(result, indent=2) + "\n")
    s, ratios = result["speed"]["img_per_s"], result["speed"]["ratios"]
    print("\n| what | per-image views (workers) | on-device views | ratio |\n|---|---|---|---|")
    for kind, (views, training) in zip(KINDS, [("two views alone", "SimCLR training"), ("weak + strong views alone", "FixMatch training")]):
        for what, label in (("views", views), ("training", training)):
            key = f"{what}_{kind}"
            print(f"| {label}, img/s | {s[key + '_per_image']:.0f} | {s[key + '_on_device']:.0f} | {ratios[key]:.2f} |")
    for mode, q in result.get("quality", {}).items():
        print(f"| BYOL {args.quality_epochs} epochs, {mode}, last 3 epochs: val kNN AUC {q['val/knn_auc']:.4f}, "
              f"probe AUC {q['val/probe_auc']:.4f}, {q['pretrain_seconds']:.0f} s | | | |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
