"""Online evaluation of a pretraining run on frozen features: a weighted kNN classifier (the
vote of lightly's `knn_predict`, returned as class scores so AUC can be computed) and a linear
probe (logistic regression fitted on the labeled subset)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.evaluation.classification_metrics import classification_metrics


def knn_scores(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int = 20, t: float = 0.1) -> torch.Tensor:
    """(N, C) class scores: similarity-weighted votes of the k nearest labeled features."""
    query, bank = F.normalize(query, dim=1), F.normalize(bank, dim=1)
    sim = query @ bank.T
    k = min(k, bank.shape[0])
    weights, idx = sim.topk(k, dim=1)
    votes = torch.zeros(query.shape[0], num_classes, dtype=query.dtype)
    votes.scatter_add_(1, bank_labels[idx].long(), (weights / t).exp())
    return votes / votes.sum(1, keepdim=True)


def linear_probe_scores(
    train: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, num_classes: int, weight_decay: float = 1e-4, steps: int = 100
) -> torch.Tensor:
    """(N, C) softmax scores of a logistic regression fitted (L-BFGS) on standardized features."""
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True) + 1e-6
    x, q = (train - mean) / std, (query - mean) / std
    linear = torch.nn.Linear(x.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), train_labels.long()) + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return linear(q).softmax(1)


def online_metrics(
    bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor, num_classes: int, k: int
) -> dict[str, float]:
    """knn_auc/knn_acc and probe_auc/probe_acc of `query` given the labeled `bank`."""
    out = {}
    for name, scores in (
        ("knn", knn_scores(query, bank, bank_labels, num_classes, k)),
        ("probe", linear_probe_scores(bank, bank_labels, query, num_classes)),
    ):
        for metric, value in classification_metrics(scores, query_labels).items():
            out[f"{name}_{metric}"] = value
    return out
