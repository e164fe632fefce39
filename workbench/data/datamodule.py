"""The one datamodule every stage takes: labeled, unlabeled, val and test views of a source.

- `labeled`: the training records inside the label budget (`label_fraction` or `k_shot`),
  stratified and seeded, per patient where patient ids exist.
- `unlabeled`: the rest of the training records with their labels removed, plus an optional
  separate archive (`unlabeled_source`); `unlabeled_train` is that rest alone, drawn from the
  same distribution as the labeled view (a classifier's prior-matched threshold is fitted on it).
- `val`: the official val split, subsampled at the same label fraction by default, so model
  selection spends no labels beyond the budget (`val_fraction` overrides).
- `test`: the official test split, whole, from real data only.
- `pretrain`: every training image with its label removed, plus `unlabeled_source`; used when
  `pretrain_views` (a multi-view transform) is set: self-supervised training then draws from
  it, and validation yields the labeled and val views for online evaluation.
- `synthetic`: an exported synthetic set (`synthetic_source`, a SyntheticSource), mixed into
  the labeled training batches: each epoch every real labeled image plus `synthetic_ratio`
  synthetic images per real one (all of them when null), drawn afresh.
The chosen ids are written to `split.json` in the run directory.

Training batches come from the labeled view, except:
- with `pretrain_views`: from the pretrain view;
- with `unlabeled_ratio` (semi-supervised; unlabeled images per labeled image in a batch,
  FixMatch's mu): {"labeled": batch, "unlabeled": batch}, one pass over the unlabeled view per
  epoch with the labeled view cycled; `unlabeled_views` (e.g. weak and strong augmentations)
  then replaces the unlabeled view's own augmentation (drawn per batch on the training device
  where it is `on_device`);
- with `episodes` (few-shot): N-way K-shot episodes of the labeled view; under DDP each rank
  draws its own share of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.transforms import Compose
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import ConcatDataset

from workbench.data.episodes import Episodes, EpisodeSampler
from workbench.data.source import SourceData
from workbench.data.splits import class_counts, fraction_subset, k_shot_subset
from workbench.data.synthetic import RealSyntheticSampler, check_compatible
from workbench.data.transforms import WithoutMetadata, build_transforms, strip_label
from workbench.errors import WorkbenchError, unwrapped_workbench_errors
from workbench.io import write_json_atomic

CACHE_MODES = ("none", "memory", "disk")


class _PlainErrors:
    """MONAI wraps a failing transform's error in RuntimeError; bad input should surface as the
    WorkbenchError that names the file."""

    def _transform(self, index: int) -> Any:
        with unwrapped_workbench_errors():
            return super()._transform(index)


class CheckedDataset(_PlainErrors, Dataset):
    pass


class CheckedCacheDataset(_PlainErrors, CacheDataset):
    pass


class CheckedPersistentDataset(_PlainErrors, PersistentDataset):
    pass


class MedicalDataModule(pl.LightningDataModule):
    def __init__(
        self,
        source: Any,
        label_fraction: float = 1.0,
        k_shot: int | None = None,
        val_fraction: float | None = None,
        split_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int | None = None,
        intensity_mode: str = "auto",
        intensity_range: list[float] | None = None,
        binarize_mask: bool = False,
        augment: dict[str, bool] | None = None,
        cache: str = "none",
        cache_dir: str | None = None,
        unlabeled_source: Any = None,
        pretrain_views: Callable | None = None,
        unlabeled_ratio: float | None = None,
        unlabeled_views: Callable | None = None,
        episodes: dict[str, int] | None = None,
        synthetic_source: Any = None,
        synthetic_ratio: float | None = None,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        if cache not in CACHE_MODES:
            raise WorkbenchError(f"data.cache='{cache}': expected one of {CACHE_MODES}")
        if cache == "disk" and not cache_dir:
            raise WorkbenchError("data.cache='disk' needs data.cache_dir (a folder for MONAI's PersistentDataset)")
        self.source = source
        self.label_fraction = label_fraction
        self.k_shot = k_shot
        self.val_fraction = label_fraction if val_fraction is None else val_fraction
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.intensity_mode = intensity_mode
        self.intensity_range = intensity_range
        self.binarize_mask = binarize_mask
        self.augment = augment
        self.cache = cache
        self.cache_dir = cache_dir
        self.unlabeled_source = unlabeled_source
        self.pretrain_views = pretrain_views
        self.unlabeled_ratio = unlabeled_ratio
        self.unlabeled_views = unlabeled_views
        self.episodes = dict(episodes) if episodes else None
        self.synthetic_source = synthetic_source
        self.synthetic_ratio = synthetic_ratio
        self.output_dir = output_dir
        self.data: SourceData | None = None
        self.views: dict[str, list[dict[str, Any]]] = {}
        self._view_generator: tuple[tuple[Any, int], torch.Generator] | None = None

    # ----- loading and splitting -------------------------------------------------------------
    def load(self) -> SourceData:
        """Reads the source and draws the views; idempotent, and cheap to call on every rank."""
        if self.data is not None:
            return self.data
        data = self.source.load()
        train = data.splits["train"]
        if data.task == "unlabeled":
            labeled_idx: list[int] = []
        elif self.k_shot:
            labeled_idx = k_shot_subset(train, self.k_shot, self.split_seed)
        else:
            labeled_idx = fraction_subset(train, self.label_fraction, self.split_seed)
        chosen = set(labeled_idx)
        val = data.splits.get("val") or []
        if val and self.val_fraction < 1.0:
            val = [val[i] for i in fraction_subset(val, self.val_fraction, self.split_seed)]
        unlabeled_train = [strip_label(r) for i, r in enumerate(train) if i not in chosen]
        unlabeled = list(unlabeled_train)
        pretrain = [strip_label(r) for r in train]
        if self.unlabeled_source is not None:
            extra = self.unlabeled_source.load()
            if extra.spatial_dims != data.spatial_dims or extra.in_channels != data.in_channels:
                raise WorkbenchError(
                    f"{extra.description}: unlabeled archive is {extra.spatial_dims}D with {extra.in_channels} "
                    f"channel(s); expected {data.spatial_dims}D with {data.in_channels} like the labeled source"
                )
            unlabeled += [strip_label(r) for r in extra.splits["train"]]
            pretrain += [strip_label(r) for r in extra.splits["train"]]
            data.extra["skipped_files"] = extra.extra.get("skipped_files", [])
            self._check_one_shape(extra)
        self._check_one_shape(data)
        synthetic = []
        if self.synthetic_source is not None:
            extra = self.synthetic_source.load()
            check_compatible(extra, data, "data.synthetic_source")
            synthetic = extra.splits["train"]
        self.views = {
            "labeled": [train[i] for i in labeled_idx],
            "unlabeled": unlabeled,
            "unlabeled_train": unlabeled_train,
            "val": val,
            "test": data.splits.get("test") or [],
            "pretrain": pretrain,
            "synthetic": synthetic,
        }
        self.data = data
        return data

    def _check_one_shape(self, data: SourceData) -> None:
        """Batches need one size: an archive of mixed shapes needs `image_size` to resize."""
        shapes = data.extra.get("shapes") or []
        if len(shapes) > 1 and not self.image_size:
            raise WorkbenchError(
                f"{data.description}: images of {len(shapes)} different shapes ({shapes[0]}, {shapes[1]}, ...); "
                "set data.image_size to resize them to one size"
            )

    def task_kwargs(self) -> dict[str, int]:
        """What a model needs to know about the data: channels, classes, dimensions."""
        data = self.load()
        return {"in_channels": data.in_channels, "num_classes": data.num_classes, "spatial_dims": data.spatial_dims}

    def image_shape(self) -> list[int]:
        """The spatial shape of the training images as the models see them (after resizing)."""
        self.load()
        view = "labeled" if self.views["labeled"] else "unlabeled"
        return list(self.dataset(view, train=False)[0]["image"].shape[1:])

    def split_record(self) -> dict[str, Any]:
        data = self.load()
        return {
            "source": data.description,
            "task": data.task,
            "split_seed": self.split_seed,
            "label_fraction": None if self.k_shot else self.label_fraction,
            "k_shot": self.k_shot,
            "val_fraction": self.val_fraction,
            "counts": {name: len(records) for name, records in self.views.items()},
            "class_counts": {name: class_counts(self.views[name]) for name in ("labeled", "val", "test")},
            "labeled_ids": [r["id"] for r in self.views["labeled"]],
            "val_ids": [r["id"] for r in self.views["val"]],
            "synthetic_source": self.synthetic_source.path if self.synthetic_source is not None else None,
            "synthetic_ratio": self.synthetic_ratio,
            "skipped_count": len(data.extra.get("skipped_files", [])),
            "skipped_files": data.extra.get("skipped_files", []),
        }

    def write_split(self, output_dir: str | Path) -> Path:
        return write_json_atomic(Path(output_dir) / "split.json", self.split_record())

    def setup(self, stage: str | None = None) -> None:
        self.load()
        if self.output_dir and (self.trainer is None or self.trainer.is_global_zero):
            self.write_split(self.output_dir)

    # ----- datasets and loaders -------------------------------------------------------------
    def dataset(self, view: str, train: bool | None = None) -> Dataset:
        """A MONAI dataset over one view; training views get augmentation unless `train=False`."""
        data = self.load()
        train = view in ("labeled", "unlabeled", "synthetic") if train is None else train
        records = self.views[view]
        task = "unlabeled" if view in ("unlabeled", "unlabeled_train", "pretrain") else data.task
        views = self.pretrain_views if view == "pretrain" else self.unlabeled_views if view == "unlabeled" and train else None
        on_device = getattr(views, "on_device", False)  # drawn per batch in on_after_batch_transfer
        transform = build_transforms(
            task=task,
            spatial_dims=data.spatial_dims,
            num_classes=data.num_classes,
            train=train and views is None,  # multi-view transforms bring their own augmentation
            image_size=self.image_size,
            intensity_mode=self.intensity_mode,
            intensity_range=self.intensity_range or data.extra.get("intensity_range"),
            binarize_mask=self.binarize_mask,
            augment=self.augment,
        )
        if view == "pretrain" and views is None:
            raise WorkbenchError("the 'pretrain' view needs data.pretrain_views (a multi-view transform)")
        if views is not None and not on_device:
            transform = Compose([transform, views])
        from_files = bool(records) and isinstance(records[0]["image"], str)
        transform = WithoutMetadata(transform.transforms)
        with unwrapped_workbench_errors():  # CacheDataset runs the transforms while it is built
            # In memory, every source keeps the chain's deterministic start (loading, checks,
            # intensity, resizing): with on-device views that is the whole per-image work.
            if self.cache == "memory":
                return CheckedCacheDataset(records, transform, progress=False)
            if from_files and self.cache == "disk":
                return CheckedPersistentDataset(records, transform, cache_dir=self.cache_dir)
            return CheckedDataset(records, transform)

    def _loader(
        self, view: str, shuffle: bool, batch_size: int, drop_last: bool = False, train: bool | None = None
    ) -> DataLoader:
        """MONAI's DataLoader seeds each transform's random state from torch's generator (per
        worker too), so a seeded run augments identically every time."""
        if not self.views.get(view):
            raise WorkbenchError(f"the '{view}' view is empty for {self.load().description}")
        dataset = self.dataset(view, train=train)
        sampler = None
        if not shuffle and self.trainer is not None and self.trainer.world_size > 1:
            # Every rank scores its own share and no item twice: Lightning's default distributed
            # sampler pads the last batch with repeats, which would shift AUC, accuracy and Dice.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return self._dataloader(dataset, batch_size, shuffle, sampler, drop_last and len(self.views[view]) >= batch_size)

    def _dataloader(self, dataset: Any, batch_size: int, shuffle: bool, sampler: Any = None, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        if self.pretrain_views is not None:
            return self._loader("pretrain", shuffle=True, batch_size=self.batch_size, drop_last=True)
        if self.episodes:
            return self.episode_dataloader()
        labeled = self.labeled_dataloader()
        if self.unlabeled_ratio:
            size = max(1, round(self.unlabeled_ratio * self.batch_size))
            unlabeled = self._loader("unlabeled", shuffle=True, batch_size=size, drop_last=True)
            return CombinedLoader({"labeled": labeled, "unlabeled": unlabeled}, mode="max_size_cycle")
        return labeled

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On-device views (`data.pretrain_views.on_device`, `data.unlabeled_views.on_device`):
        the training batch of plain images, or a semi-supervised batch's unlabeled part, becomes
        its views here, on the device the batch was moved to."""
        if self.trainer is None or not self.trainer.training:
            return batch
        if getattr(self.pretrain_views, "on_device", False):  # a workbench.ssl.batched_views.BatchedMultiView
            return {"views": self.draw_views(self.pretrain_views, batch["image"])}
        if getattr(self.unlabeled_views, "on_device", False) and isinstance(batch, dict) and "unlabeled" in batch:
            return {**batch, "unlabeled": {"views": self.draw_views(self.unlabeled_views, batch["unlabeled"]["image"])}}
        return batch

    def draw_views(self, views: Any, images: torch.Tensor) -> list[torch.Tensor]:
        """One generator per device and epoch, seeded by (split seed, epoch, rank): a resumed run
        draws an epoch's views as the first run did."""
        epoch, rank = self.trainer.current_epoch, self.trainer.global_rank
        if self._view_generator is None or self._view_generator[0] != (images.device, epoch):
            self._view_generator = ((images.device, epoch), views.generator(images.device, self.split_seed, epoch, rank))
        return views(images, self._view_generator[1])

    def labeled_dataloader(self) -> DataLoader:
        """The labeled view, with the synthetic view mixed in when there is one."""
        labeled = self._loader("labeled", shuffle=True, batch_size=self.batch_size)
        if not self.views.get("synthetic"):
            return labeled
        real, synthetic = len(self.views["labeled"]), len(self.views["synthetic"])
        per_epoch = synthetic if self.synthetic_ratio is None else round(self.synthetic_ratio * real)
        sampler = RealSyntheticSampler(real, synthetic, per_epoch, self.split_seed)
        return self._dataloader(ConcatDataset([labeled.dataset, self.dataset("synthetic")]), self.batch_size, False, sampler)

    def episode_dataloader(self) -> DataLoader:
        """`episodes`: n_way, k_shot, n_query and per_epoch (episodes per epoch)."""
        spec = self.episodes or {}
        expected = {"n_way", "k_shot", "n_query", "per_epoch"}
        if set(spec) != expected:
            raise WorkbenchError(f"data.episodes={spec}: expected exactly the keys {sorted(expected)}")
        labels = [int(r["label"]) for r in self.views["labeled"]]
        ranks = {"num_replicas": self.trainer.world_size, "rank": self.trainer.global_rank} if self.trainer else {}
        sampler = EpisodeSampler(labels, spec["n_way"], spec["k_shot"], spec["n_query"], spec["per_epoch"], self.split_seed, **ranks)
        return DataLoader(Episodes(self.dataset("labeled")), sampler=sampler, batch_size=None, num_workers=self.num_workers)

    def unlabeled_dataloader(self) -> DataLoader:
        return self._loader("unlabeled", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.pretrain_views is not None:
            # Online evaluation of a pretraining run: features of the labeled view (kNN bank,
            # probe training set) and of the val view, both without augmentation.
            if self.load().task != "classification" or not self.views["labeled"] or not self.views["val"]:
                return []
            return [self.eval_dataloader(v) for v in ("labeled", "val")]
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, view: str) -> DataLoader:
        """Any view in order, without augmentation (prototypes, features, evaluation)."""
        return self._loader(view, shuffle=False, batch_size=self.eval_batch_size, train=False)
