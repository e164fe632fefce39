"""Do unlabeled images save labels? Semi-supervised against supervised-only, same protocol.

PneumoniaMNIST (`--dataset pneumoniamnist`): `--fraction` of the training labels (1% = 47
images, stratified), the rest of the training images unlabeled; model selection uses a stratified
subset of the official val split at the same fraction (val loss, see ssl_probe.py), the decision
threshold the labeled class prior matched on the unlabeled training images (`--threshold`); the
test split is scored once, at the end. Methods: supervised, fixmatch, freematch, mean_teacher.
CPU budget: a semi-supervised run takes `--epochs` x `--steps-per-epoch` steps (8 x 50) of 16
labeled + 32 unlabeled images; the supervised baseline 130 epochs of 3 steps, about as many steps.

ISBI 2012 EM membranes (`--dataset isbi2012`): per seed, 3 labeled training images; the last 6
sections of the stack held out for testing (the same for every seed); the other 21 training
images and the 30 unlabeled test-folder images unlabeled. There is no labeled image left for
model selection, so the last step is scored; every method trains for the same number of
optimizer steps. Images are resized to `--seg-size` px for CPU budgets. Methods: supervised,
seg_mean_teacher, cps.

    python benchmarks/semi.py --dataset pneumoniamnist isbi2012 --seeds 0 1 2 --width 0.25 --workers 1

Writes benchmarks/results/semi.json (one record per dataset, method and seed, with auc/acc or
dice) and prints mean ± std per dataset and method. Runs go under benchmarks/results/semi_runs/;
a rerun reuses every finished run of the same configuration.
"""

from __future__ import annotations

import argparse
import json
import random
import warnings
from pathlib import Path

from common import add_threshold_argument, add_trainer_argument, mean_sd, run_stage, trainer_overrides

from workbench.train import train

RESULTS = Path(__file__).parent / "results"
CLASSIFICATION = {"supervised": "classification", "fixmatch": "fixmatch", "freematch": "freematch", "mean_teacher": "mean_teacher"}
SEGMENTATION = {"supervised": "segmentation", "seg_mean_teacher": "seg_mean_teacher", "cps": "cps"}
TEST_SECTIONS = 6  # ISBI: the last sections of the training stack, the same for every seed


