"""`workbench export run_dir=<run dir> format=bundle|torchscript|onnx`: a finished classification
or segmentation run (a `workbench train` run, an evaluated ensemble, or a pipeline run: its
finetuned model, under cross-validation its fold ensemble) leaves the workbench as a model that
needs only torch (TorchScript, ONNX) or MONAI (a MONAI bundle).

The exported model maps images, preprocessed as in training, to class probabilities (per voxel
for segmentation): the network the run scores (an EMA teacher where the method has one), or the
mean of the ensemble members' probabilities. A bundle holds `models/model.ts`,
`configs/metadata.json` (the input and output spec, the classes, the decision threshold of a
two-class model) and `configs/inference.json` (MONAI's loading, the run's intensity scaling and
resize or native-spacing resampling, sliding-window inference where the run used it, argmax), which `monai.bundle` runs
without the workbench installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from workbench.data.datamodule import MedicalDataModule
from workbench.data.transforms import intensity_steps
from workbench.errors import WorkbenchError
from workbench.io import write_json_atomic
from workbench.models.checkpoints import check_checkpoint_fits
from workbench.models.ensemble import checkpoint_ensemble
from workbench.runner import build_model, hydra_entry
from workbench.runs import finished_run, save_config

FORMATS = ("bundle", "torchscript", "onnx")


class Probabilities(nn.Module):
    """Class probabilities from a network that returns logits (or an ensemble's log-probabilities)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).float().softmax(1)


def exported_network(run_cfg: DictConfig, paths: list[str]) -> tuple[Probabilities, MedicalDataModule, Any]:
    """The run's scored model as one module in eval mode, its datamodule and the task module."""
    datamodule, task = build_model(run_cfg, "task", output_dir=None)
    if len(paths) == 1:
        task.load_state_dict(check_checkpoint_fits(paths[0], task)["state_dict"])
        network = task.evaluated_network()
    elif getattr(task, "scores_ensembles", False):
        network = checkpoint_ensemble(task, paths)
    else:
        raise WorkbenchError(f"run_dir: an ensemble of {len(paths)} checkpoints of {type(task).__name__}, which is not scored by class probabilities")
    if task.data_task not in ("classification", "segmentation"):
        raise WorkbenchError(f"run_dir: a {task.data_task} run; export takes classification and segmentation runs")
    return Probabilities(network).eval(), datamodule, task


def preprocessing(datamodule: MedicalDataModule, spatial_dims: int) -> list[dict[str, Any]]:
    """MONAI transforms that prepare a file as the run's data chain prepared its images."""
    pictures = spatial_dims == 2  # PNG/JPEG/TIFF, read row-major as the workbench reads them
    volume = datamodule.volume_spec
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True, **({"reader": "PILReader", "reverse_indexing": False} if pictures else {})},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        # resampling (data.volume) reads the file's affine, which only a MetaTensor keeps
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": bool(volume and volume.needs_metadata)},
    ]
    data = datamodule.load()
    window = datamodule.intensity_range or data.extra.get("intensity_range")
    scaling = intensity_steps(datamodule.intensity_mode, window, datamodule.intensity_percentiles)
    resizing = volume.steps(["image"], "whole" if data.task == "segmentation" else "centre") if volume else (
        [("Resized", {"spatial_size": [int(datamodule.image_size)] * spatial_dims, "mode": "area"})] if datamodule.image_size else [])
    steps += [{"_target_": name, "keys": "image", **kwargs} for name, kwargs in [*scaling, *resizing]]
    if volume:
        steps.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": False})
    return steps


def inference_config(datamodule: MedicalDataModule, task: Any) -> dict[str, Any]:
    """configs/inference.json: MONAI bundle syntax, runnable with `python -m monai.bundle run`."""
    roi = getattr(task, "roi_size", None)
    inferer = ({"_target_": "SlidingWindowInferer", "roi_size": roi, "sw_batch_size": task.hparams.sw_batch_size,
                "overlap": task.hparams.overlap} if roi else {"_target_": "SimpleInferer"})
    return {
        "imports": ["$import torch", "$import glob"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)",
        "network": "$@network_def.eval()",
        "datalist": [],  # image files, e.g. "$sorted(glob.glob('/data/*.nii.gz'))"
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing(datamodule, task.hparams.get("spatial_dims", 2))},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': f} for f in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": [{"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader", "network": "@network",
                      "inferer": "@inferer", "postprocessing": "@postprocessing"},
        "run": ["$@evaluator.run()"],
    }


