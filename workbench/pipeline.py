"""`workbench pipeline`: one command that chains the stages of a recipe on one datamodule and
label budget: pretrain (ssl) -> synthesize (optional) -> finetune (supervised, semi-supervised or
few-shot) -> test on the real test split -> report, plus the supervised-only baseline under the
same protocol, so the report shows what the recipe bought.

Each stage is the command's own config (`workbench pretrain`, `synthesize`, `train`) composed
with the pipeline's shared overrides (`dataset`, label fraction, seed, `common`) and the recipe's
stage overrides. Its run directory is `cache_dir/<command>/<config hash>`: a stage already run
with the same config is reused, so reruns and sweeps (other fractions, other recipes sharing a
pretraining) do not redo work. The finetune stage is wired to the earlier ones: the pretrained
backbone (`task.pretrained` with its architecture and width) and the synthetic export
(`data.synthetic_source`, mixed in at `synthetic_ratio`).

`selection` says how the budget's labels choose the model: `val` (each model selected on the val
subset) or `cv` (one model per fold of the budget's pool, trained for a fixed budget, scored as
one ensemble, with the out-of-fold estimate `oof/*`); the baseline runs under the same one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from workbench.data.synthetic import SyntheticSet
from workbench.errors import WorkbenchError, first_line
from workbench.evaluate import evaluate
from workbench.evaluation.out_of_fold import out_of_fold_metrics, pooled
from workbench.evaluation.report import published_lines
from workbench.evaluation.report_figures import report_figures
from workbench.io import write_json_atomic, write_text_atomic
from workbench.models.pretrained import PretrainedBackbone
from workbench.pretrain import pretrain
from workbench.runner import command_line_overrides, hydra_entry
from workbench.runs import save_config, set_environment_defaults, write_run_summary
from workbench.stages import compose_stage, quoted_list, run_stage
from workbench.synthesize import synthesize
from workbench.train import train

TEST_KEYS = ("test/auc", "test/acc", "test/dice")
OOF_KEYS = ("oof/auc", "oof/acc", "oof/dice")  # cross-validation's estimate, from the pool alone
# Each stage of a recipe and the command whose config its overrides change.
STAGE_COMMANDS = {"pretrain": "pretrain", "synthesize": "synthesize", "finetune": "train", "baseline": "train"}
SELECTIONS = ("val", "cv")
TASKS = ("classification", "segmentation")


def overrides_of(node: Any, key: str) -> list[str] | None:
    """A stage's overrides: a list of `key=value` strings, or None to skip the stage."""
    if node is None:
        return None
    if not OmegaConf.is_list(node) and not isinstance(node, list):
        raise WorkbenchError(f"stages.{key}: expected a list of overrides like [task=fixmatch] or null, got {node!r}")
    return [str(o) for o in node]


def wiring(stages: dict[str, dict], synthetic_ratio: float | None) -> tuple[list[str], list[str]]:
    """Overrides that hand the earlier stages' artifacts to the finetune stage, and those the
    baseline shares with it (the pretrained backbone's architecture, without its weights)."""
    wired: list[str] = []
    architecture: list[str] = []
    if "pretrain" in stages:
        backbone = PretrainedBackbone.from_run_dir(stages["pretrain"]["run_dir"])
        wired += backbone.to_overrides()
        architecture = backbone.architecture_overrides()
    if "synthesize" in stages:
        wired += SyntheticSet.from_run(stages["synthesize"]).to_overrides(synthetic_ratio)
    return wired, architecture


def from_rank_zero(metrics: dict[str, Any]) -> dict[str, Any]:
    """Under DDP, every rank goes on with rank 0's metrics of a stage, once rank 0 has written its
    artifacts: only rank 0 exports, so the other ranks' own metrics lack the export's path."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shared = [metrics]
        torch.distributed.broadcast_object_list(shared, src=0)
        return shared[0]
    return metrics


def cached(cfg: DictConfig, command: Any, config_name: str, overrides: list[str]) -> dict[str, Any]:
    """One stage through the stage cache (`cache_dir`), its metrics as rank 0 has them."""
    same_code = not cfg.reuse_across_code_versions
    return from_rank_zero(run_stage(command, config_name, overrides, cache_dir=Path(cfg.cache_dir), same_code=same_code))


def stage_seconds(metrics: dict[str, Any]) -> float | None:
    """A stage's training time (pretraining reports it as pretrain_seconds)."""
    return metrics.get("train_seconds", metrics.get("pretrain_seconds"))


