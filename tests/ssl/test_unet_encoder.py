"""Self-supervised pretraining of the segmentation UNet's own encoder (`ssl.backbone=unet_encoder`)
and its hand-over to segmentation: the weights land in the UNet's encoder path, the decoder
starts fresh, and the pipeline wires it all for a segmentation recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from monai.networks.nets import UNet

from tests.conftest import compose_train
from workbench.errors import WorkbenchError
from workbench.models.backbones import build_backbone
from workbench.models.unet_encoder import encoder_of
from workbench.pipeline import pipeline
from workbench.ssl import BYOL
from workbench.stages import quoted_list
from workbench.tasks.segmentation import SegmentationTask


def test_the_encoder_is_the_unet_s_own_down_path():
    """Its layers are the UNet's modules (shared, not copies): the down layers then the bottom;
    a 32^3 volume leaves 3 stride-2 levels as 4^3 maps of the last channel count, pooled."""
    unet = UNet(3, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=2)
    encoder = encoder_of(unet)
    assert len(encoder.layers) == 4
    assert all(any(layer is m for m in unet.modules()) for layer in encoder.layers)
    x = torch.rand(2, 1, 32, 32, 32)
    assert encoder(x).shape == (2, 64)
    bottom_input = encoder.layers[2](encoder.layers[1](encoder.layers[0](x)))
    assert bottom_input.shape == (2, 32, 4, 4, 4)
    backbone, dim = build_backbone("unet_encoder", 3, 1, width=0.5)
    assert dim == 64 and {k: v.shape for k, v in backbone.state_dict().items()} == {k: v.shape for k, v in encoder.state_dict().items()}


def test_pretrained_encoder_weights_load_into_the_segmentation_unet(tmp_path):
    model = BYOL(in_channels=1, spatial_dims=3, backbone="unet_encoder", width=0.5, image_size=16)
    model.export(tmp_path)
    meta = json.loads((tmp_path / "backbone.json").read_text())
    assert meta["backbone"] == "unet_encoder" and meta["channels"] == [8, 16, 32, 64] and meta["num_res_units"] == 2
    task = SegmentationTask(in_channels=1, num_classes=3, spatial_dims=3, channels=[8, 16, 32, 64], pretrained=str(tmp_path),
                            backbone_lr_scale=0.1)
    fresh = SegmentationTask(in_channels=1, num_classes=3, spatial_dims=3, channels=[8, 16, 32, 64])
    pretrained = model.backbone.state_dict()
    loaded = encoder_of(task.net).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in pretrained.items())
    assert not all(torch.equal(encoder_of(fresh.net).state_dict()[k], v) for k, v in pretrained.items() if v.is_floating_point())
    encoder_group, rest = task.parameter_groups()
    assert encoder_group["lr"] == pytest.approx(0.1 * task.hparams.lr) and "lr" not in rest
    assert len(encoder_group["params"]) == len(list(model.backbone.parameters()))
    assert len(encoder_group["params"]) + len(rest["params"]) == len(list(task.parameters()))
    full_rate = SegmentationTask(in_channels=1, num_classes=3, spatial_dims=3, channels=[8, 16, 32, 64], pretrained=str(tmp_path),
                                 backbone_lr_scale=1.0).parameter_groups()
    assert len(full_rate) == 1 and "lr" not in full_rate[0]  # the recipe's segmentation default: one group at lr


def test_an_encoder_of_another_unet_is_refused_naming_the_setting(tmp_path):
    BYOL(in_channels=1, spatial_dims=3, backbone="unet_encoder", width=0.5, image_size=16).export(tmp_path)
    with pytest.raises(WorkbenchError, match=r"channels=\[8, 16, 32, 64\] \(expected \[16, 32, 64, 128\]\)"):
        SegmentationTask(in_channels=1, num_classes=2, spatial_dims=3, pretrained=str(tmp_path))
    with pytest.raises(WorkbenchError, match="task.net=basic_unet"):
        SegmentationTask(in_channels=1, num_classes=2, spatial_dims=3, net="basic_unet", channels=[8, 8, 16, 32, 64, 8], pretrained=str(tmp_path))
    with pytest.raises(WorkbenchError, match="task.backbone_lr_scale=0.1"):
        SegmentationTask(in_channels=1, num_classes=2, spatial_dims=3, backbone_lr_scale=0.1)


def test_the_recommended_recipe_pretrains_and_finetunes_a_segmentation_unet(tmp_path):
    """`workbench pipeline task_kind=segmentation` with the default recipe: pretraining picks the
    UNet's encoder by itself, the finetune stage segments and loads it with the matching
    architecture at the full rate, and the baseline is the same UNet from scratch."""
    from workbench.pipeline import recipe_plan

    common = ["data.source.num_train=12", "data.source.num_val=4", "data.source.num_test=4", "data.source.size=16"]
    overrides = ["dataset=phantom3d", "task_kind=segmentation", "selection=cv", "folds=2", "label_fraction=0.5", f"common={quoted_list(common)}",
                 "budget.pretrain_steps=2", "budget.pretrain_batch_size=4", "budget.finetune_steps=2", "budget.finetune_batch_size=2",
                 f"stages.pretrain={quoted_list(['ssl=byol', 'ssl.width=0.5'])}", f"cache_dir={tmp_path / 'stages'}"]
    cfg = compose_train(overrides, tmp_path / "run", config_name="pipeline")
    plan = recipe_plan(cfg)
    assert plan["finetune"] == ["task=segmentation", "task.backbone_lr_scale=1.0"] and plan["baseline"] == ["task=segmentation"]
    summary = pipeline(cfg)
    pretrain_dir = Path(summary["stages"]["pretrain"]["run_dir"])
    assert json.loads((pretrain_dir / "backbone.json").read_text())["backbone"] == "unet_encoder"
    finetuned = yaml.safe_load((Path(summary["stages"]["finetune"]["run_dir"]) / "config.yaml").read_text())
    fold = yaml.safe_load((Path(finetuned["ckpt_path"][0]).parents[1] / "config.yaml").read_text())
    assert fold["task"]["pretrained"] == str(pretrain_dir) and fold["task"]["channels"] == [8, 16, 32, 64]
    baseline = yaml.safe_load((Path(summary["stages"]["baseline"]["run_dir"]) / "config.yaml").read_text())
    baseline_fold = yaml.safe_load((Path(baseline["ckpt_path"][0]).parents[1] / "config.yaml").read_text())
    assert baseline_fold["task"]["pretrained"] is None and baseline_fold["task"]["channels"] == [8, 16, 32, 64]
    assert 0.0 <= summary["test/dice"] <= 1.0 and "baseline/test/dice" in summary


def test_the_default_recipe_slows_a_classifier_s_backbone_but_not_a_unet_s_encoder_and_refuses_unknown_tasks():
    from workbench.pipeline import recipe_plan

    assert recipe_plan(compose_train([], Path("/tmp/unused"), config_name="pipeline"))["finetune"] == ["task.backbone_lr_scale=0.1"]
    segmentation = recipe_plan(compose_train(["task_kind=segmentation", "dataset=phantom3d"], Path("/tmp/unused"), config_name="pipeline"))
    assert segmentation["finetune"] == ["task=segmentation", "task.backbone_lr_scale=1.0"]
    with pytest.raises(WorkbenchError, match="task_kind='detection': expected one of"):
        recipe_plan(compose_train(["task_kind=detection"], Path("/tmp/unused"), config_name="pipeline"))


def test_the_next_stage_builds_the_unet_its_encoder_was_recorded_with(tmp_path):
    """The finetune stage's overrides come from backbone.json: channels and residual units."""
    from workbench.models.pretrained import PretrainedBackbone

    BYOL(in_channels=1, spatial_dims=3, backbone="unet_encoder", width=0.5, image_size=16).export(tmp_path)
    meta = json.loads((tmp_path / "backbone.json").read_text())
    (tmp_path / "backbone.json").write_text(json.dumps({**meta, "num_res_units": 3}))
    overrides = PretrainedBackbone.from_run_dir(tmp_path).architecture_overrides()
    assert overrides == ["task.net=unet", "task.channels=[8,16,32,64]", "task.num_res_units=3"]