def metadata(run_cfg: DictConfig, task: Any, shape: list[int], class_names: list[str]) -> dict[str, Any]:
    """configs/metadata.json: MONAI's bundle metadata with the network's input and output spec."""
    classification = task.data_task == "classification"
    threshold = task.hparams.get("threshold")
    buffer = getattr(task, "decision_threshold", None)
    decision = threshold if isinstance(threshold, (int, float)) else float(buffer) if buffer is not None else None
    channels = {str(i): name for i, name in enumerate(class_names)}
    return {
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported by workbench export"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {},
        "task": task.data_task,
        "description": f"{type(task).__name__} trained by the workbench ({run_cfg.get('task_name', 'train')} run); outputs class probabilities",
        "authors": "workbench",
        "copyright": "",
        "decision_threshold": decision if classification and task.hparams.num_classes == 2 else None,
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "unknown", "num_channels": shape[0],
                                 "spatial_shape": shape[1:], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                                 "channel_def": {str(i): "image" for i in range(shape[0])}}},
            "outputs": {"pred": {"type": "probabilities" if classification else "image", "format": "classes" if classification else "segmentation",
                                 "num_channels": task.hparams.num_classes, "spatial_shape": [1] if classification else shape[1:],
                                 "dtype": "float32", "value_range": [0, 1], "is_patch_data": False, "channel_def": channels}},
        },
    }


def export(cfg: DictConfig) -> dict[str, Any]:
    if cfg.format not in FORMATS:
        raise WorkbenchError(f"format={cfg.format}: expected one of {FORMATS}")
    if cfg.format == "onnx":
        try:
            import onnx  # noqa: F401  (torch.onnx writes through it)
        except ImportError:
            raise WorkbenchError("format=onnx: the onnx package is not installed; expected `pip install onnx` (or the export extra)") from None
    paths, run_cfg = finished_run(cfg.run_dir)
    network, datamodule, task = exported_network(run_cfg, paths)
    shape = [task.hparams.in_channels, *datamodule.image_shape()]
    example = torch.rand(1, *shape)
    out = Path(cfg.paths.output_dir)
    save_config(cfg, out)
    with torch.no_grad():
        expected = network(example)
        traced = torch.jit.trace(network, example)
        if not torch.allclose(traced(example), expected, atol=1e-5):
            raise WorkbenchError(f"run_dir={cfg.run_dir}: the traced network does not reproduce the model (data-dependent control flow?)")
    written: dict[str, Any] = {"run_dir": str(out), "scored": paths, "format": cfg.format, "input_shape": shape}
    if cfg.format == "torchscript":
        traced.save(str(out / "model.ts"))
        written["model"] = str(out / "model.ts")
    elif cfg.format == "onnx":
        torch.onnx.export(network, example, str(out / "model.onnx"), input_names=["image"], output_names=["pred"],
                          dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}}, dynamo=False)
        written["model"] = str(out / "model.onnx")
    else:
        bundle = out / "bundle"
        (bundle / "models").mkdir(parents=True, exist_ok=True)
        traced.save(str(bundle / "models" / "model.ts"))
        names = getattr(datamodule.source, "class_names", None) or [str(i) for i in range(task.hparams.num_classes)]
        write_json_atomic(bundle / "configs" / "metadata.json", metadata(run_cfg, task, shape, names))
        write_json_atomic(bundle / "configs" / "inference.json", inference_config(datamodule, task))
        written["model"] = str(bundle)
    write_json_atomic(out / "metrics.json", written)
    print(f"Exported: {written['model']}")
    return written


main = hydra_entry(export, "export")


if __name__ == "__main__":
    main()
