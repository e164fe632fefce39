"""The datamodule's subsets keep to the label budget and are recorded in split.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.data import MedicalDataModule, PhantomSource
from workbench.data.transforms import build_transforms
from workbench.errors import WorkbenchError


def phantom(**kw) -> PhantomSource:
    return PhantomSource(num_train=100, num_val=50, num_test=20, **kw)


def test_subsets_respect_the_label_budget_and_hide_labels(tmp_path):
    dm = MedicalDataModule(phantom(), label_fraction=0.1, split_seed=1, output_dir=str(tmp_path))
    dm.setup()
    assert len(dm.subsets["labeled"]) == 10 and len(dm.subsets["unlabeled"]) == 90
    assert len(dm.subsets["val"]) == 5  # val drawn at the same fraction as the labels
    assert len(dm.subsets["test"]) == 20  # test stays whole
    assert all("label" not in r for r in dm.subsets["unlabeled"])
    labeled_ids = {r["id"] for r in dm.subsets["labeled"]}
    assert not labeled_ids & {r["id"] for r in dm.subsets["unlabeled"]}
    record = json.loads((tmp_path / "split.json").read_text())
    assert set(record["labeled_ids"]) == labeled_ids
    assert record["counts"] == {
        "labeled": 10, "unlabeled": 90, "unlabeled_train": 90, "val": 5, "test": 20, "pretrain": 100, "synthetic": 0,
        "pool": 15,  # the labeled images and their val images: every label the budget allows
    }
    assert all("label" not in r for r in dm.subsets["pretrain"])  # SSL sees every image, no label


def test_unlabeled_train_leaves_out_the_separate_archive():
    """A prior-matched threshold needs images of the labeled source's own distribution."""
    archive = PhantomSource(num_train=30, num_val=2, num_test=2, seed=5)
    dm = MedicalDataModule(phantom(), label_fraction=0.1, split_seed=1, unlabeled_source=archive)
    dm.setup()
    assert len(dm.subsets["unlabeled"]) == 120 and len(dm.subsets["unlabeled_train"]) == 90
    assert dm.subsets["unlabeled_train"] == dm.subsets["unlabeled"][:90]
    assert all("label" not in r for r in dm.subsets["unlabeled_train"])


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    def ids(seed):
        dm = MedicalDataModule(phantom(), label_fraction=0.1, split_seed=seed)
        dm.setup()
        return [r["id"] for r in dm.subsets["labeled"]]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)


def test_k_shot_view(tmp_path):
    dm = MedicalDataModule(phantom(), k_shot=4, val_fraction=1.0)
    dm.setup()
    assert sorted(r["label"] for r in dm.subsets["labeled"]) == [0] * 4 + [1] * 4
    assert len(dm.subsets["val"]) == 50


def test_3d_segmentation_batches_have_masks():
    dm = MedicalDataModule(PhantomSource(task="segmentation", spatial_dims=3, size=16, num_train=4, num_val=2, num_test=2), batch_size=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["label"].shape == (2, 1, 16, 16, 16)
    assert batch["label"].dtype == torch.long


def test_intensity_modes_on_16_bit_data():
    image = np.array([[[0, 1000], [3000, 4095]]], dtype=np.uint16)
    record = {"image": image, "id": "x"}

    def run(**kw):
        t = build_transforms(task="unlabeled", spatial_dims=2, num_classes=0, train=False, **kw)
        return t(dict(record))["image"].numpy()

    np.testing.assert_allclose(run(intensity_mode="minmax"), image / 4095, atol=1e-6)
    np.testing.assert_allclose(run(intensity_mode="range", intensity_range=[0, 2000]), np.clip(image / 2000, 0, 1), atol=1e-6)
    z = run(intensity_mode="zscore")
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-3
    multi = {"image": np.stack([image[0], image[0] * 2]), "id": "y"}
    t = build_transforms(task="unlabeled", spatial_dims=2, num_classes=0, train=True, image_size=4, augment={"flip": True, "affine": True, "noise": True, "contrast": True})
    assert t(multi)["image"].shape == (2, 4, 4)  # channels kept, no RGB assumption


def test_semi_supervised_batches_pair_labeled_and_unlabeled_views():
    from workbench.data.augment import weak_strong

    dm = MedicalDataModule(phantom(), mode="semi", label_fraction=0.1, batch_size=4, unlabeled_ratio=2, unlabeled_views=weak_strong(2, cutout=6))
    dm.setup()
    loader = dm.train_dataloader()
    batches = [batch for batch, _, _ in loader]  # CombinedLoader yields (batch, index, loader index)
    assert len(batches) == 90 // 8  # one pass over the unlabeled subset (batches of 2 x 4, last partial dropped)
    batch = batches[0]
    assert batch["labeled"]["image"].shape == (4, 1, 32, 32) and batch["labeled"]["label"].shape == (4,)
    weak, strong = batch["unlabeled"]["views"]
    assert weak.shape == strong.shape == (8, 1, 32, 32)
    assert "label" not in batch["unlabeled"]
    assert not torch.allclose(weak, strong)
    # the strong view's cutout blanks a 6 x 6 square in every image
    assert all(((s == 0).sum() >= 36) for s in strong)


def test_episodes_come_from_the_labeled_subset():
    dm = MedicalDataModule(phantom(), mode="episodes", k_shot=6, episodes={"n_way": 2, "k_shot": 2, "n_query": 3, "per_epoch": 4})
    dm.setup()
    episodes = list(dm.train_dataloader())
    assert len(episodes) == 4
    assert episodes[0]["label"].tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 1, 1]
    labeled = {r["id"] for r in dm.subsets["labeled"]}
    assert all(i in labeled for e in episodes for i in e["id"])


