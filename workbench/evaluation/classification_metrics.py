"""Classification metrics on gathered scores: AUC, accuracy, and a decision threshold chosen
without test labels (Youden's J on validation data, or the labeled class prior matched on
unlabeled images), since a fixed 0.5 suffers when class priors shift between splits."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc, multiclass_auroc


def class_shares(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The share of each class among `labels` (hard labels 0..num_classes-1)."""
    return torch.bincount(labels.long(), minlength=num_classes).float() / len(labels)


def youden_threshold(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """The probability threshold that maximises sensitivity + specificity - 1 (Youden's J).

    Every threshold between the optimal score and the next lower one gives the same J; the
    midpoint of that interval is returned rather than its upper edge, the lowest score called
    positive. With a handful of validation images the interval is wide, and its edge would call
    negative any test image scored just below that one image."""
    if targets.unique().numel() < 2:
        return 0.5
    fpr, tpr, thresholds = binary_roc(scores, targets.long())  # thresholds descending
    best = int(torch.argmax(tpr - fpr))
    threshold = thresholds[best] if best + 1 == len(thresholds) else (thresholds[best] + thresholds[best + 1]) / 2
    return float(threshold.clamp(0.0, 1.0))


def prior_matched_threshold(scores: torch.Tensor, positive_share: float) -> float:
    """The probability threshold that calls a share `positive_share` of `scores` positive.

    `scores` are the positive-class probabilities of unlabeled images drawn from the same
    distribution as the labeled ones, and `positive_share` the class prior of the labeled images:
    the prior the labels show is imposed on the model's decisions (ReMixMatch's distribution
    alignment, applied to the decision). Thousands of unlabeled images fix it far more firmly
    than Youden's J on a handful of validation images."""
    if not 0.0 < positive_share < 1.0:
        raise ValueError(f"positive_share={positive_share}: expected a class prior strictly between 0 and 1")
    if scores.numel() == 0:
        raise ValueError("prior_matched_threshold: no scores")
    return float(torch.quantile(scores.double(), 1.0 - positive_share))


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """`probs` is (N, C) softmax output. Binary: AUC of class 1 and accuracy at `threshold`;
    multi-class: macro one-vs-rest AUC and argmax accuracy (as MedMNIST reports them)."""
    targets = targets.long()
    if probs.shape[1] == 2:
        scores = probs[:, 1]
        has_both = targets.unique().numel() == 2
        auc = float(binary_auroc(scores, targets)) if has_both else float("nan")
        acc = float(((scores >= threshold).long() == targets).float().mean())
    else:
        auc = float(multiclass_auroc(probs, targets, num_classes=probs.shape[1], average="macro"))
        acc = float((probs.argmax(1) == targets).float().mean())
    return {"auc": auc, "acc": acc}
