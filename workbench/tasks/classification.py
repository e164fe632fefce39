"""Computer-aided diagnosis: image-level classification, 2D or 3D, any channel count.

Validation and test scores and losses are gathered across ranks (torchmetrics CatMetric and
MeanMetric), so AUC, accuracy and the loss are computed on the whole split under DDP, each image
once (the datamodule's evaluation sampler does not repeat items). For two classes the decision
threshold is chosen on the validation subset at every validation (Youden's J, `threshold="val"`)
and stored in the checkpoint, so the test split is scored with the threshold of the selected
model, chosen without test labels. With a few validation images that choice is mostly luck;
`threshold="prior"` instead fixes it, when the test starts, so that the selected model calls as
many of the unlabeled training images positive as the labeled images' class prior says (see
`prior_matched_threshold`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import CatMetric, MeanMetric

from workbench.errors import WorkbenchError
from workbench.evaluation.classification_metrics import classification_metrics, prior_matched_threshold, youden_threshold
from workbench.io import write_json_atomic
from workbench.models.backbones import build_backbone
from workbench.models.pretrained import backbone_provenance, export_backbone, load_backbone
from workbench.tasks.base import EvaluatedTask


class FeatureStandardization(nn.BatchNorm1d):
    """Batch norm without affine parameters before a linear head, as in MAE's linear probe: the
    head sees standardised features, so their raw scale does not set its effective learning rate.
    A training batch of one image (a labeled subset's remainder) is standardised with the running
    statistics instead of failing."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, eps=self.eps)
        return super().forward(x)


class ClassificationTask(EvaluatedTask):
    data_task = "classification"
    scores_ensembles = True

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        backbone: str = "resnet18",
        small_input: bool = True,
        width: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        dropout: float = 0.0,
        threshold: str | float = "val",
        image_size: int = 32,
        pretrained: str | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float | None = None,
        head_only_epochs: int | None = None,
        head_norm: bool | None = None,
        class_prior: list[float] | None = None,
        labels_balanced: bool = False,
    ) -> None:
        """`class_prior` (each class's share of the labeled images) and `labels_balanced` (the
        labels were drawn k per class) describe the label budget; `workbench train` fills them
        in from the datamodule."""
        super().__init__()
        if num_classes < 2:
            raise WorkbenchError(f"num_classes={num_classes}: classification needs at least 2 classes")
        if threshold not in ("val", "prior") and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise WorkbenchError(f"task.threshold={threshold!r}: expected 'val', 'prior' or a probability in [0, 1]")
        if backbone_lr_scale is not None and not 0.0 < backbone_lr_scale <= 1.0:
            raise WorkbenchError(f"task.backbone_lr_scale={backbone_lr_scale}: expected a factor in (0, 1] (freeze_backbone=true freezes)")
        if head_only_epochs is not None and (head_only_epochs < 0 or freeze_backbone or not pretrained):
            raise WorkbenchError(
                f"task.head_only_epochs={head_only_epochs}: expected epochs >= 0 before a pretrained backbone "
                "(task.pretrained set, task.freeze_backbone false) starts to learn"
            )
        self.save_hyperparameters()
        self.backbone, dim = build_backbone(backbone, spatial_dims, in_channels, small_input, image_size, width)
        if pretrained:
            expected = {
                "backbone": backbone, "spatial_dims": spatial_dims, "in_channels": in_channels, "small_input": small_input, "width": width
            }
            load_backbone(self.backbone, pretrained, expected)
        if freeze_backbone:  # a linear probe: only the head learns
            if not pretrained:
                raise WorkbenchError("task.freeze_backbone=true needs task.pretrained (a frozen random backbone learns nothing)")
            self.backbone.requires_grad_(False)
        norm = [FeatureStandardization(dim)] if head_norm else []  # none by default: older checkpoints keep their keys
        self.head = nn.Sequential(*norm, nn.Dropout(dropout), nn.Linear(dim, num_classes))
        self.register_buffer("decision_threshold", torch.tensor(float(threshold) if isinstance(threshold, (int, float)) else 0.5))
        self.scores = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})
        self.targets = nn.ModuleDict({s: CatMetric() for s in ("val", "test")})
        self.losses = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})

    def export(self, directory: str | Path, **extra: Any) -> Path:
        """The trained backbone as backbone.pt + backbone.json, like a pretrained one: it can
        initialise another task or serve as the feature network of the synthesis metrics."""
        provenance = backbone_provenance(self.hparams, f"supervised ({type(self).__name__})", epochs=self.current_epoch, **extra)
        return export_backbone(self.evaluated_network()[0], directory, provenance)

    def parameter_groups(self) -> list[dict]:
        """The backbone at lr x backbone_lr_scale from epoch head_only_epochs on, the rest at lr
        (both null: one group at lr, as before the options, so old checkpoints resume).

        Finetuning a pretrained backbone on a few labels at the head's rate can erase what
        pretraining learned; so can the first gradients of a random head. Head-only epochs first
        are LP-FT (Kumar et al. 2022): the backbone waits at lr 0 with frozen batch-norm
        statistics. Its gradients are still computed, so DDP sees every parameter used, and
        AdamW's moments for it start warm."""
        hp = self.hparams
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if not hp.backbone_lr_scale and hp.head_only_epochs is None:
            return [{"params": [p for _, p in trainable]}]
        backbone = [p for n, p in trainable if n.startswith("backbone.")]
        rest = [p for n, p in trainable if not n.startswith("backbone.")]
        groups = [
            {"params": backbone, "lr": hp.lr * (hp.backbone_lr_scale or 1.0), "start_epoch": hp.head_only_epochs or 0},
            {"params": rest},
        ]
        return [g for g in groups if g["params"]]

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze_backbone or self.current_epoch < (self.hparams.head_only_epochs or 0):
            self.backbone.eval()  # frozen means frozen batch-norm statistics too

    def network(self) -> nn.Module:
        """Backbone then head as one module (what an EMA teacher copies and follows)."""
        return nn.Sequential(self.backbone, self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"].long(), label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(logits))
        return loss

    def evaluated_network(self) -> nn.Module:
        """What validation, test and the export score: `network()`, or for methods with an EMA
        teacher (`self.teacher`, an EMATeacher of `network()`) the teacher's copy; under
        `workbench evaluate` of several checkpoints, their ensemble (`self.ensemble`)."""
        ensemble = getattr(self, "ensemble", None)
        if ensemble is not None:
            return ensemble
        teacher = getattr(self, "teacher", None)
        return self.network() if teacher is None else teacher.model

    def evaluate_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluated_network()(x)

    def on_test_start(self) -> None:
        if self.hparams.threshold == "prior" and self.hparams.num_classes == 2:
            self.decision_threshold.fill_(self.prior_threshold())

    def labeled_class_prior(self) -> torch.Tensor:
        """The share of each class among the labeled training images."""
        if self.hparams.class_prior is None:
            raise WorkbenchError("task.class_prior: the labeled images' class shares are needed here; expected a list (the "
                                 "commands fill it in from the data)")
        return torch.tensor(self.hparams.class_prior, dtype=torch.float32)

    @torch.no_grad()
    def prior_threshold(self) -> float:
        """The threshold at which this model calls the labeled images' positive share of the
        unlabeled training images positive (every rank scores its share; the scores are gathered)."""
        datamodule = self.trainer.datamodule
        if self.hparams.labels_balanced:
            raise WorkbenchError("task.threshold='prior' needs labels drawn at the class shares of the data; data.k_shot draws them balanced")
        if not datamodule.subsets["unlabeled_train"]:
            raise WorkbenchError(
                "task.threshold='prior' needs unlabeled training images (data.label_fraction < 1); use task.threshold=val"
            )
        positive_share = float(self.labeled_class_prior()[1])
        if not 0.0 < positive_share < 1.0:
            raise WorkbenchError(f"task.threshold='prior': the labeled images are all of one class (positive share {positive_share})")
        scores = CatMetric().to(self.device)
        precision = self.trainer.precision_plugin  # as the test loop does: bf16/16 contexts and input casts
        for batch in datamodule.eval_dataloader("unlabeled_train"):
            with precision.test_step_context():
                images = precision.convert_input(batch["image"].to(self.device))
                scores.update(self.evaluate_logits(images).softmax(1)[:, 1].float())
        return prior_matched_threshold(scores.compute().reshape(-1), positive_share)

    def _eval_step(self, batch: dict, stage: str) -> None:
        self._update_scores(stage, self.evaluate_logits(batch["image"]), batch["label"].long())

    def _update_scores(self, stage: str, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.losses[stage].update(F.cross_entropy(logits.float(), target, reduction="none"))
        self.scores[stage].update(logits.softmax(1).float())
        self.targets[stage].update(target.float())

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        probs = self.scores[stage].compute().reshape(-1, self.hparams.num_classes)
        targets = self.targets[stage].compute().reshape(-1)
        self.scores[stage].reset()
        self.targets[stage].reset()
        self.log(f"{stage}/loss", self.losses[stage].compute())
        self.losses[stage].reset()
        if stage == "val" and self.hparams.threshold == "val" and self.hparams.num_classes == 2:
            self.decision_threshold.fill_(youden_threshold(probs[:, 1], targets))
        metrics = classification_metrics(probs, targets, float(self.decision_threshold))
        # Values are already gathered from every rank, so each rank logs the same number.
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=True)
        if self.hparams.num_classes == 2:
            self.log(f"{stage}/threshold", float(self.decision_threshold))
        if stage == "test" and self.trainer.is_global_zero:  # the report's ROC curve
            predictions = {"probabilities": probs.cpu().tolist(), "labels": targets.long().cpu().tolist()}
            write_json_atomic(Path(self.trainer.default_root_dir) / "test_predictions.json", predictions)
        return metrics