def test_memory_cache_serves_in_memory_sources_with_the_same_items():
    """data.cache=memory now caches in-memory sources too (the deterministic chain), item for item."""
    plain, cached = (MedicalDataModule(phantom(), cache=cache) for cache in ("none", "memory"))
    for dm in (plain, cached):
        dm.setup()
    a, b = plain.dataset("test"), cached.dataset("test")
    assert type(b).__name__ == "CheckedCacheDataset" and type(a).__name__ == "CheckedDataset"
    for i in (0, 7, 19):
        assert torch.equal(a[i]["image"], b[i]["image"]) and a[i]["label"] == b[i]["label"]
    assert type(b[0]["image"]) is torch.Tensor  # no MONAI metadata in the cache either


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "semi"}, r"data.mode=semi needs data.unlabeled_ratio"),
        ({"mode": "episodes"}, r"data.mode=episodes needs data.episodes"),
        ({"unlabeled_ratio": 2}, r"data.unlabeled_ratio is set, but data.mode=plain does not use it; expected data.mode=semi"),
        ({"mode": "pretraining"}, r"data.mode='pretraining': expected one of"),
    ],
)
def test_the_training_mode_is_explicit_and_checked(kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        MedicalDataModule(phantom(), **kwargs)


def test_cross_validation_folds_split_the_budget_s_pool_and_leave_test_alone(tmp_path):
    """Labeled + val of the budget are the pool; fold k is held out as val, the rest is labeled;
    every pool image is held out exactly once; the folds are stratified and recorded."""
    plain = MedicalDataModule(phantom(), label_fraction=0.2, split_seed=3)
    plain.load()
    pool = {r["id"] for r in plain.subsets["labeled"] + plain.subsets["val"]}
    held_out, recorded = [], []
    for k in range(3):
        dm = MedicalDataModule(phantom(), label_fraction=0.2, split_seed=3, folds=3, fold=k, output_dir=str(tmp_path / str(k)))
        dm.setup()
        labeled, val = [r["id"] for r in dm.subsets["labeled"]], [r["id"] for r in dm.subsets["val"]]
        assert set(labeled) | set(val) == pool and not set(labeled) & set(val)
        assert [r["id"] for r in dm.subsets["test"]] == [r["id"] for r in plain.subsets["test"]]
        labels = [r["label"] for r in dm.subsets["val"]]
        assert abs(labels.count(0) - labels.count(1)) <= 2  # stratified: both classes in every fold
        split = json.loads((tmp_path / str(k) / "split.json").read_text())
        assert split["folds"] == 3 and split["fold"] == k and sorted(split["val_ids"]) == sorted(val)
        held_out.append(val)
        recorded.append(split["fold_ids"])
    assert sorted(i for fold in held_out for i in fold) == sorted(pool)  # each pool image held out once
    assert recorded[0] == recorded[1] == recorded[2] == held_out  # one seeded assignment


def test_cross_validation_keeps_patients_whole_and_needs_two_per_class():
    records = [{"id": f"r{i}", "image": np.zeros((1, 4, 4)), "label": i % 2, "patient": f"p{i // 2 % 6}"} for i in range(24)]
    from workbench.data.splits import cv_folds

    fold_of = cv_folds(records, 3, seed=0)
    by_patient = {}
    for r, f in zip(records, fold_of):
        by_patient.setdefault(r["patient"], set()).add(f)
    assert all(len(folds) == 1 for folds in by_patient.values())
    assert cv_folds(records, 3, seed=0) == fold_of and set(fold_of) == {0, 1, 2}
    with pytest.raises(WorkbenchError, match=r"data.folds=5: class 1 has 1 labeled unit"):
        cv_folds([{"id": "a", "label": 0}, {"id": "b", "label": 0}, {"id": "c", "label": 1}], 5, seed=0)
    with pytest.raises(WorkbenchError, match=r"data.fold=3: expected a fold in 0..2"):
        MedicalDataModule(phantom(), label_fraction=0.2, folds=3, fold=3).load()
