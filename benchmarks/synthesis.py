"""How good and how useful are synthetic PneumoniaMNIST images?

1. Feature network for FID/KID/precision-recall: a ResNet-18 classifier trained on the real
   training images (`workbench train`, its exported backbone.pt); no download.
2. A class-conditional DDPM (DDIM-50 sampling, guidance 2) and a conditional DCGAN with
   DiffAugment trained on the real training images (`workbench synthesize`), each exporting
   `--per-class` images per class, with FID against the real test split and the memorisation
   audit against the training images.
3. Train on synthetic, test on real (TSTR): the same classifier trained on each synthetic set
   alone, selected on the real val split, tested once on the real test split; beside it the
   same classifier on as many real images (TRTR), the ceiling.
4. DDIM with 50 steps against DDPM with 1000 steps on the same diffusion model and seed, for
   `--compare-per-class` images per class: sampling wall time and FID, beside the FID of as
   many real training images (mean ± std over 10 draws): FID is biased upward for small sets,
   and two equally good sets differ by about that std, so a gap smaller than it is not a finding.

    python benchmarks/synthesis.py

Writes benchmarks/results/synthesis.json (the issue's keys plus the details) and
synthesis_samples.png (named after `--out`; diffusion samples above, GAN samples below, one
row per class); runs go to benchmarks/results/synthesis_runs/ (not tracked). Finished runs are
reused.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from common import add_trainer_argument, run_stage, trainer_overrides
from torchvision.utils import save_image

from workbench.generate import generate
from workbench.synthesize import synthesize
from workbench.train import train

RESULTS = Path(__file__).parent / "results"
TRAIN_IMAGES = 4708  # PneumoniaMNIST's training split


def load_images(export: Path, per_class: int, classes: int = 2) -> torch.Tensor:
    """The first `per_class` images of each class of an export, as (N, 1, H, W) in [0, 1]."""
    import csv

    import numpy as np
    from PIL import Image

    rows = list(csv.DictReader(open(export / "labels.csv")))
    stored = json.loads((export / "manifest.json").read_text())["stored_range"]
    picked = [r for c in range(classes) for r in [r for r in rows if int(r["label"]) == c][:per_class]]
    arrays = [np.asarray(Image.open(export / r["image"]), dtype=np.float64) / stored[1] for r in picked]
    return torch.tensor(np.stack(arrays), dtype=torch.float32)[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=250, help="synthetic images per class for FID and TSTR")
    parser.add_argument("--compare-per-class", type=int, default=32, help="images per class for DDIM-50 vs DDPM-1000")
    parser.add_argument("--diffusion-epochs", type=int, default=12)
    parser.add_argument("--gan-epochs", type=int, default=20)
    parser.add_argument("--feature-epochs", type=int, default=3)
    parser.add_argument("--tstr-epochs", type=int, default=30)
    parser.add_argument("--width", type=float, default=0.5, help="ResNet-18 channel multiplier (feature network, TSTR)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--limit-batches", type=int, default=None, help="smoke test: this many training batches per epoch")
    parser.add_argument("--out", default=str(RESULTS / "synthesis.json"))
    parser.add_argument("--runs", default=str(RESULTS / "synthesis_runs"), help="where the runs go (reused when finished)")
    add_trainer_argument(parser)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    runs = Path(args.runs)
    common = [f"paths.data_dir={args.data_dir}", f"data.num_workers={args.workers}", "logger=csv", f"seed={args.seed}", *trainer_overrides(args)]
    if args.limit_batches:
        common.append(f"+trainer.limit_train_batches={args.limit_batches}")
    classifier = [f"task.width={args.width}", "data.val_fraction=1.0", "monitor.metric=val/loss", "monitor.mode=min"]

    # 1. The feature network: a classifier on the real training images.
    features = run_stage(train, "train", [*common, "data=pneumoniamnist", *classifier, f"trainer.max_epochs={args.feature_epochs}"],
                         runs / "feature_network")
    quality = ["generate.reference=test", f"generate.features={features['backbone']}", f"generate.n_per_class={args.per_class}"]

    # 2. The generators, each exporting its synthetic set.
    diffusion = run_stage(synthesize, "synthesize", [
        *common, "data=pneumoniamnist", "data.batch_size=64", "generator=ddpm", "generator.channels=[32,64,64]",
        "generator.attention_levels=[false,false,true]", "generator.norm_num_groups=16", "generator.lr=5e-4",
        f"trainer.max_epochs={args.diffusion_epochs}",
        "callbacks.sample_grid.every_n_epochs=4", *quality,
    ], runs / "diffusion")
    # DDIM-50 against DDPM-1000 on the same model, seed and images per class (guidance 1:
    # plain conditional sampling, so each step is one network pass); right after training, so
    # an interrupted run still has it.
    compare = {}
    for sampler, steps in (("ddim", 50), ("ddpm", 1000)):
        compare[sampler] = run_stage(generate, "generate", [
            f"run_dir={diffusion['run_dir']}", f"generate.sampler={sampler}", f"generate.steps={steps}", "generate.guidance=1.0",
            f"generate.n_per_class={args.compare_per_class}", "generate.reference=test", f"generate.features={features['backbone']}",
            f"generate.seed={args.seed}", f"paths.data_dir={args.data_dir}",
        ], runs / f"compare_{sampler}{steps}")

    gan = run_stage(synthesize, "synthesize", [
        *common, "data=pneumoniamnist", "data.batch_size=64", "generator=dcgan", f"trainer.max_epochs={args.gan_epochs}",
        "callbacks.sample_grid.every_n_epochs=5", *quality,
    ], runs / "gan")

    # 3. TSTR on each synthetic set, and TRTR on as many real images.
    fit = [*common, *classifier, f"trainer.max_epochs={args.tstr_epochs}", "data.batch_size=32"]
    tstr = {
        name: run_stage(train, "train", [*fit, "data=synthetic", f"data.source.path={run['synthetic']}"], runs / f"tstr_{name}")
        for name, run in (("diffusion", diffusion), ("gan", gan))
    }
    fraction = round(2 * args.per_class / TRAIN_IMAGES, 6)
    trtr = run_stage(train, "train", [*fit, "data=pneumoniamnist", f"data.label_fraction={fraction}"], runs / "trtr_real")

    results = {
        "fid_diffusion": diffusion["quality/fid"],
        "fid_gan": gan["quality/fid"],
        "tstr_auc_diffusion": tstr["diffusion"]["test/auc"],
        "tstr_auc_gan": tstr["gan"]["test/auc"],
        "memorized_fraction": diffusion["quality/memorized_fraction"],
        "ddim50_speedup_vs_ddpm1000": compare["ddpm"]["sampling_seconds"] / compare["ddim"]["sampling_seconds"],
        "fid_ddim50": compare["ddim"]["quality/fid"],
        "fid_ddpm1000": compare["ddpm"]["quality/fid"],
        "details": {
            "memorized_fraction_gan": gan["quality/memorized_fraction"],
            "tstr_acc_diffusion": tstr["diffusion"]["test/acc"],
            "tstr_acc_gan": tstr["gan"]["test/acc"],
            "trtr_auc_same_count": trtr["test/auc"],
            "trtr_acc_same_count": trtr["test/acc"],
            "feature_network_test_auc": features["test/auc"],
            **{f"{name}_{k.split('/')[1]}": run[k] for name, run in (("diffusion", diffusion), ("gan", gan))
               for k in ("quality/kid", "quality/precision", "quality/recall", "quality/ms_ssim_synthetic", "quality/ms_ssim_real")},
            "diffusion_train_seconds": diffusion["train_seconds"],
            "gan_train_seconds": gan["train_seconds"],
            "ddim50_seconds": compare["ddim"]["sampling_seconds"],
            "ddpm1000_seconds": compare["ddpm"]["sampling_seconds"],
            "compare_images": 2 * args.compare_per_class,
            # FID of as many real training images: the floor at this size and its chance spread.
            "compare_fid_real_same_size": compare["ddim"].get("quality/fid_real_same_size"),
            "compare_fid_real_same_size_std": compare["ddim"].get("quality/fid_real_same_size_std"),
            "synthetic_images_per_set": 2 * args.per_class,
            "config": vars(args),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    rows = [load_images(Path(run["synthetic"]), 10) for run in (diffusion, gan)]
    save_image(torch.cat(rows), out.with_name(f"{out.stem}_samples.png"), nrow=10, padding=1)

    print("\n| quantity | value |\n|---|---|")
    for key, value in results.items():
        if key != "details":
            print(f"| {key} | {value:.4f} |")
    print(f"| TRTR AUC ({2 * args.per_class} real images) | {trtr['test/auc']:.4f} |")
    floor = results["details"]["compare_fid_real_same_size"]
    if floor is not None:
        spread = results["details"]["compare_fid_real_same_size_std"]
        print(f"| FID of {2 * args.compare_per_class} real images (floor ± chance spread) | {floor:.4f} ± {spread:.4f} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