def isbi_split(data_dir: Path, seed: int, work: Path) -> tuple[Path, Path]:
    """A datalist (3 labeled training images, TEST_SECTIONS test images) and a folder linking the
    unlabeled images (the other training images and the 30 test-folder images) for one seed.

    The test images are the last sections of the stack for every seed: neighbouring serial
    sections are near-copies, so a test set scattered through the stack would have its
    neighbours in training, and a fixed test set (like PneumoniaMNIST's) leaves only the labeled
    draw and the training to vary between seeds."""
    root = data_dir / "isbi2012_em_membrane"
    names = sorted((root / "train" / "images").glob("*.png"), key=lambda p: int(p.stem))
    pool, test = names[:-TEST_SECTIONS], names[-TEST_SECTIONS:]
    order = random.Random(seed).sample(pool, len(pool))
    labeled, rest = order[:3], order[3:]
    item = lambda p: {"image": f"train/images/{p.name}", "label": f"train/labels/{p.name}"}  # noqa: E731  (relative to root)
    work.mkdir(parents=True, exist_ok=True)
    datalist = work / "datalist.json"
    datalist.write_text(json.dumps({"training": [item(p) for p in labeled], "test": [item(p) for p in test]}, indent=1))
    unlabeled = work / "unlabeled"
    unlabeled.mkdir(exist_ok=True)
    for p in [*rest, *sorted((root / "test" / "images").glob("*.png"))]:
        link = unlabeled / f"{p.parent.parent.name}-{p.name}"
        if not link.exists():
            link.symlink_to(p.resolve())
    return datalist, unlabeled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["pneumoniamnist", "isbi2012"])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every method of the dataset")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 channel multiplier (classification)")
    parser.add_argument("--epochs", type=int, default=8, help="semi-supervised epochs of --steps-per-epoch steps")
    parser.add_argument("--steps-per-epoch", type=int, default=50, help="semi-supervised steps between validations")
    parser.add_argument("--unlabeled-ratio", type=float, default=2, help="unlabeled images per labeled one in a batch (mu)")
    parser.add_argument("--supervised-epochs", type=int, default=130, help="supervised epochs (3 steps of the 47 images each)")
    parser.add_argument("--seg-steps", type=int, default=1000, help="optimizer steps of every segmentation run")
    parser.add_argument("--seg-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--limit-batches", type=int, default=None, help="smoke test: this many training batches per epoch")
    parser.add_argument("--out", default=str(RESULTS / "semi.json"))
    parser.add_argument("--runs", default=str(RESULTS / "semi_runs"), help="where the runs go (reused when finished)")
    add_threshold_argument(parser)
    add_trainer_argument(parser)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    runs = Path(args.runs)
    common = [f"paths.data_dir={args.data_dir}", f"data.num_workers={args.workers}", "logger=csv", *trainer_overrides(args)]
    if args.limit_batches:
        common.append(f"+trainer.limit_train_batches={args.limit_batches}")
    semi_steps = [] if args.limit_batches else [f"+trainer.limit_train_batches={args.steps_per_epoch}"]
    records = []
    for dataset in args.dataset:
        methods = CLASSIFICATION if dataset == "pneumoniamnist" else SEGMENTATION
        for seed in args.seeds:
            for method in args.methods or methods:
                if method not in methods:
                    continue
                out = runs / dataset / f"{method}-{seed}"
                if dataset == "pneumoniamnist":
                    overrides = [
                        "data=pneumoniamnist", f"task={methods[method]}", f"data.label_fraction={args.fraction}",
                        "data.batch_size=16", f"task.width={args.width}", "monitor.metric=val/loss", "monitor.mode=min",
                        f"task.threshold={args.threshold}",
                        f"trainer.max_epochs={args.supervised_epochs if method == 'supervised' else args.epochs}",
                        *([] if method == "supervised" else [f"data.unlabeled_ratio={args.unlabeled_ratio}", *semi_steps]),
                    ]
                else:
                    datalist, unlabeled = isbi_split(Path(args.data_dir), seed, runs / dataset / f"split-{seed}")
                    overrides = [
                        "data=datalist", f"data.source.path={datalist}", f"+data.source.base_dir={Path(args.data_dir) / 'isbi2012_em_membrane'}", "data.source.spatial_dims=2", "+data.source.val_split=0",
                        "data.binarize_mask=true", f"data.image_size={args.seg_size}", "data.batch_size=2",
                        f"task={methods[method]}", f"+trainer.max_steps={args.seg_steps}", "trainer.max_epochs=-1", "monitor.metric=null", "+trainer.limit_val_batches=0",
                        "+data.unlabeled_source._target_=workbench.data.ArchiveSource", f"+data.unlabeled_source.root={unlabeled}",
                    ]
                metrics = run_stage(train, "train", [*common, *overrides, f"seed={seed}"], out)
                record = {"dataset": dataset, "method": method, "seed": seed, "train_seconds": metrics["train_seconds"],
                          "labeled_images": metrics["labeled_images"]}
                record.update({"auc": metrics["test/auc"], "acc": metrics["test/acc"]} if dataset == "pneumoniamnist" else {"dice": metrics["test/dice"]})
                records.append(record)
                print(json.dumps(record), flush=True)
                out_path = Path(args.out)  # rewritten after every run, so a stopped benchmark keeps what it measured
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps({"config": vars(args), "records": records}, indent=2) + "\n")

    print("\n| dataset | method | metric (mean ± std over seeds) |\n|---|---|---|")
    for dataset, method in dict.fromkeys((r["dataset"], r["method"]) for r in records):
        rows = [r for r in records if (r["dataset"], r["method"]) == (dataset, method)]
        keys = ("auc", "acc") if dataset == "pneumoniamnist" else ("dice",)
        text = ", ".join(f"{k} {mean_sd([r[k] for r in rows])}" for k in keys)
        print(f"| {dataset} | {method} | {text} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
