"""The pretrained-backbone artifact between stages: `backbone.pt` (a plain state_dict) and
`backbone.json` (how it was made). Downstream tasks load it by config; a backbone of another
architecture, dimensionality or channel count is refused with a clear error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.data.files import existing_file
from workbench.errors import WorkbenchError, first_line
from workbench.io import write_json_atomic, written_aside
from workbench.models.checkpoints import refuse_pickled_objects
from workbench.models.unet_encoder import UNET_RES_UNITS, unet_encoder_channels

MUST_MATCH = ("backbone", "spatial_dims", "in_channels", "small_input", "width", "channels", "num_res_units")
DEFAULTS = {"width": 1.0}  # what a backbone.json written before the key existed means


def backbone_provenance(hparams: Any, method: str, **extra: Any) -> dict[str, Any]:
    """What backbone.json records of a module whose hyperparameters describe its backbone."""
    keys = ("backbone", "spatial_dims", "in_channels", "small_input", "image_size", "width")
    unet = {"channels": unet_encoder_channels(hparams["width"]), "num_res_units": UNET_RES_UNITS} if hparams["backbone"] == "unet_encoder" else {}
    return {"method": method, **{k: hparams[k] for k in keys}, **unet, **extra}


def export_backbone(backbone: nn.Module, directory: str | Path, provenance: dict[str, Any]) -> Path:
    """Writes backbone.pt and backbone.json into `directory`; each is renamed into place whole."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "backbone.pt"
    with written_aside(weights) as partial:
        torch.save({k: v.detach().cpu() for k, v in backbone.state_dict().items()}, partial)
    write_json_atomic(directory / "backbone.json", {**provenance, "weights": weights.name})
    return weights


def load_backbone(backbone: nn.Module, path: str | Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Loads `path` (backbone.pt, or the folder holding it) into `backbone` after checking its
    provenance against `expected`; returns the provenance."""
    path = Path(path).expanduser()
    weights = path / "backbone.pt" if path.is_dir() else path
    meta_path = weights.with_suffix(".json")
    existing_file(weights, "pretrained backbone", "backbone.pt from workbench pretrain")
    existing_file(meta_path, "provenance file", f"backbone.json beside {weights.name}")
    meta = json.loads(meta_path.read_text())
    wrong = [f"{k}={meta.get(k)!r} (expected {expected[k]!r})" for k in MUST_MATCH if k in expected and meta.get(k, DEFAULTS.get(k)) != expected[k]]
    if wrong:
        raise WorkbenchError(f"{weights}: pretrained backbone does not fit: {', '.join(wrong)}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        backbone.load_state_dict(state)
    except Exception as e:
        refuse_pickled_objects(weights, e, "a backbone.pt written by workbench")
        raise WorkbenchError(f"{weights}: cannot load into the {expected.get('backbone')} backbone ({first_line(e)})") from None
    return meta


@dataclass(frozen=True)
class PretrainedBackbone:
    """A finished `workbench pretrain` run's backbone, as the next stage takes it: the run
    directory and the architecture a downstream task must build to load it."""

    run_dir: Path
    backbone: str
    width: float
    small_input: bool
    unet_channels: tuple[int, ...] = ()  # a unet_encoder's: the segmentation UNet it belongs to
    unet_res_units: int = UNET_RES_UNITS

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> PretrainedBackbone:
        run_dir = Path(run_dir)
        meta_path = existing_file(run_dir / "backbone.json", "provenance file", "backbone.json of a workbench pretrain run")
        meta = json.loads(meta_path.read_text())
        return cls(run_dir, meta["backbone"], float(meta.get("width", DEFAULTS["width"])), bool(meta["small_input"]),
                   tuple(meta.get("channels", ())), int(meta.get("num_res_units", UNET_RES_UNITS)))

    def architecture_overrides(self) -> list[str]:
        """`workbench train` overrides that build this backbone's architecture (random weights):
        a classifier's backbone, or for a unet_encoder the segmentation task's UNet."""
        if self.backbone == "unet_encoder":
            return ["task.net=unet", f"task.channels=[{','.join(map(str, self.unet_channels))}]", f"task.num_res_units={self.unet_res_units}"]
        return [f"task.backbone={self.backbone}", f"task.width={self.width}", f"task.small_input={str(self.small_input).lower()}"]

    def to_overrides(self) -> list[str]:
        """`workbench train` overrides that start the task from these weights."""
        return [f"task.pretrained={self.run_dir}", *self.architecture_overrides()]