def stage_row(name: str, metrics: dict[str, Any]) -> str:
    if "members" in metrics:
        kind = "folds" if "out_of_fold" in metrics else "models"
        name = f"{name} (ensemble of {len(metrics['members'])} {kind})"
    shown = {k: v for k, v in metrics.items() if isinstance(v, float) and (k.startswith(("test/", "val/", "oof/", "quality/fid", "quality/memorized")))}
    seconds = stage_seconds(metrics)
    values = ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items()))
    took = "reused" if metrics.get("reused") else f"{seconds:.0f} s" if seconds is not None else ""
    if not metrics.get("reused") and "sampling_seconds" in metrics:  # the export, after training
        took += f" + {metrics['sampling_seconds']:.0f} s sampling"
    return f"| {name} | {values} | {took} | {metrics.get('run_dir', '')} |"


def pipeline_report(cfg: DictConfig, stages: dict[str, dict], summary: dict[str, Any]) -> str:
    lines = [
        f"# Pipeline: recipe {cfg.recipe_name} on {cfg.dataset}, {cfg.label_fraction:g} of the labels, seed {cfg.seed}", "",
        "| stage | metrics | time | run directory |", "|---|---|---|---|",
        *[stage_row(name, metrics) for name, metrics in stages.items()], "",
        f"Labeled images: {summary['labeled_images']}, in {len(stages['finetune']['members'])} cross-validation folds "
        "(each fold model trained on the others; the oof/* values are the pooled held-out predictions)."
        if cfg.selection == "cv" else
        f"Labeled training images: {summary['labeled_images']} (validation images for model selection: {summary['val_images']}).",
        *skipped_files_line(stages),
    ]
    if "baseline" in stages:
        lines += ["", "| test metric | recipe | supervised-only baseline | difference |", "|---|---|---|---|"]
        for key in (*TEST_KEYS, *OOF_KEYS):
            if key in stages["finetune"] and key in stages["baseline"]:
                mine, base = stages["finetune"][key], stages["baseline"][key]
                lines.append(f"| {key} | {mine:.4f} | {base:.4f} | {mine - base:+.4f} |")
    return "\n".join(lines) + "\n"


def skipped_files_line(stages: dict[str, dict]) -> list[str]:
    """A line for the unreadable files a stage skipped (`on_bad_file=skip`), from its split.json."""
    for metrics in stages.values():
        split = Path(metrics["run_dir"]) / "split.json"
        skipped = json.loads(split.read_text()).get("skipped_count") if split.is_file() else 0
        if skipped:
            return ["", f"Skipped unreadable files: {skipped} (on_bad_file=skip; all listed in {split})."]
    return []


def training_budget(budget: DictConfig, stage: str) -> list[str]:
    """The pipeline's `budget` for one stage: optimizer steps instead of epochs (one recipe then
    means the same training on 500 or 50,000 images) and images per step; null keeps the
    stage config's own. The generator (synthesize) keeps its epochs."""
    role = {"pretrain": "pretrain", "finetune": "finetune", "baseline": "finetune"}.get(stage)
    steps, batch = (budget.get(f"{role}_steps"), budget.get(f"{role}_batch_size")) if role else (None, None)
    return [*(["trainer.max_epochs=-1", f"trainer.max_steps={steps}"] if steps else []), *([f"data.batch_size={batch}"] if batch else [])]


def shared_overrides(cfg: DictConfig, stage: str) -> list[str]:
    """What a stage shares with the others (data option, label budget, seed), its training
    budget, then `common`, which overrides both (e.g. a smoke test's trainer.max_epochs=1)."""
    # Only segmentation is handed down: under classification each stage keeps its own, so a
    # segmentation method named in stages.finetune (task=cps) still sets its stage's task_kind.
    kind = [f"task_kind={cfg.task_kind}"] if cfg.task_kind == "segmentation" else []
    return [f"data={cfg.dataset}", *kind, f"data.label_fraction={cfg.label_fraction}", f"seed={cfg.seed}",
            f"paths.data_dir={cfg.paths.data_dir}", *training_budget(cfg.budget, stage), *[str(o) for o in cfg.common]]


