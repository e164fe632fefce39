"""The one datamodule every stage takes: loaders over the record subsets of a source.

`workbench.data.subsets.plan_subsets` decides which records go where (labeled, unlabeled,
val, test, pretrain, synthetic) from the source and the label budget; this module loads the
sources, records the plan in `split.json` and builds MONAI datasets and loaders over it.

`mode` says what the training batches are, explicitly (the task configs set it):
- `plain`: the labeled subset, with an exported synthetic set (`synthetic_source`, a
  SyntheticSource) mixed in when given: each epoch every real labeled image plus
  `synthetic_ratio` synthetic images per real one (all of them when null), drawn afresh;
- `pretrain`: the pretrain subset through `pretrain_views` (a multi-view augmentation);
  validation then yields the labeled and val subsets for online evaluation;
- `semi`: {"labeled": batch, "unlabeled": batch} with `unlabeled_ratio` unlabeled images per
  labeled one (FixMatch's mu), one pass over the unlabeled subset per epoch with the labeled
  subset cycled; `unlabeled_views` (e.g. weak and strong augmentations) replaces the unlabeled
  subset's own augmentation (drawn per batch on the training device where it is `on_device`);
- `episodes`: N-way K-shot episodes of the labeled subset (`episodes`); under DDP each rank
  draws its own share of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import ConcatDataset

from workbench.data.episodes import Episodes, EpisodeSampler
from workbench.data.source import SourceData
from workbench.data.splits import class_counts
from workbench.data.subsets import LabelBudget, class_prior, fold_ids, plan_subsets
from workbench.data.synthetic import RealSyntheticSampler, check_compatible
from workbench.data.transforms import build_transforms
from workbench.data.volume import VolumeSpec
from workbench.errors import WorkbenchError, unwrapped_workbench_errors
from workbench.io import write_json_atomic

CACHE_MODES = ("none", "memory", "disk")
# Each training mode and the setting it needs (none for plain).
MODES = {"plain": None, "pretrain": "pretrain_views", "semi": "unlabeled_ratio", "episodes": "episodes"}


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
        mode: str = "plain",
        label_fraction: float = 1.0,
        k_shot: int | None = None,
        val_fraction: float | None = None,
        split_seed: int = 0,
        folds: int | None = None,
        fold: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int | None = None,
        intensity_mode: str = "auto",
        intensity_range: list[float] | None = None,
        intensity_percentiles: list[float] | None = None,
        binarize_mask: bool = False,
        augment: dict[str, bool] | None = None,
        cache: str = "none",
        cache_dir: str | None = None,
        volume: dict | None = None,
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
        check_mode(mode, pretrain_views=pretrain_views, unlabeled_ratio=unlabeled_ratio, episodes=episodes)
        if cache not in CACHE_MODES:
            raise WorkbenchError(f"data.cache='{cache}': expected one of {CACHE_MODES}")
        if cache == "disk" and not cache_dir:
            raise WorkbenchError("data.cache='disk' needs data.cache_dir (a folder for MONAI's PersistentDataset)")
        self.source = source
        self.mode = mode
        self.label_fraction = label_fraction
        self.k_shot = k_shot
        self.val_fraction = label_fraction if val_fraction is None else val_fraction
        self.split_seed = split_seed
        self.folds = folds
        self.fold = fold
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.intensity_mode = intensity_mode
        self.intensity_range = intensity_range
        self.intensity_percentiles = intensity_percentiles
        self.binarize_mask = binarize_mask
        self.augment = augment
        self.cache = cache
        self.cache_dir = cache_dir
        self.volume = dict(volume) if volume else None
        self.volume_spec: VolumeSpec | None = None  # set by load(), which knows the dimensions
        self.unlabeled_source = unlabeled_source
        self.pretrain_views = pretrain_views
        self.unlabeled_ratio = unlabeled_ratio
        self.unlabeled_views = unlabeled_views
        self.episodes = dict(episodes) if episodes else None
        self.synthetic_source = synthetic_source
        self.synthetic_ratio = synthetic_ratio
        self.output_dir = output_dir
        self.data: SourceData | None = None
        self.subsets: dict[str, list[dict[str, Any]]] = {}
        self._view_generator: tuple[tuple[Any, int], torch.Generator] | None = None

    # ----- loading and splitting -------------------------------------------------------------
    def load(self) -> SourceData:
        """Reads the sources and plans the subsets; idempotent, and cheap to call on every rank."""
        if self.data is not None:
            return self.data
        data = self.source.load()
        archive = None
        if self.unlabeled_source is not None:
            archive = self.unlabeled_source.load()
            if archive.spatial_dims != data.spatial_dims or archive.in_channels != data.in_channels:
                raise WorkbenchError(
                    f"{archive.description}: unlabeled archive is {archive.spatial_dims}D with {archive.in_channels} "
                    f"channel(s); expected {data.spatial_dims}D with {data.in_channels} like the labeled source"
                )
            data.extra["skipped_files"] = archive.extra.get("skipped_files", [])
            self._check_one_shape(archive)
        self.volume_spec = VolumeSpec.from_config(self.volume, data.spatial_dims, self.image_size)
        self._check_one_shape(data)
        synthetic = None
        if self.synthetic_source is not None:
            synthetic = self.synthetic_source.load()
            check_compatible(synthetic, data, "data.synthetic_source")
        self.subsets = plan_subsets(data, self.budget(), archive, synthetic)
        self.data = data
        return data

    def budget(self) -> LabelBudget:
        return LabelBudget(self.label_fraction, self.k_shot, self.val_fraction, self.split_seed, self.folds, self.fold)

    def _check_one_shape(self, data: SourceData) -> None:
        """Batches need one size: an archive of mixed shapes needs `image_size` to resize."""
        shapes = data.extra.get("shapes") or []
        if len(shapes) > 1 and not self.image_size and self.volume_spec is None:
            raise WorkbenchError(
                f"{data.description}: images of {len(shapes)} different shapes ({shapes[0]}, {shapes[1]}, ...); "
                "set data.image_size to resize them to one size"
            )

    def task_kwargs(self) -> dict[str, int]:
        """What a model needs to know about the data: channels, classes, dimensions."""
        data = self.load()
        return {"in_channels": data.in_channels, "num_classes": data.num_classes, "spatial_dims": data.spatial_dims}

    def image_shape(self) -> list[int]:
        """The spatial shape of the training images as the models see them (after resizing; the
        patches' with `volume`, whose evaluation volumes differ in shape)."""
        self.load()
        if self.volume_spec is not None:
            return [int(self.volume_spec.patch_size)] * 3
        subset = "labeled" if self.subsets["labeled"] else "unlabeled"
        return list(self.dataset(subset, train=False)[0]["image"].shape[1:])

    def class_prior(self) -> list[float] | None:
        """Each class's share of the labeled subset (None without class labels)."""
        data = self.load()
        return class_prior(self.subsets["labeled"], data.num_classes) if data.task == "classification" else None

    def fold_ids(self) -> list[list[str]]:
        """With cross-validation (`folds`), the ids of each fold of the pool; else empty."""
        self.load()
        return fold_ids(self.subsets["pool"], self.budget()) if self.folds is not None else []

    def labels_balanced(self) -> bool:
        """Whether the labels were drawn k per class, not at the data's class shares."""
        return bool(self.k_shot)

    def split_record(self) -> dict[str, Any]:
        data = self.load()
        return {
            "source": data.description,
            "task": data.task,
            "split_seed": self.split_seed,
            "label_fraction": None if self.k_shot else self.label_fraction,
            "k_shot": self.k_shot,
            "val_fraction": self.val_fraction,
            **({"folds": len(folds), "fold": self.fold, "fold_ids": folds} if (folds := self.fold_ids()) else {}),
            "mode": self.mode,
            "counts": {name: len(records) for name, records in self.subsets.items()},
            "class_counts": {name: class_counts(self.subsets[name]) for name in ("labeled", "val", "test")},
            "labeled_ids": [r["id"] for r in self.subsets["labeled"]],
            "val_ids": [r["id"] for r in self.subsets["val"]],
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
    def dataset(self, subset: str, train: bool | None = None) -> Dataset:
        """A MONAI dataset over one subset; training subsets get augmentation unless `train=False`."""
        data = self.load()
        train = subset in ("labeled", "unlabeled", "synthetic") if train is None else train
        records = self.subsets[subset]
        task = "unlabeled" if subset in ("unlabeled", "unlabeled_train", "pretrain") else data.task
        views = self.pretrain_views if subset == "pretrain" else self.unlabeled_views if subset == "unlabeled" and train else None
        on_device = getattr(views, "on_device", False)  # drawn per batch in on_after_batch_transfer
        transform = build_transforms(
            task=task,
            spatial_dims=data.spatial_dims,
            num_classes=data.num_classes,
            train=train and views is None,  # multi-view transforms bring their own augmentation
            image_size=self.image_size,
            intensity_mode=self.intensity_mode,
            intensity_range=self.intensity_range or data.extra.get("intensity_range"),
            intensity_percentiles=self.intensity_percentiles,
            binarize_mask=self.binarize_mask,
            augment=self.augment,
            volume=self.volume_spec,
            random_patches=train or subset == "pretrain",  # pretraining's views bring their own augmentation, not its patches
        )
        if subset == "pretrain" and views is None:
            raise WorkbenchError("the 'pretrain' subset needs data.pretrain_views (a multi-view transform)")
        if views is not None and not on_device:
            transform = type(transform)([*transform.transforms, views])
        from_files = bool(records) and isinstance(records[0]["image"], str)
        with unwrapped_workbench_errors():  # CacheDataset runs the transforms while it is built
            # In memory, every source keeps the chain's deterministic start (loading, checks,
            # intensity, resizing or resampling): with on-device views that is the whole per-image work.
            if self.cache == "memory":
                return CheckedCacheDataset(records, transform, progress=False)
            if from_files and self.cache == "disk":
                return CheckedPersistentDataset(records, transform, cache_dir=self.cache_dir)
            return CheckedDataset(records, transform)

    def _loader(
        self, subset: str, shuffle: bool, batch_size: int, drop_last: bool = False, train: bool | None = None
    ) -> DataLoader:
        """MONAI's DataLoader seeds each transform's random state from torch's generator (per
        worker too), so a seeded run augments identically every time."""
        if not self.subsets.get(subset):
            raise WorkbenchError(f"the '{subset}' subset is empty for {self.load().description}")
        if shuffle and len(self.subsets[subset]) < 2:  # a training batch of one image fails batch norm
            raise WorkbenchError(f"{self.load().description}: the '{subset}' subset holds 1 image; training needs at least 2")
        dataset = self.dataset(subset, train=train)
        sampler = None
        if not shuffle and self.trainer is not None and self.trainer.world_size > 1:
            # Every rank scores its own share and no item twice: Lightning's default distributed
            # sampler pads the last batch with repeats, which would shift AUC, accuracy and Dice.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
            )
        return self._dataloader(dataset, batch_size, shuffle, sampler, drop_last and len(self.subsets[subset]) >= batch_size)

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
        if self.mode == "pretrain":
            return self._loader("pretrain", shuffle=True, batch_size=self.batch_size, drop_last=True)
        if self.mode == "episodes":
            return self.episode_dataloader()
        labeled = self.labeled_dataloader()
        if self.mode == "semi":
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
        if getattr(self.pretrain_views, "on_device", False):  # a workbench.data.augment.BatchedMultiView
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
        """The labeled subset, with the synthetic subset mixed in when there is one."""
        labeled = self._loader("labeled", shuffle=True, batch_size=self.batch_size)
        if not self.subsets.get("synthetic"):
            return labeled
        real, synthetic = len(self.subsets["labeled"]), len(self.subsets["synthetic"])
        per_epoch = synthetic if self.synthetic_ratio is None else round(self.synthetic_ratio * real)
        sampler = RealSyntheticSampler(real, synthetic, per_epoch, self.split_seed)
        return self._dataloader(ConcatDataset([labeled.dataset, self.dataset("synthetic")]), self.batch_size, False, sampler)

    def episode_dataloader(self) -> DataLoader:
        """`episodes`: n_way, k_shot, n_query and per_epoch (episodes per epoch)."""
        spec = self.episodes or {}
        expected = {"n_way", "k_shot", "n_query", "per_epoch"}
        if set(spec) != expected:
            raise WorkbenchError(f"data.episodes={spec}: expected exactly the keys {sorted(expected)}")
        labels = [int(r["label"]) for r in self.subsets["labeled"]]
        ranks = {"num_replicas": self.trainer.world_size, "rank": self.trainer.global_rank} if self.trainer else {}
        sampler = EpisodeSampler(labels, spec["n_way"], spec["k_shot"], spec["n_query"], spec["per_epoch"], self.split_seed, **ranks)
        return DataLoader(Episodes(self.dataset("labeled")), sampler=sampler, batch_size=None, num_workers=self.num_workers)

    def unlabeled_dataloader(self) -> DataLoader:
        return self._loader("unlabeled", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.mode == "pretrain":
            # Online evaluation of a pretraining run: features of the labeled subset (kNN bank,
            # probe training set) and of the val subset, both without augmentation.
            if self.load().task != "classification" or not self.subsets["labeled"] or not self.subsets["val"]:
                return []
            return [self.eval_dataloader(v) for v in ("labeled", "val")]
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def plain_dataloader(self, subset: str) -> DataLoader:
        """Every image of a subset in order, without augmentation, in this process alone (no
        distributed sampler), e.g. for rank 0's out-of-fold predictions."""
        self.load()
        return self._dataloader(self.dataset(subset, train=False), self.evaluation_batch_size(), False)

    def eval_dataloader(self, subset: str) -> DataLoader:
        """Any subset in order, without augmentation (prototypes, features, evaluation)."""
        return self._loader(subset, shuffle=False, batch_size=self.evaluation_batch_size(), train=False)

    def evaluation_batch_size(self) -> int:
        """`eval_batch_size`, but 1 for volumes segmented whole at native spacing (`volume`):
        their shapes differ from volume to volume."""
        whole_volumes = self.volume_spec is not None and self.load().task == "segmentation"
        return 1 if whole_volumes else self.eval_batch_size


def check_mode(mode: str, **settings: Any) -> None:
    """The mode is known, its setting is given, and no other mode's setting is."""
    if mode not in MODES:
        raise WorkbenchError(f"data.mode='{mode}': expected one of {sorted(MODES)}")
    needed = MODES[mode]
    if needed and not settings[needed]:
        raise WorkbenchError(f"data.mode={mode} needs data.{needed}")
    stray = [key for key, value in settings.items() if value and key != needed]
    if stray:
        raise WorkbenchError(f"data.{stray[0]} is set, but data.mode={mode} does not use it; expected data.mode="
                             f"{next(m for m, k in MODES.items() if k == stray[0])} or data.{stray[0]}=null")
