"""Downstream segmentation, 2D or 3D, on MONAI's UNet/BasicUNet with Dice + cross-entropy.

Validation and test run on whole images, or with MONAI's sliding-window inference when
`roi_size` is set (the usual choice for volumes larger than the training patches). Dice is the
mean over images of the foreground-class Dice (MONAI's `compute_dice`), gathered across ranks;
the loss is averaged over images across ranks too. The test adds, per foreground class k and
averaged over classes, Dice (`test/dice_k`), the 95th-percentile Hausdorff distance (`test/hd95`)
and the normalised surface Dice at `surface_tolerance` (`test/surface_dice`), in `spacing` units
(mm where the voxel spacing of the network's grid is given) or else in voxels. An image whose
class is missing from the prediction or the label alone scores the image diagonal as its HD95
(a miss is penalised, not dropped); missing from both, it has no distance and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from torchmetrics import CatMetric, MeanMetric

from workbench.evaluation.out_of_fold import per_image_dice
from workbench.evaluation.segmentation_metrics import surface_metrics
from workbench.errors import WorkbenchError
from workbench.models.pretrained import load_backbone
from workbench.models.segmentation import build_segmentation_net
from workbench.models.unet_encoder import encoder_of
from workbench.tasks.base import EvaluatedTask


SURFACE_METRICS = ("dice", "hd95", "surface_dice")


class SegmentationTask(EvaluatedTask):
    data_task = "segmentation"
    scores_ensembles = True

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        net: str = "unet",
        channels: Sequence[int] = (16, 32, 64, 128),
        num_res_units: int = 2,
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        warmup_epochs: float = 0.0,
        roi_size: int | Sequence[int] | None = None,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        spacing: Sequence[float] | None = None,
        surface_tolerance: float = 1.0,
        pretrained: str | None = None,
        backbone_lr_scale: float | None = None,
    ) -> None:
        """`pretrained`: a `workbench pretrain` run of `ssl.backbone=unet_encoder` (or its
        backbone.pt), loaded into the UNet's encoder path, which then learns at lr x
        `backbone_lr_scale` (null: at lr)."""
        super().__init__()
        if backbone_lr_scale is not None and not (0.0 < backbone_lr_scale <= 1.0 and pretrained):
            raise WorkbenchError(f"task.backbone_lr_scale={backbone_lr_scale}: expected a factor in (0, 1] for a pretrained "
                                 "encoder (task.pretrained set)")
        self.save_hyperparameters()
        self.net = build_segmentation_net(net, spatial_dims, in_channels, num_classes, channels, num_res_units, dropout)
        if pretrained:
            if net != "unet":
                raise WorkbenchError(f"task.pretrained with task.net={net}: a pretrained unet_encoder fits task.net=unet")
            expected = {"backbone": "unet_encoder", "spatial_dims": spatial_dims, "in_channels": in_channels,
                        "channels": list(channels), "num_res_units": num_res_units}
            load_backbone(encoder_of(self.net), pretrained, expected)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.dice = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})
        self.losses = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        # test only: (images, classes - 1) each; NaN (a class absent from both) kept, so rows stay whole
        self.surface = nn.ModuleDict({k: CatMetric(nan_strategy="disable") for k in SURFACE_METRICS})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def parameter_groups(self) -> list[dict]:
        """A pretrained encoder at lr x backbone_lr_scale, the decoder at lr (one group without,
        or at a scale of 1)."""
        if self.hparams.backbone_lr_scale in (None, 1.0):
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        encoder = {id(p) for p in encoder_of(self.net).parameters()}
        return [
            {"params": [p for p in self.net.parameters() if id(p) in encoder], "lr": self.hparams.lr * self.hparams.backbone_lr_scale},
            {"params": [p for p in self.parameters() if id(p) not in encoder]},
        ]

    @property
    def eval_net(self) -> nn.Module:
        """The network validation and test use; methods with an EMA teacher evaluate the teacher."""
        return self.net

    def evaluated_network(self) -> nn.Module:
        """What validation and test score: `eval_net`, or under `workbench evaluate` of several
        checkpoints their ensemble (`self.ensemble`: the mean of the members' softmax outputs,
        as nnU-Net averages its folds)."""
        ensemble = getattr(self, "ensemble", None)
        return self.eval_net if ensemble is None else ensemble

    @property
    def roi_size(self) -> list[int] | None:
        """The sliding window per axis (a single `roi_size` is a square or cube)."""
        roi = self.hparams.roi_size
        return None if roi is None else [int(roi)] * self.hparams.spatial_dims if isinstance(roi, int) else [int(n) for n in roi]

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for whole images; sliding windows of `roi_size` when set."""
        network = self.evaluated_network()
        if self.roi_size:
            return sliding_window_inference(x, self.roi_size, self.hparams.sw_batch_size, network, overlap=self.hparams.overlap)
        return network(x)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        logits = self.infer(batch["image"])
        label = batch["label"]
        # Weighted by images across ranks: the ranks' shares of a split can differ by one image.
        self.losses[stage].update(self.loss(logits, label), weight=len(label))
        self.dice[stage].update(per_image_dice(logits, label, self.hparams.num_classes).float())
        if stage == "test":
            hp = self.hparams
            spacing = hp.spacing or [1.0] * (label.ndim - 2)
            per_class = surface_metrics(logits, label, hp.num_classes, spacing, hp.surface_tolerance)
            diagonal = float(torch.tensor([n * s for n, s in zip(label.shape[2:], spacing)]).norm())
            per_class["hd95"] = torch.where(per_class["hd95"].isinf(), diagonal, per_class["hd95"])
            for key, values in per_class.items():
                self.surface[key].update(values.float().to(self.device))

    def _eval_epoch_end(self, stage: str) -> None:
        dice = self.dice[stage].compute()
        self.dice[stage].reset()
        self.log(f"{stage}/loss", self.losses[stage].compute())
        self.losses[stage].reset()
        self.log(f"{stage}/dice", dice.float().mean(), prog_bar=True)
        if stage == "test":
            for key in SURFACE_METRICS:
                per_class = self.surface[key].compute().reshape(-1, self.hparams.num_classes - 1).float()
                self.surface[key].reset()
                for k, column in enumerate(per_class.T, start=1):
                    self.log(f"test/{key}_{k}", column.nanmean())
                if key != "dice":  # test/dice stays the per-image mean over classes above
                    self.log(f"test/{key}", per_class.nanmean())
