"""Prototypical networks (Snell et al. 2017) for few-shot classification.

Training is episodic (data.episodes: N-way K-shot with Q queries per class): class prototypes
are the mean support embeddings, queries are classified by negative squared Euclidean distance.
Validation and test classify every image against prototypes of the whole labeled subset (so the
task's AUC, accuracy and threshold apply unchanged; under DDP each rank embeds its share of that
view and the class sums are added up across ranks); the test also reports the mean accuracy of
`eval_episodes` N-way K-shot episodes drawn from the test split, with a 95% confidence interval.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import CatMetric

from workbench.data.episodes import EpisodeSampler
from workbench.distributed import take_rank_zero_buffers
from workbench.errors import WorkbenchError
from workbench.tasks.classification import ClassificationTask


def prototype_logits(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return -torch.cdist(queries.float(), prototypes.float()) ** 2


def class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the features, number of items) per class."""
    sums = torch.zeros(num_classes, features.shape[1], device=features.device).index_add_(0, labels.long(), features.float())
    return sums, torch.bincount(labels.long(), minlength=num_classes).to(features.device)


def prototypes_of(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean feature per class; a class without items raises (it could never be predicted)."""
    if (counts == 0).any():
        raise WorkbenchError(f"prototypes: classes {torch.nonzero(counts == 0).flatten().tolist()} have no labeled images")
    return sums / counts[:, None]


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return prototypes_of(*class_sums(features, labels, num_classes))


def episode_accuracy(
    features: torch.Tensor, labels: torch.Tensor, n_way: int, k_shot: int, n_query: int, episodes: int, seed: int = 0
) -> tuple[float, float]:
    """(mean accuracy, 95% CI half-width) of N-way K-shot episodes over precomputed features."""
    sampler = EpisodeSampler(labels.tolist(), n_way, k_shot, n_query, episodes, seed)
    accuracies = []
    for idx in sampler:
        support, query = idx[: n_way * k_shot], idx[n_way * k_shot :]
        protos = features[support].reshape(n_way, k_shot, -1).mean(1)
        target = torch.arange(n_way).repeat_interleave(n_query)
        accuracies.append((prototype_logits(features[query], protos).argmax(1).cpu() == target).float().mean())
    acc = torch.stack(accuracies)
    ci = 1.96 * acc.std(unbiased=True).item() / math.sqrt(len(acc)) if len(acc) > 1 else float("nan")
    return acc.mean().item(), ci


class PrototypicalNetwork(ClassificationTask):
    scores_ensembles = False  # it scores distances to its own backbone's prototypes

    def __init__(self, n_way: int = 2, k_shot: int = 5, n_query: int = 5, eval_episodes: int = 600, **task) -> None:
        super().__init__(**task)
        self.save_hyperparameters()
        dim = self.head[-1].in_features
        self.head = nn.Identity()  # distances to prototypes replace the linear head
        self.register_buffer("prototypes", torch.zeros(self.hparams.num_classes, dim))
        self.test_features = CatMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return prototype_logits(self.backbone(x), self.prototypes)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        n_support = hp.n_way * hp.k_shot
        if len(batch["image"]) != n_support + hp.n_way * hp.n_query:
            raise WorkbenchError(
                f"task.n_way/k_shot/n_query ({hp.n_way}/{hp.k_shot}/{hp.n_query}) do not match the episodes of data.episodes"
            )
        features = self.backbone(batch["image"])
        protos = features[:n_support].reshape(hp.n_way, hp.k_shot, -1).mean(1)
        target = torch.arange(hp.n_way, device=features.device).repeat_interleave(hp.n_query)
        logits = prototype_logits(features[n_support:], protos)
        loss = F.cross_entropy(logits, target)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target))
        self.log("train/episode_acc", (logits.argmax(1) == target).float().mean(), on_step=False, on_epoch=True, batch_size=len(target))
        return loss

    @torch.no_grad()
    def refresh_prototypes(self) -> None:
        """Prototypes of the whole labeled subset, without augmentation, from the current backbone.
        Under DDP the loader gives each rank its own share of the view (no item twice), so the
        class sums and counts are added up across ranks: every rank gets the same prototypes."""
        take_rank_zero_buffers(self)  # the backbone is called outside DDP's wrapper here
        sums = torch.zeros_like(self.prototypes)
        counts = torch.zeros(len(sums), dtype=torch.long, device=self.device)
        for batch in self.trainer.datamodule.eval_dataloader("labeled"):
            batch_sums, batch_counts = class_sums(self.backbone(batch["image"].to(self.device)), batch["label"].to(self.device), len(sums))
            sums += batch_sums
            counts += batch_counts
        reduce = self.trainer.strategy.reduce
        self.prototypes.copy_(prototypes_of(reduce(sums, reduce_op="sum"), reduce(counts, reduce_op="sum")))

    def on_validation_epoch_start(self) -> None:
        self.refresh_prototypes()

    def on_test_epoch_start(self) -> None:
        self.refresh_prototypes()

    def _eval_step(self, batch: dict, stage: str) -> None:
        features = self.backbone(batch["image"])
        if stage == "test":
            self.test_features.update(features.float())
        self._update_scores(stage, prototype_logits(features, self.prototypes), batch["label"].long())

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        labels = self.targets[stage].compute().reshape(-1).long() if stage == "test" else None
        metrics = super()._eval_epoch_end(stage)
        if stage == "test":
            features = self.test_features.compute().reshape(len(labels), -1)
            self.test_features.reset()
            hp = self.hparams
            acc, ci = episode_accuracy(features, labels, hp.n_way, hp.k_shot, hp.n_query, hp.eval_episodes)
            self.log("test/episode_acc", acc)
            self.log("test/episode_acc_ci95", ci)
            metrics.update(episode_acc=acc, episode_acc_ci95=ci)
        return metrics
