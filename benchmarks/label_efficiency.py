"""How many labels does each recipe save, on any dataset? The pipeline per label fraction (or
k-shot), recipe and seed, every recipe beside supervised-only under the same protocol.

    python benchmarks/label_efficiency.py --dataset pneumoniamnist --fractions 0.01 0.1 --workers 1
    python benchmarks/label_efficiency.py --npz ../shared/data/retinamnist/retinamnist.npz --fractions 0.1
    python benchmarks/label_efficiency.py --npz ../shared/data/vesselmnist3d/vesselmnist3d.npz --fractions 0.1
    python benchmarks/label_efficiency.py --datalist ../shared/data/msd_hippocampus/dataset.json --fractions 0.1 --image-size 32

The data: `--dataset` (a configs/data option), `--npz` (any MedMNIST-style file: 2D or 3D, gray
or RGB, two or more classes; AUC is macro one-vs-rest for more than two) or `--datalist` (a
Decathlon-style segmentation datalist; Dice; the test split is a fixed seeded share of the
volumes, the same for every seed, recorded in each run's split.json).

The protocol: a recipe sees labels only within its budget, the test split is scored once at the
end, 3 seeds. `--selection cv` (the default): the budget's labeled images (the labeled and val
subsets together, the pool) are split into `--folds` folds; one model per fold trains on the
others for a fixed budget in optimizer steps, never selected on the fold it predicts; the fold
models are tested as one ensemble, and the pooled held-out predictions give an out-of-fold
estimate (`oof_auc` / `oof_dice`) that needs no test split. `--selection val` selects each
model on the val subset (after the first quarter of its budget); `--selection last` tests the
last step. Budgets are in optimizer steps (`--finetune-steps`, `--semi-steps`,
`--pretrain-steps`), so a recipe means the same training on 500 or 50,000 images; the `--*-epochs`
options budget in epochs instead (the GPU script's).

Recipes (`--recipes`): supervised (the baseline), byol+finetune (BYOL pretraining on every
training image with labels hidden, then the labeled images finetune the backbone at
`--backbone-lr-scale`), byol+probe (a linear head on the frozen, standardised BYOL features),
byol+fixmatch and byol+lp-ft+fixmatch (FixMatch from the BYOL backbone), and for segmentation
byol+finetune (BYOL of the segmentation UNet's own encoder, loaded into the UNet), mean_teacher
and cps. One pretraining per seed serves every fraction and fold (the stage cache);
`--pretrained RUN` hands every seed an existing one.

Writes `results/label_efficiency_<dataset>.json` as {"config": ..., "records": [...]}, a record
per setting, recipe and seed (dataset, task, fraction or k_shot, labeled_images, recipe, seed,
auc and acc or dice, oof_auc or oof_dice, train_seconds), and the report with its plots (the
MedMNIST v2 full-label lines for MedMNIST sets). Runs under `--runs` (not tracked).
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
from common import add_threshold_argument, add_trainer_argument, mean_sd, run_stage, trainer_overrides

from workbench.evaluation.report import write_report
from workbench.models.pretrained import PretrainedBackbone
from workbench.pipeline import pipeline
from workbench.stages import quoted_list

RESULTS = Path(__file__).parent / "results"
CLASSIFICATION_RECIPES = ["supervised", "byol+fixmatch", "byol+probe", "byol+finetune", "byol+lp-ft+fixmatch"]
SEGMENTATION_RECIPES = ["supervised", "byol+finetune", "mean_teacher", "cps"]


def pretrain_epochs(metrics: dict) -> int | None:
    """The epochs the recipe's own pretraining stage reached (fewer than asked where
    --pretrain-max-time cut it); None for a recipe without one."""
    stage = metrics["stages"].get("pretrain")
    return json.loads((Path(stage["run_dir"]) / "metrics.json").read_text())["epochs"] if stage else None


def data_of(args: argparse.Namespace) -> tuple[str, str, list[str], int]:
    """(dataset name, task, the data overrides every stage takes, image side in pixels)."""
    if args.npz:
        path = Path(args.npz).resolve()
        with np.load(path, mmap_mode="r") as npz:
            shape = npz["train_images"].shape  # (N, H, W), (N, H, W, 3) or (N, D, H, W)
        spatial_dims = 3 if len(shape) == 4 and shape[-1] not in (1, 3) else 2
        return path.stem, "classification", ["dataset=medmnist", f"data.source.path={path}", f"data.source.spatial_dims={spatial_dims}"], shape[1]
    if args.datalist:
        path = Path(args.datalist).resolve()
        # The test volumes are one seeded share for every seed; only the labeled draw and training vary.
        # Resized whole to --image-size, or at native resolution: --patch-size patches of volumes resampled to --spacing.
        size = ([f"data.image_size={args.image_size}"] if not args.patch_size else
                ["data.image_size=null", f"data.volume.patch_size={args.patch_size}", f"data.volume.spacing={f'[{args.spacing},{args.spacing},{args.spacing}]' if args.spacing else 'null'}"])
        overrides = ["dataset=datalist", f"data.source.path={path}", "data.source.split_seed=0", *size, "task_kind=segmentation"]
        return path.parent.name, "segmentation", overrides, args.patch_size or args.image_size
    return args.dataset, "classification", [f"dataset={args.dataset}"], args.image_size


def budget(steps: int | None, epochs: int | None) -> list[str]:
    """Trainer overrides for a budget in epochs where given, else in optimizer steps."""
    return [f"trainer.max_epochs={epochs}"] if epochs else ["trainer.max_epochs=-1", f"trainer.max_steps={steps}"]


def recipes_for(args: argparse.Namespace, task: str, side: int) -> dict[str, dict]:
    """Each recipe as pipeline overrides: the recipe config and its stages' overrides."""
    threshold = [f"task.threshold={args.threshold}"] if task == "classification" else []
    finetune_budget = budget(args.finetune_steps, args.supervised_epochs)
    # BYOL of a ResNet at --width for classification; of the segmentation UNet's own encoder (the
    # task's default channels, which the baseline keeps too) for segmentation.
    pretrain = ["ssl=byol", f"ssl.width={args.width if task == 'classification' else 1.0}", *budget(args.pretrain_steps, args.pretrain_epochs),
                f"data.batch_size={args.pretrain_batch}", f"data.pretrain_views.size={side}",
                f"data.label_fraction={args.pretrain_monitor_fraction or min(args.fractions or [1.0])}",
                *(["data.pretrain_views.on_device=true", "data.cache=memory"] if args.on_device_views else []),
                *([f"trainer.max_time={args.pretrain_max_time}"] if args.pretrain_max_time else []),
                *([f"trainer.check_val_every_n_epoch={args.pretrain_every}", f"callbacks.last_checkpoint.every_n_epochs={args.pretrain_every}"]
                  if args.pretrain_every > 1 else [])]
    supervised = [f"task.width={args.width}", *threshold, "data.batch_size=16", *finetune_budget]
    semi = ["task=fixmatch", *threshold, f"task.backbone_lr_scale={args.backbone_lr_scale or 0.1}", "data.batch_size=16",
            f"data.unlabeled_ratio={args.mu}", f"task.ema_decay={args.ema_decay or 'null'}",
            *(["task.distribution_alignment=true"] if args.distribution_alignment else []),
            *(["data.unlabeled_views.on_device=true", "data.cache=memory"] if args.on_device_views else []),
            *(budget(args.semi_steps, None) if not args.semi_epochs else
              [f"trainer.max_epochs={args.semi_epochs}", *([] if args.limit_batches else [f"+trainer.limit_train_batches={args.steps_per_epoch}"])])]
    # Each recipe is its own pipeline and `supervised` is the baseline: no recipe runs one beside it.
    # With --pretrained the byol recipes skip their pretraining stage and are handed that backbone
    # the way the pipeline hands over its own.
    given = PretrainedBackbone.from_run_dir(Path(args.pretrained).resolve()).to_overrides() if args.pretrained else []
    byol = {"stages.pretrain": None if given else pretrain, "stages.baseline": None}
    if task == "segmentation":
        net = ["task=segmentation", "data.batch_size=4", *finetune_budget]
        return {
            "supervised": {"recipe": "supervised", "stages.finetune": net},
            "byol+finetune": {"recipe": "ssl", **byol, "stages.finetune": [*net, *given, f"task.backbone_lr_scale={args.backbone_lr_scale or 1.0}"]},
            "mean_teacher": {"recipe": "semi", "stages.finetune": ["task=seg_mean_teacher", *net[1:]], "stages.baseline": None},
            "cps": {"recipe": "semi", "stages.finetune": ["task=cps", *net[1:]], "stages.baseline": None},
        }
    recipes = {
        "supervised": {"recipe": "supervised", "stages.finetune": supervised},
        "byol+fixmatch": {"recipe": "semi", **byol, "stages.finetune": [*semi, *given]},
        "byol+probe": {"recipe": "ssl", **byol, "stages.finetune": [*supervised, *given, "task.freeze_backbone=true"]},
        "byol+finetune": {"recipe": "ssl", **byol, "stages.finetune": [*supervised, *given, f"task.backbone_lr_scale={args.backbone_lr_scale or 0.1}"]},
        "byol+lp-ft+fixmatch": {"recipe": "semi", **byol, "stages.finetune": [*semi, *given, f"task.head_only_epochs={args.head_only_epochs}"]},
    }
    for name in set(args.head_norm) & set(recipes):
        recipes[name]["stages.finetune"] = [*recipes[name]["stages.finetune"], "task.head_norm=true"]
    return recipes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--dataset", default="pneumoniamnist", help="a configs/data option")
    data.add_argument("--npz", default=None, help="a MedMNIST-style .npz (2D/3D, gray/RGB, binary/multi-class)")
    data.add_argument("--datalist", default=None, help="a Decathlon-style segmentation datalist (dataset.json)")
    parser.add_argument("--image-size", type=int, default=28, help="pixels per side (--dataset: its images'; --datalist: resized to)")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="--datalist at native resolution: patches of this side (data.volume) instead of resizing to --image-size")
    parser.add_argument("--spacing", type=float, default=None, help="with --patch-size: resample the volumes to this voxel size (mm)")
    parser.add_argument("--fractions", nargs="*", type=float, default=[0.01, 0.1])
    parser.add_argument("--k-shots", nargs="*", type=int, default=[], help="labeled images per class, beside or instead of --fractions")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--selection", choices=["cv", "val", "last"], default="cv")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--width", type=float, default=0.5, help="ResNet-18 channel multiplier")
    parser.add_argument("--finetune-steps", type=int, default=300, help="optimizer steps of the supervised, probe and finetune recipes")
    parser.add_argument("--semi-steps", type=int, default=400, help="optimizer steps of the FixMatch recipes")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="optimizer steps of each BYOL pretraining")
    parser.add_argument("--supervised-epochs", type=int, default=None, help="budget the supervised, probe and finetune recipes in epochs instead")
    parser.add_argument("--semi-epochs", type=int, default=None, help="budget FixMatch in epochs of --steps-per-epoch steps instead")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="budget each pretraining in epochs instead")
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--pretrain-batch", type=int, default=128)
    parser.add_argument("--pretrain-monitor-fraction", type=float, default=None,
                        help="the labeled subset of the pretraining's online monitoring (default: the smallest --fractions); fix it when "
                             "processes of different --fractions share pretrainings through the stage cache")
    parser.add_argument("--pretrain-every", type=int, default=1,
                        help="the pretraining's online evaluation and last.ckpt every this many epochs (per-epoch costs add up over long GPU runs)")
    parser.add_argument("--pretrain-max-time", default=None, metavar="DD:HH:MM:SS",
                        help="stop each pretraining after this long and export what it reached (trainer.max_time)")
    parser.add_argument("--on-device-views", action="store_true",
                        help="BYOL's and FixMatch's views drawn per batch on the training device, the images cached in memory")
    parser.add_argument("--mu", type=int, default=2, help="FixMatch's unlabeled images per labeled one in a batch (data.unlabeled_ratio; the paper's 7)")
    parser.add_argument("--backbone-lr-scale", type=float, default=None,
                        help="the pretrained backbone's learning rate as a fraction of the head's in the finetuning recipes "
                             "(default: the recipe's, 0.1 for classifiers and 1.0 for a segmentation UNet's encoder)")
    parser.add_argument("--head-only-epochs", type=int, default=5,
                        help="recipe byol+lp-ft+fixmatch (LP-FT): FixMatch trains the head alone this many epochs before the backbone joins")
    parser.add_argument("--ema-decay", type=float, default=None, help="the FixMatch recipes validate, test and export an EMA of their weights")
    parser.add_argument("--distribution-alignment", action="store_true", help="the FixMatch recipes align pseudo-labels to the labeled class prior")
    parser.add_argument("--head-norm", nargs="*", default=["byol+probe"], choices=CLASSIFICATION_RECIPES, metavar="RECIPE",
                        help="these recipes standardise the features before their linear head; `--head-norm` with no recipe turns it off")
    parser.add_argument("--recipes", nargs="+", default=None, choices=CLASSIFICATION_RECIPES + SEGMENTATION_RECIPES[2:],
                        help="default: supervised and byol+finetune (the recommended recipe, for either task)")
    parser.add_argument("--members", type=int, default=1,
                        help="with --selection val, also score each recipe as an ensemble of this many finetunes (recipe '<name>+ens<K>')")
    parser.add_argument("--pretrained", default=None, help="a `workbench pretrain` run that the byol recipes finetune from (every seed shares it)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--limit-batches", type=int, default=None, help="smoke test: this many training batches per epoch")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="run nothing: gather the records of earlier runs' --out files (the same --runs) into --out, the report and the plots")
    parser.add_argument("--out", default=None, help="default: results/label_efficiency_<dataset>.json")
    parser.add_argument("--runs", default=None, help="default: results/label_efficiency_runs/<dataset>")
    add_threshold_argument(parser)
    add_trainer_argument(parser)
    args = parser.parse_args()
    if args.pretrained and not (Path(args.pretrained) / "backbone.json").is_file():
        parser.error(f"--pretrained {args.pretrained}: no backbone.json there; expected a `workbench pretrain` run directory")
    if args.k_shots and args.selection == "cv":
        parser.error("--k-shots: a k-shot pool for cross-validation is not drawn yet; use --selection val or last")
    if args.members > 1 and args.selection == "cv":
        parser.error("--members: cross-validation already ensembles its fold models; use --selection val")
    return args


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    dataset, task, data, side = data_of(args)
    available = recipes_for(args, task, side)
    names = args.recipes or ["supervised", "byol+finetune"]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"error: --recipes {' '.join(unknown)}: not a {task} recipe; expected some of {sorted(available)}")
    recipes = {name: available[name] for name in names}
    runs = Path(args.runs or RESULTS / "label_efficiency_runs" / dataset)
    out = Path(args.out or RESULTS / f"label_efficiency_{dataset}.json")
    limit = [f"+trainer.limit_train_batches={args.limit_batches}"] if args.limit_batches else []
    monitor = ["monitor.metric=val/loss", "monitor.mode=min"] if task == "classification" else []
    common = [*data[1:], f"data.num_workers={args.workers}", "logger=csv", *monitor, *limit, *trainer_overrides(args)]
    # The pipeline selects by cv or val; `last` is each finetune run's own selection=last.
    selection = ["selection=cv", f"folds={args.folds}"] if args.selection == "cv" else ["selection=val"]

    def save(records: list[dict]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": vars(args), "records": records}, indent=2) + "\n")

    records = []
    if args.merge:  # one record per setting, recipe and seed: a stage reused from the cache repeats its record
        merged = {(r.get("fraction"), r.get("k_shot"), r["recipe"], r["seed"]): r for f in args.merge for r in json.loads(Path(f).read_text())["records"]}
        records = sorted(merged.values(), key=lambda r: (r.get("fraction") or 0, r.get("k_shot") or 0, r["recipe"], r["seed"]))
        save(records)
    settings = [("fraction", f) for f in args.fractions] + [("k_shot", k) for k in args.k_shots]
    # The single model first: it is an ensemble's member 0, which the stage cache then reuses.
    variants = [(name, recipe, members) for name, recipe in recipes.items() for members in sorted({1, args.members})]
    for kind, value in [] if args.merge else settings:
        budget_overrides = [f"label_fraction={value}"] if kind == "fraction" else []
        shot = [f"data.k_shot={value}"] if kind == "k_shot" else []
        for seed in args.seeds:
            for recipe_name, recipe, members in variants:
                name = recipe_name if members == 1 else f"{recipe_name}+ens{members}"
                finetune = [*recipe["stages.finetune"], *(["selection=last"] if args.selection == "last" else [])]
                stages = {**recipe, "stages.finetune": finetune}
                overrides = [
                    data[0], f"paths.data_dir={args.data_dir}", *budget_overrides, f"seed={seed}",
                    f"common={quoted_list([*common, *shot])}", f"cache_dir={runs / 'stages'}", f"recipe={recipe['recipe']}",
                    f"recipe_name={name}", f"members={members}", *selection,
                    *[f"{k}={'null' if v is None else quoted_list(v)}" for k, v in stages.items() if k.startswith("stages.")],
                ]
                metrics = run_stage(pipeline, "pipeline", overrides, runs / f"{name}-{kind}{value}-{args.selection}-{seed}")
                scores = ({"auc": metrics["test/auc"], "acc": metrics["test/acc"], "oof_auc": metrics.get("oof/auc")}
                          if task == "classification" else {"dice": metrics["test/dice"], "oof_dice": metrics.get("oof/dice")})
                record = {"dataset": dataset, "task": task, kind: value, "labeled_images": metrics["labeled_images"], "recipe": name,
                          "seed": seed, **scores, "train_seconds": metrics["train_seconds"], "pretrain_epochs": pretrain_epochs(metrics)}
                records.append(record)
                print(json.dumps(record), flush=True)
                save(records)

    report = write_report(runs, dataset=dataset, baselines=Path(args.data_dir) / "medmnist_v2_baselines.md")
    for plot in sorted(runs.glob("label_efficiency_*.png")):  # named after --out, so another run's plots stay
        copy = out.with_name(plot.name.replace("label_efficiency", out.stem, 1))
        if plot.resolve() != copy.resolve():
            shutil.copy(plot, copy)
    metric, estimate = ("auc", "oof_auc") if task == "classification" else ("dice", "oof_dice")
    print(f"\n| setting | recipe | test {metric.upper()} | out-of-fold {metric.upper()} | labeled |\n|---|---|---|---|---|")
    for setting, name in dict.fromkeys((r.get("fraction", r.get("k_shot")), r["recipe"]) for r in records):
        rows = [r for r in records if (r.get("fraction", r.get("k_shot")), r["recipe"]) == (setting, name)]
        oof = [r[estimate] for r in rows if r.get(estimate) is not None]
        print(f"| {setting} | {name} | {mean_sd([r[metric] for r in rows])} | {mean_sd(oof) if oof else ''} | {rows[0]['labeled_images']} |")
    print(f"wrote {out} and {report}")


if __name__ == "__main__":
    main()