def recipe_plan(cfg: DictConfig) -> dict[str, list[str] | None]:
    """Each stage's overrides after the shared ones (None: the stage is skipped), every stage's
    config composed once before any stage runs, so a bad recipe is refused before anything is
    trained or written."""
    if cfg.task_kind not in TASKS:
        raise WorkbenchError(f"task_kind={cfg.task_kind!r}: expected one of {TASKS}")
    plan = {name: overrides_of(cfg.stages.get(name), name) for name in STAGE_COMMANDS}
    if plan["finetune"] is None:
        raise WorkbenchError("stages.finetune: the pipeline needs a finetune stage (a list of `workbench train` overrides, [] for the default)")
    if cfg.task_kind == "segmentation" and not any(o.startswith("task=") for o in plan["finetune"]):
        plan["finetune"] = ["task=segmentation", *plan["finetune"]]  # the train config's default task is a classifier
    composed = {}
    for name, overrides in plan.items():  # finetune before baseline, which follows its kind of task
        if overrides is None:
            continue
        if name == "baseline" and not any(o.startswith("task=") for o in overrides):
            # Supervised-only means the finetune stage's kind of task: a segmentation network for
            # a segmentation recipe (the train config's default task is a classifier).
            kind = get_class(composed["finetune"].task._target_).data_task
            plan[name] = overrides = ["task=segmentation", *overrides] if kind == "segmentation" else overrides
        try:
            composed[name] = compose_stage(STAGE_COMMANDS[name], [*shared_overrides(cfg, name), *overrides])
        except HydraException as e:
            raise WorkbenchError(f"stages.{name}: {first_line(e)}") from None
    check_members(cfg.members, composed["finetune"])
    if cfg.selection not in SELECTIONS:
        raise WorkbenchError(f"selection={cfg.selection!r}: expected one of {SELECTIONS}")
    if cfg.selection == "cv" and cfg.members != 1:
        raise WorkbenchError(f"members={cfg.members}: selection=cv already ensembles its fold models; expected members=1")
    return plan


def check_members(members: int, finetune: DictConfig) -> None:
    """`members` is a count, and above 1 the finetune task can be scored as an ensemble."""
    if not isinstance(members, int) or members < 1:
        raise WorkbenchError(f"members={members}: expected 1 (one model) or more (an ensemble of that many)")
    if members == 1:
        return
    task = get_class(finetune.task._target_)
    if not getattr(task, "scores_ensembles", False):
        raise WorkbenchError(
            f"members={members}: {task.__name__} cannot be scored as an ensemble; expected a classifier (task=classification, fixmatch, ...)"
        )


def member_overrides(cfg: DictConfig, overrides: list[str]) -> list[list[str]]:
    """What each model of a finetune or baseline stage adds to the stage's overrides.

    - `selection=val`: one model, or with `members` > 1 that many on the same labeled and val
      images (`data.split_seed` kept, `seed` moved: other initial weights, batches and
      augmentations), each selected on the val subset as one run is.
    - `selection=cv`: one model per cross-validation fold of the budget's pool, trained for the
      stage's fixed budget and never selected on the fold it predicts (`selection=last`), and
      not tested on its own."""
    if cfg.selection == "cv":
        probe = compose_stage("train", [*overrides, f"data.folds={cfg.folds}", "data.fold=0"])
        folds = len(instantiate(probe.data, output_dir=None).fold_ids())  # fewer where a class is small
        # test=false: the test split is scored once, by the fold models' ensemble
        return [[f"data.folds={cfg.folds}", f"data.fold={k}", "selection=last", "test=false"] for k in range(folds)]
    # member 0 is the single run itself, so the cache serves both
    return [[f"seed={cfg.seed + 1000 * k}", f"data.split_seed={cfg.seed}"] if k else [] for k in range(cfg.members)]


