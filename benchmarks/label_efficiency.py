"""How many labels does each recipe save on PneumoniaMNIST? The pipeline at 1% and 10% of the
labels, 3 seeds, supervised-only against the combined recipe chosen beforehand from the SSL and
semi-supervised benchmarks: BYOL pretraining, then FixMatch from the pretrained backbone, which
learns at a tenth of the head's rate (ssl_probe.py showed full-rate finetuning erasing what the
frozen features knew). One protocol: every stage sees labels only within the budget (model
selection by val loss on a stratified subset of the official val split at the same fraction;
the decision threshold from the labeled class prior matched on the unlabeled training images),
and the test split is scored once, at the end.

    python benchmarks/label_efficiency.py --workers 1

`--recipes` adds `byol+probe` (a linear head on the frozen BYOL backbone's standardised
features, trained on the labeled images alone; on the GPU the frozen features probed better
than finetuning; `--head-norm` names the recipes that standardise),
`byol+lp-ft+fixmatch` (FixMatch trains the head alone for `--head-only-epochs` first) and
`byol+finetune` (the labeled images alone finetune the BYOL backbone at `--backbone-lr-scale`,
the usual SSL evaluation, as supervised-only trains).
`--pretrained RUN` hands the byol recipes an existing pretraining instead of one per seed.
`--members K` adds each recipe scored as an ensemble of K finetunes on the same labels
(`<recipe>+ens<K>`, the pipeline's `members=K`; its train_seconds leave out member 0, the
single model's run, which the stage cache reuses).
`--ema-decay D` tests an EMA of the FixMatch weights; `--selection last` tests the last epoch
instead of selecting on the val subset (neither helped on CPU; benchmarks/README.md);
`--distribution-alignment` aligns FixMatch's pseudo-labels to the labeled class prior.
`--on-device-views` draws BYOL's and FixMatch's views per batch on the training device, which a
GPU needs to train at more than the DataLoader workers' pace (benchmarks/on_device_views.py).

The pretraining stage is given the smallest fraction's labeled view for its online monitoring
(nothing is selected on it: the last epoch is exported; `--pretrain-monitor-fraction` fixes it),
so one pretraining per seed serves every fraction through the pipeline's stage cache, also
across processes (benchmarks/gpu_label_efficiency.sh runs one per seed and fraction, then
`--merge` gathers their records). Writes benchmarks/results/label_efficiency.json
(a record per fraction, recipe and seed: fraction, recipe, seed, auc, acc, train_seconds) and
label_efficiency_auc.png / _acc.png with the MedMNIST v2 full-label lines (ResNet-18 (28),
Google AutoML Vision); runs under benchmarks/results/label_efficiency_runs/ (not tracked).
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path

from common import add_threshold_argument, add_trainer_argument, mean_sd, run_stage, trainer_overrides

from workbench.evaluation.report import write_report
from workbench.pipeline import pipeline, wiring

RESULTS = Path(__file__).parent / "results"
RECIPES = ["supervised", "byol+fixmatch", "byol+probe", "byol+finetune", "byol+lp-ft+fixmatch"]


def quoted(items: list[str]) -> str:
    return "[" + ",".join(f"'{i}'" for i in items) + "]"


def pretrain_epochs(metrics: dict) -> int | None:
    """The epochs the recipe's own pretraining stage reached (fewer than asked where
    --pretrain-max-time cut it); None for a recipe without one."""
    stage = metrics["stages"].get("pretrain")
    return json.loads((Path(stage["run_dir"]) / "metrics.json").read_text())["epochs"] if stage else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--width", type=float, default=0.5, help="ResNet-18 channel multiplier")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--pretrain-batch", type=int, default=128)
    parser.add_argument("--pretrain-monitor-fraction", type=float, default=None,
                        help="the labeled view of the pretraining's online monitoring (default: the smallest --fractions); fix it when "
                             "processes of different --fractions share pretrainings through the stage cache")
    parser.add_argument("--pretrain-every", type=int, default=1,
                        help="the pretraining's online evaluation and last.ckpt every this many epochs (per-epoch costs add up over long GPU runs)")
    parser.add_argument("--pretrain-max-time", default=None, metavar="DD:HH:MM:SS",
                        help="stop each pretraining after this long and export what it reached (trainer.max_time): a GPU lease has "
                             "a fixed length, and a cut pretraining beats none; its records give the epochs reached")
    parser.add_argument("--on-device-views", action="store_true",
                        help="BYOL's and FixMatch's views drawn per batch on the training device (data.pretrain_views.on_device, "
                             "data.unlabeled_views.on_device), the images cached in memory")
    parser.add_argument("--supervised-epochs", type=int, default=40)
    parser.add_argument("--semi-epochs", type=int, default=8, help="semi-supervised epochs of --steps-per-epoch steps")
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--mu", type=int, default=2, help="FixMatch's unlabeled images per labeled one in a batch (data.unlabeled_ratio; the paper's 7)")
    parser.add_argument("--backbone-lr-scale", type=float, default=0.1,
                        help="the pretrained backbone's learning rate as a fraction of the head's in the finetuning recipes")
    parser.add_argument("--head-only-epochs", type=int, default=5,
                        help="recipe byol+lp-ft+fixmatch (LP-FT): FixMatch trains the head alone this many epochs before the backbone joins")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="the FixMatch recipes validate, test and export an EMA of their weights (task.ema_decay)")
    parser.add_argument("--distribution-alignment", action="store_true",
                        help="the FixMatch recipes align pseudo-labels to the labeled class prior (task.distribution_alignment)")
    parser.add_argument("--head-norm", nargs="*", default=["byol+probe"], choices=RECIPES, metavar="RECIPE",
                        help="these recipes standardise the features before their linear head (task.head_norm, MAE's probe); "
                             "`--head-norm` with no recipe turns it off")
    parser.add_argument("--selection", choices=["val_loss", "last"], default="val_loss",
                        help="the checkpoint each recipe tests: lowest loss on its in-budget val subset, or the last epoch (no selection)")
    parser.add_argument("--recipes", nargs="+", default=["supervised", "byol+fixmatch"],
                        choices=RECIPES,
                        help="byol+probe: a linear head on the frozen BYOL backbone, trained on the labeled images alone")
    parser.add_argument("--members", type=int, default=1,
                        help="also score each recipe as an ensemble of this many finetunes on the same labels (recipe '<name>+ens<K>')")
    parser.add_argument("--pretrained", default=None,
                        help="a `workbench pretrain` run that the byol recipes finetune from, instead of pretraining per seed (every seed shares it)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--limit-batches", type=int, default=None, help="smoke test: this many training batches per epoch")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="run nothing: gather the records of earlier runs' --out files (the same --runs) into --out, the report and the plots")
    parser.add_argument("--out", default=str(RESULTS / "label_efficiency.json"))
    parser.add_argument("--runs", default=str(RESULTS / "label_efficiency_runs"))
    add_threshold_argument(parser)
    add_trainer_argument(parser)
    args = parser.parse_args()
    if args.pretrained and not (Path(args.pretrained) / "backbone.json").is_file():
        parser.error(f"--pretrained {args.pretrained}: no backbone.json there; expected a `workbench pretrain` run directory")
    warnings.filterwarnings("ignore")
    runs, out = Path(args.runs), Path(args.out)
    limit = [f"+trainer.limit_train_batches={args.limit_batches}"] if args.limit_batches else []
    selection = ["monitor.metric=val/loss", "monitor.mode=min"] if args.selection == "val_loss" else ["monitor.metric=null"]
    common = [f"data.num_workers={args.workers}", "logger=csv", *selection, *limit, *trainer_overrides(args)]
    pretrain = ["ssl=byol", f"ssl.width={args.width}", f"trainer.max_epochs={args.pretrain_epochs}", f"data.batch_size={args.pretrain_batch}",
                "data.pretrain_views.size=28", f"data.label_fraction={args.pretrain_monitor_fraction or min(args.fractions)}",
                *(["data.pretrain_views.on_device=true", "data.cache=memory"] if args.on_device_views else []),
                *([f"trainer.max_time={args.pretrain_max_time}"] if args.pretrain_max_time else []),
                *([f"trainer.check_val_every_n_epoch={args.pretrain_every}", f"callbacks.last_checkpoint.every_n_epochs={args.pretrain_every}"]
                  if args.pretrain_every > 1 else [])]
    threshold = f"task.threshold={args.threshold}"
    supervised = [f"task.width={args.width}", threshold, "data.batch_size=16", f"trainer.max_epochs={args.supervised_epochs}"]
    semi = ["task=fixmatch", threshold, f"task.backbone_lr_scale={args.backbone_lr_scale}", "data.batch_size=16",
            f"data.unlabeled_ratio={args.mu}", f"trainer.max_epochs={args.semi_epochs}", f"task.ema_decay={args.ema_decay or 'null'}",
            *(["task.distribution_alignment=true"] if args.distribution_alignment else []),
            *(["data.unlabeled_views.on_device=true", "data.cache=memory"] if args.on_device_views else []),
            *([] if args.limit_batches else [f"+trainer.limit_train_batches={args.steps_per_epoch}"])]
    # With --pretrained the byol recipes skip their pretraining stage and are handed that backbone
    # the way the pipeline hands over its own.
    given = wiring({"pretrain": {"run_dir": str(Path(args.pretrained).resolve())}}, None) if args.pretrained else []
    byol = {"stages.pretrain": None if given else pretrain, "stages.baseline": None}
    recipes = {
        "supervised": {"recipe": "supervised", "stages.finetune": supervised},
        "byol+fixmatch": {"recipe": "semi", **byol, "stages.finetune": [*semi, *given]},
        "byol+probe": {"recipe": "ssl", **byol, "stages.finetune": [*supervised, *given, "task.freeze_backbone=true"]},
        "byol+finetune": {"recipe": "ssl", **byol, "stages.finetune": [*supervised, *given, f"task.backbone_lr_scale={args.backbone_lr_scale}"]},
        "byol+lp-ft+fixmatch": {"recipe": "semi", **byol, "stages.finetune": [*semi, *given, f"task.head_only_epochs={args.head_only_epochs}"]},
    }
    recipes = {name: recipes[name] for name in args.recipes}
    for name in set(args.head_norm) & set(recipes):
        recipes[name]["stages.finetune"] = [*recipes[name]["stages.finetune"], "task.head_norm=true"]

    def save(records: list[dict]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": vars(args), "records": records}, indent=2) + "\n")

    records = []
    if args.merge:  # one record per fraction, recipe and seed: a stage reused from the cache repeats its record
        merged = {(r["fraction"], r["recipe"], r["seed"]): r for f in args.merge for r in json.loads(Path(f).read_text())["records"]}
        records = sorted(merged.values(), key=lambda r: (r["fraction"], r["recipe"], r["seed"]))
        save(records)
    # The single model first: it is an ensemble's member 0, which the stage cache then reuses.
    variants = [(name, recipe, members) for name, recipe in recipes.items() for members in sorted({1, args.members})]
    for fraction in [] if args.merge else args.fractions:
        for seed in args.seeds:
            for recipe_name, recipe, members in variants:
                name = recipe_name if members == 1 else f"{recipe_name}+ens{members}"
                overrides = [
                    "dataset=pneumoniamnist", f"paths.data_dir={args.data_dir}", f"label_fraction={fraction}", f"seed={seed}",
                    f"common={quoted(common)}", f"cache_dir={runs / 'stages'}", f"recipe={recipe['recipe']}", f"recipe_name={name}",
                    f"members={members}", *[f"{k}={'null' if v is None else quoted(v)}" for k, v in recipe.items() if k.startswith("stages.")],
                ]
                run_dir = runs / f"{name}-{fraction}-{seed}"
                metrics = run_stage(pipeline, "pipeline", overrides, run_dir)
                record = {"fraction": fraction, "recipe": name, "seed": seed, "auc": metrics["test/auc"], "acc": metrics["test/acc"],
                          "train_seconds": metrics["train_seconds"], "labeled_images": metrics["labeled_images"],
                          "pretrain_epochs": pretrain_epochs(metrics)}
                records.append(record)
                print(json.dumps(record), flush=True)
                save(records)

    report = write_report(runs, dataset="pneumoniamnist", baselines=Path(args.data_dir) / "medmnist_v2_baselines.md")
    for plot in sorted(runs.glob("label_efficiency_*.png")):  # named after --out, so another run's plots stay
        copy = out.with_name(plot.name.replace("label_efficiency", out.stem, 1))
        if plot.resolve() != copy.resolve():
            shutil.copy(plot, copy)
    print("\n| fraction | recipe | test AUC | test ACC |\n|---|---|---|---|")
    for fraction, name in dict.fromkeys((r["fraction"], r["recipe"]) for r in records):
        rows = [r for r in records if (r["fraction"], r["recipe"]) == (fraction, name)]
        print(f"| {fraction} | {name} | {mean_sd([r['auc'] for r in rows])} | {mean_sd([r['acc'] for r in rows])} |")
    print(f"wrote {out} and {report}")


if __name__ == "__main__":
    main()
