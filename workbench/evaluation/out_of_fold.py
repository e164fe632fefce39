"""Cross-validation's out-of-fold predictions: each fold model's outputs on the images it was
held out from (written by its run), pooled into an estimate of performance that needs no test
split, and for two classes the decision threshold (nnU-Net's practice, inside a label budget).

A fold model is trained for a fixed budget and never selected on its held-out fold, so the
estimate is not biased upward by selection. For two classes the accuracy is taken at the
Youden threshold of the pooled predictions themselves, so the out-of-fold ACC is optimistic;
the AUC does not depend on a threshold.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.metrics import compute_dice

from workbench.evaluation.classification_metrics import classification_metrics, youden_threshold


def per_image_dice(logits: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per image, the mean Dice over foreground classes of the argmax prediction; an image with
    no foreground at all scores 1 when the prediction is empty too (MONAI's ignore_empty=False)."""
    pred = F.one_hot(logits.argmax(1), num_classes).movedim(-1, 1)
    truth = F.one_hot(label[:, 0].long(), num_classes).movedim(-1, 1)
    return compute_dice(pred, truth, include_background=False, ignore_empty=False).nanmean(1)


@torch.no_grad()
def held_out_predictions(model: Any, datamodule: Any) -> dict[str, list]:
    """The model's outputs on every image of the val subset (a fold run's held-out fold), in
    this process alone: class probabilities for a classifier, per-image Dice for segmentation."""
    model.eval()
    ids: list[str] = []
    out: dict[str, list] = {"labels": [], "probabilities": []} if model.data_task == "classification" else {"dice": []}
    for batch in datamodule.plain_dataloader("val"):
        images = batch["image"].to(model.device)
        ids += [str(i) for i in batch["id"]]
        if model.data_task == "classification":
            out["probabilities"] += model.evaluate_logits(images).float().softmax(1).cpu().tolist()
            out["labels"] += batch["label"].long().reshape(-1).tolist()
        else:
            out["dice"] += per_image_dice(model.infer(images), batch["label"].to(model.device), model.hparams.num_classes).cpu().tolist()
    return {"ids": ids, **out}


def pooled(folds: list[dict[str, list]]) -> dict[str, list]:
    """The folds' held-out predictions as one set."""
    return {key: [v for fold in folds for v in fold[key]] for key in folds[0]}


def out_of_fold_metrics(predictions: dict[str, list]) -> dict[str, float]:
    """`oof/auc`, `oof/acc` (and `oof/threshold` for two classes), or `oof/dice`."""
    if "dice" in predictions:
        return {"oof/dice": float(torch.tensor(predictions["dice"]).mean())}
    probs, labels = torch.tensor(predictions["probabilities"]), torch.tensor(predictions["labels"])
    threshold = youden_threshold(probs[:, 1], labels.float()) if probs.shape[1] == 2 else 0.5
    metrics = {f"oof/{k}": v for k, v in classification_metrics(probs, labels, threshold).items()}
    return {**metrics, "oof/threshold": threshold} if probs.shape[1] == 2 else metrics