def trained(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """A finetune or baseline stage: its models (`member_overrides`), and where there are
    several, their ensemble of mean probabilities scored by `workbench evaluate`. Under
    cross-validation the folds' held-out predictions give the out-of-fold estimate (`oof/*`,
    and the pooled predictions under `out_of_fold`) and, for two classes under
    `task.threshold=val`, the ensemble's decision threshold."""
    runs = [cached(cfg, train, "train", [*overrides, *extra]) for extra in member_overrides(cfg, overrides)]
    if len(runs) == 1:
        return runs[0]
    scoring, estimate = [], {}
    if cfg.selection == "cv":
        predictions = pooled([json.loads(Path(r["held_out"]).read_text()) for r in runs])
        estimate = {**out_of_fold_metrics(predictions), "out_of_fold": predictions}
        if "oof/threshold" in estimate and compose_stage("train", overrides).task.get("threshold") == "val":
            scoring.append(f"task.threshold={estimate['oof/threshold']}")
    checkpoints = [r["best_checkpoint"] or str(Path(r["run_dir"]) / "checkpoints" / "last.ckpt") for r in runs]
    scored = cached(cfg, evaluate, "evaluate", [*overrides, *scoring, f"ckpt_path={quoted_list(checkpoints)}"])
    return {
        **scored,
        **estimate,
        "labeled_images": runs[0]["labeled_images"] + runs[0]["val_images"] if cfg.selection == "cv" else runs[0]["labeled_images"],
        "val_images": 0 if cfg.selection == "cv" else runs[0]["val_images"],
        "best_val_score": estimate.get(runs[0]["monitor"].replace("val/", "oof/"), scored.get(runs[0]["monitor"])),  # for a sweeper
        "train_seconds": sum(r["train_seconds"] for r in runs if not r["reused"]),
        "reused": scored["reused"] and all(r["reused"] for r in runs),
        "members": [r["run_dir"] for r in runs],
    }


def pipeline(cfg: DictConfig) -> dict[str, Any]:
    set_environment_defaults()
    run_dir = Path(cfg.paths.output_dir)
    # Under DDP every rank runs the pipeline (Lightning starts the others with this command line);
    # only rank 0 writes the pipeline's own files, as the stages do.
    writer = rank_zero_only.rank == 0
    plan = recipe_plan(cfg)
    if writer:
        save_config(cfg, run_dir, command_line_overrides())
    stages: dict[str, dict] = {}
    if plan["pretrain"] is not None:
        stages["pretrain"] = cached(cfg, pretrain, "pretrain", [*shared_overrides(cfg, "pretrain"), *plan["pretrain"]])
    if plan["synthesize"] is not None:
        stages["synthesize"] = cached(cfg, synthesize, "synthesize", [*shared_overrides(cfg, "synthesize"), *plan["synthesize"]])
    wired, architecture = wiring(stages, cfg.synthetic_ratio)
    stages["finetune"] = trained(cfg, [*shared_overrides(cfg, "finetune"), *wired, *plan["finetune"]])
    if plan["baseline"] is not None:  # the same architecture and budget, without the earlier stages' artifacts
        stages["baseline"] = trained(cfg, [*shared_overrides(cfg, "baseline"), *architecture, *plan["baseline"]])

    final = stages["finetune"]
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "recipe": cfg.recipe_name,
        "label_fraction": cfg.label_fraction,
        "seed": cfg.seed,
        "labeled_images": final["labeled_images"],
        "val_images": final["val_images"],
        "best_val_score": final.get("best_val_score"),
        "selection": cfg.selection,
        **{k: v for k, v in final.items() if k in TEST_KEYS or k.startswith("oof/")},
        **{f"baseline/{k}": v for k, v in stages.get("baseline", {}).items() if k in TEST_KEYS or k.startswith("oof/")},
        "train_seconds": sum(stage_seconds(s) or 0.0 for s in stages.values() if not s.get("reused")),
        "stages": {name: {"run_dir": s["run_dir"], "reused": s["reused"]} for name, s in stages.items()},
    }
    if writer:
        for name, result in stages.items():  # the pooled held-out predictions the oof/* values come from
            if "out_of_fold" in result:
                summary[f"out_of_fold_{name}"] = str(write_json_atomic(run_dir / f"out_of_fold_{name}.json", result["out_of_fold"]))
        references = published_lines(Path(cfg.paths.data_dir) / "medmnist_v2_baselines.md", cfg.dataset, "auc")  # where the dataset has them
        figures = report_figures(run_dir, stages, summary["labeled_images"], references)
        report = write_text_atomic(run_dir / "report.md", pipeline_report(cfg, stages, summary) + "\n".join(figures) + "\n")
        summary["report"] = str(report)
        write_run_summary(run_dir, summary, title=f"pipeline {cfg.recipe_name}")
        print(f"Report: {report}")
    return summary


main = hydra_entry(pipeline, "pipeline")


if __name__ == "__main__":
    main()
