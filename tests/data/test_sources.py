"""Each data source loads real files: written here by the tests, and ../shared/data when present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import write_datalist, write_dicom, write_medmnist, write_nifti, write_png
from workbench.data import (
    ArchiveSource,
    DatalistSource,
    ImageFolderSource,
    MedicalDataModule,
    MedMNISTSource,
    PhantomSource,
)
from workbench.errors import WorkbenchError


@pytest.mark.parametrize("dims", [2, 3])
def test_phantom_labels_follow_the_mask_burden(dims):
    source = PhantomSource(spatial_dims=dims, size=16 if dims == 3 else 32, num_train=40, num_val=4, num_test=4)
    data = source.load()
    threshold = data.extra["burden_threshold"]
    records = data.splits["train"]
    assert records[0]["image"].shape == (1,) + (data.splits["train"][0]["image"].shape[1],) * dims
    # The seg twin of the same seed has the same images; its masks decide the class labels.
    masks = PhantomSource(task="segmentation", spatial_dims=dims, size=source.size, num_train=40, num_val=4, num_test=4).load()
    for rec, seg in zip(records, masks.splits["train"]):
        np.testing.assert_array_equal(rec["image"], seg["image"])
        assert rec["label"] == int(seg["label"].mean() > threshold)
    labels = [r["label"] for r in records]
    assert 10 <= sum(labels) <= 30  # balanced by construction


def test_phantom_is_deterministic_per_seed():
    a = PhantomSource(num_train=5, num_val=2, num_test=2, seed=3).load().splits["train"]
    b = PhantomSource(num_train=5, num_val=2, num_test=2, seed=3).load().splits["train"]
    c = PhantomSource(num_train=5, num_val=2, num_test=2, seed=4).load().splits["train"]
    assert all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, b))
    assert not np.array_equal(a[0]["image"], c[0]["image"])


@pytest.mark.parametrize(
    "shape, dims, channels", [((28, 28), 2, 1), ((28, 28, 3), 2, 3), ((28, 28, 28), 3, 1)]
)
def test_medmnist_npz_2d_rgb_and_3d(tmp_path, shape, dims, channels):
    path = write_medmnist(tmp_path / "x.npz", shape, num_classes=3, n=12)
    data = MedMNISTSource(str(path), spatial_dims=dims).load()
    assert (data.in_channels, data.num_classes, data.spatial_dims) == (channels, 3, dims)
    assert data.splits["train"][0]["image"].shape == (channels,) + (28,) * dims
    assert len(data.splits["test"]) == 12


def test_medmnist_batches_are_scaled_from_uint8(tmp_path):
    path = write_medmnist(tmp_path / "x.npz", (28, 28), n=16)
    dm = MedicalDataModule(MedMNISTSource(str(path)), batch_size=8, augment=None)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (8, 1, 28, 28) and batch["image"].dtype.is_floating_point
    raw = np.stack([r["image"] for r in dm.subsets["val"][:8]]) / 255.0
    np.testing.assert_allclose(batch["image"].numpy(), raw, atol=1e-6)


def test_pneumoniamnist_from_shared_data(shared_data):
    data = MedMNISTSource(str(shared_data / "pneumoniamnist" / "pneumoniamnist.npz")).load()
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert sum(r["label"] for r in data.splits["train"]) == 3494
    assert (data.in_channels, data.num_classes) == (1, 2)


@pytest.mark.parametrize("dtype, suffix", [(np.uint8, ".png"), (np.uint16, ".png"), (np.uint16, ".tif")])
def test_image_folder_with_csv(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    lines = ["image,label,patient_id"]
    for i in range(20):
        label = i % 2
        array = (rng.random((24, 24)) * top * (0.5 + 0.5 * label)).astype(dtype)
        write_png(tmp_path / "img" / f"{i}{suffix}", array)
        lines.append(f"img/{i}{suffix},{label},p{i // 2}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    dm = MedicalDataModule(ImageFolderSource(str(tmp_path), val_split=0.2, test_split=0.2), image_size=16, batch_size=4,
                           label_fraction=0.5)
    dm.setup()
    data = dm.data
    assert (data.in_channels, data.num_classes) == (1, 2)
    assert all(isinstance(r["image"], str) for r in data.splits["train"])  # paths, read lazily
    assert_patients_whole(data.splits, dm.subsets)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape[1:] == (1, 16, 16)
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0


def assert_patients_whole(splits: dict, subsets: dict) -> None:
    """Every record names its patient, and each patient's records sit in one split, and within
    the training split in the labeled or the unlabeled subset only."""
    assert all("patient" in r for part in splits.values() for r in part)
    owner = {}
    for name, part in splits.items():
        for r in part:
            assert owner.setdefault(r["patient"], name) == name, f"patient {r['patient']} is in {owner[r['patient']]} and {name}"
    labeled = {r["patient"] for r in subsets["labeled"]}
    unlabeled = {r["patient"] for r in splits["train"] if r["id"] not in {x["id"] for x in subsets["labeled"]}}
    assert labeled and unlabeled and not labeled & unlabeled


def test_datalist_keeps_patients_whole(tmp_path):
    rng = np.random.default_rng(2)
    items = []
    for i in range(24):  # 8 patients of 3 images, one class each
        write_png(tmp_path / "img" / f"{i}.png", (rng.random((8, 8)) * 255).astype(np.uint8))
        items.append({"image": f"img/{i}.png", "label": (i // 3) % 2, "patient": f"p{i // 3}"})
    path = write_datalist(tmp_path / "dataset.json", {"training": items})
    dm = MedicalDataModule(DatalistSource(str(path), task="classification", spatial_dims=2, val_split=0.25, test_split=0.25),
                           batch_size=2, label_fraction=0.5)
    dm.setup()
    assert_patients_whole(dm.data.splits, dm.subsets)


def test_datalist_nifti_3d_segmentation(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        image = rng.normal(size=(12, 12, 8)).astype(np.float32)
        mask = (image > 0.5).astype(np.uint8)
        write_nifti(tmp_path / "imgs" / f"{i}.nii.gz", image)
        write_nifti(tmp_path / "labels" / f"{i}.nii.gz", mask)
        items.append({"image": f"imgs/{i}.nii.gz", "label": f"labels/{i}.nii.gz"})
    path = write_datalist(tmp_path / "dataset.json", {"training": items[:4], "test": items[4:]})
    dm = MedicalDataModule(DatalistSource(str(path), val_split=0.25, test_split=0.0), batch_size=2, augment=None)
    dm.setup()
    assert {k: len(v) for k, v in dm.data.splits.items()} == {"train": 3, "val": 1, "test": 2}
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (2, 1, 12, 12, 8) and batch["label"].shape == (2, 1, 12, 12, 8)
    assert set(batch["label"].unique().tolist()) <= {0, 1}


def test_datalist_dicom_series_and_png_classification(tmp_path):
    rng = np.random.default_rng(1)
    items = []
    for i in range(4):
        for z in range(3):
            write_dicom(tmp_path / f"series{i}" / f"{z}.dcm", rng.integers(-500, 500, size=(10, 10)), z=z, series_uid=f"1.2.3.{i}")
        items.append({"image": f"series{i}", "label": i % 2})
    path = write_datalist(tmp_path / "ct.json", {"training": items, "validation": items[:2], "test": items[2:]})
    dm = MedicalDataModule(DatalistSource(str(path), task="classification", spatial_dims=3), batch_size=2)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 1, 10, 10, 3)
    assert batch["label"].tolist() == [0, 1]

    pngs = [{"image": str(write_png(tmp_path / f"{i}.png", rng.integers(0, 255, (8, 8), dtype=np.uint8)).name), "label": i % 2} for i in range(4)]
    path = write_datalist(tmp_path / "png.json", {"training": pngs, "validation": pngs, "test": pngs})
    data = DatalistSource(str(path), task="classification", spatial_dims=2).load()
    assert data.in_channels == 1 and len(data.splits["val"]) == 4


def test_archive_scans_recursively_and_streams(tmp_path):
    rng = np.random.default_rng(2)
    write_png(tmp_path / "a" / "x.png", rng.integers(0, 255, (20, 20), dtype=np.uint8))
    write_dicom(tmp_path / "b" / "c" / "y.dcm", rng.integers(0, 1000, size=(20, 20)))
    write_nifti(tmp_path / "d" / "z.nii.gz", rng.random((20, 20)).astype(np.float32))
    (tmp_path / "notes.txt").write_text("not an image")
    source = ArchiveSource(str(tmp_path), spatial_dims=2)
    dm = MedicalDataModule(source, image_size=16, batch_size=3, cache="disk", cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert len(dm.subsets["unlabeled"]) == 3 and dm.subsets["labeled"] == []
    batch = next(iter(dm.unlabeled_dataloader()))
    assert batch["image"].shape == (3, 1, 16, 16) and "label" not in batch
    assert any((tmp_path / "cache").iterdir())  # PersistentDataset wrote its cache


def test_archive_of_shared_dicom_and_nifti_samples(shared_data):
    dicoms = ArchiveSource(str(shared_data / "dicom_samples"), spatial_dims=3, suffixes=[".dcm"]).load()
    series = [r for r in dicoms.splits["train"] if r["id"].startswith(str(shared_data / "dicom_samples" / "series_CT_77654033_CT2") + "#")]
    assert len(series) == 1 and len(series[0]["image"]) == 4  # the folder's four slices are one series, one volume
    nifti = ArchiveSource(str(shared_data / "nifti_samples"), spatial_dims=3, suffixes=[".nii", ".nii.gz"]).load()
    assert len(nifti.splits["train"]) == 5


def test_shared_nifti_image_mask_pair_as_datalist(shared_data, tmp_path):
    root = shared_data / "nifti_samples"
    item = {"image": "anatomical.nii", "label": "anatomical_label.nii.gz"}
    path = write_datalist(tmp_path / "d.json", {"training": [item, item], "validation": [item], "test": [item]})
    dm = MedicalDataModule(DatalistSource(str(path), base_dir=str(root)), batch_size=1, augment=None)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (1, 1, 33, 41, 25) == batch["label"].shape


@pytest.mark.parametrize("slices, every, skip, expected", [
    ("axial", 1, True, 5),  # z = 1..5 hold the object; the other 3 axial slices are empty
    ("axial", 1, False, 8),
    ("coronal", 1, True, 6),  # y = 3..8
    ("sagittal", 2, True, 3),  # x = 2, 4, 6 of 2..7
])
def test_slices_mode_cuts_a_volume_into_its_non_empty_2d_slices(tmp_path, slices, every, skip, expected):
    """2D pretraining on 3D volumes: one record per kept slice, loaded as that 2D slice; a PNG
    beside them stays one image."""
    from workbench.data.transforms import build_transforms

    volume = np.zeros((10, 12, 8), np.float32)
    volume[2:8, 3:9, 1:6] = np.random.default_rng(0).random((6, 6, 5)) + 0.1
    write_nifti(tmp_path / "ct.nii.gz", volume)
    write_png(tmp_path / "xray.png", np.full((16, 16), 90, np.uint8))
    records = ArchiveSource(str(tmp_path), spatial_dims=2, slices=slices, slice_every=every, skip_empty_slices=skip).load().splits["train"]
    cut = [r for r in records if "slice" in r]
    assert len(cut) == expected and [r["id"] for r in records if "slice" not in r] == [str(tmp_path / "xray.png")]
    axis, index = cut[0]["slice"]
    loaded = build_transforms(task="unlabeled", spatial_dims=2, num_classes=0, train=False, intensity_mode="none")(dict(cut[0]))["image"]
    assert torch.equal(loaded[0], torch.from_numpy(np.take(volume, index, axis=axis)))


def test_slices_mode_needs_2d_and_a_known_orientation(tmp_path):
    with pytest.raises(WorkbenchError, match=r"data.source.slices=axial \(spatial_dims=3\): expected one of"):
        ArchiveSource(str(tmp_path), spatial_dims=3, slices="axial")
    with pytest.raises(WorkbenchError, match=r"data.source.slices=transverse"):
        ArchiveSource(str(tmp_path), spatial_dims=2, slices="transverse")


def test_dicom_series_are_grouped_by_uid_in_position_order_and_a_multi_frame_file_is_one_volume(tmp_path):
    """A PACS export: two series in one folder (slices written out of order) become two volumes,
    each in ImagePositionPatient order; a multi-frame file is a volume of its own."""
    from workbench.data.transforms import load_image

    for z in (2, 0, 1):
        write_dicom(tmp_path / "export" / f"a{z}.dcm", np.full((6, 5), 10 * z), z=z, series_uid="1.2.3")
    for z in (5, 3):
        write_dicom(tmp_path / "export" / f"b{z}.dcm", np.full((6, 5), 100 + z), z=z, series_uid="1.2.4")
    write_dicom(tmp_path / "enhanced" / "frames.dcm", np.stack([np.full((6, 5), k) for k in range(4)]), series_uid="1.2.5")
    records = ArchiveSource(str(tmp_path), spatial_dims=3).load().splits["train"]
    assert [r["id"] for r in records] == [f"{tmp_path / 'export'}#1.2.3", f"{tmp_path / 'export'}#1.2.4", str(tmp_path / "enhanced" / "frames.dcm")]
    first, second, frames = (load_image(r["image"]) for r in records)
    assert first.shape == (1, 5, 6, 3) and first[0, 0, 0].tolist() == [0, 10, 20]  # (columns, rows, slices), in position order
    assert second[0, 0, 0].tolist() == [103, 105]
    assert frames.shape[0] == 1 and sorted(frames.shape[1:]) == [4, 5, 6]


def test_the_scan_index_is_reused_and_refreshed_only_for_changed_files(tmp_path):
    """A second scan reads no header; a rewritten file (new size and mtime) is read again, and a
    file turned unreadable is found without rereading the others."""
    archive = tmp_path / "archive"
    for i in range(4):
        write_png(archive / f"{i}.png", np.full((8, 8), 40 * i, np.uint8))
    first = ArchiveSource(str(archive), index_dir=str(tmp_path / "index"))
    first.load()
    again = ArchiveSource(str(archive), index_dir=str(tmp_path / "index"))
    again.load()
    assert (first.header_reads, again.header_reads) == (4, 0)
    write_png(archive / "2.png", np.full((12, 12), 7, np.uint8))
    (archive / "3.png").write_text("not a png any more")
    changed = ArchiveSource(str(archive), index_dir=str(tmp_path / "index"), on_bad_file="skip")
    data = changed.load()
    assert changed.header_reads == 2 and len(data.splits["train"]) == 3 and data.extra["shapes"] == [(8, 8), (12, 12)]


def test_two_processes_scanning_one_archive_read_each_header_once(tmp_path):
    """Every rank or job scans: the first builds the index under its lock, the other waits and reads it."""
    import subprocess
    import sys

    from tests.conftest import REPO

    archive = tmp_path / "archive"
    for i in range(30):
        write_dicom(archive / f"s{i % 3}" / f"{i}.dcm", np.full((6, 6), i), z=i // 3, series_uid=f"1.2.{i % 3}")
    code = ("import sys; from workbench.data import ArchiveSource; s = ArchiveSource(sys.argv[1], spatial_dims=3, index_dir=sys.argv[2]); "
            "n = len(s.load().splits['train']); print(s.header_reads, n)")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(archive), str(tmp_path / "index")], cwd=REPO, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = sorted(tuple(map(int, r.communicate(timeout=300)[0].split())) for r in runs)
    assert outputs == [(0, 3), (30, 3)]  # one process read all 30 headers, the other none; both found 3 series


def test_headers_read_in_worker_processes_match_those_read_here(tmp_path, monkeypatch):
    from workbench.data import scan_index

    for i in range(6):
        write_png(tmp_path / f"{i}.png", np.full((8 + i, 8), 9, np.uint8))
    (tmp_path / "bad.png").write_text("no")
    here = ArchiveSource(str(tmp_path), on_bad_file="skip").scan()
    monkeypatch.setattr(scan_index, "PARALLEL_FROM", 2)
    assert ArchiveSource(str(tmp_path), on_bad_file="skip", header_workers=3).scan() == here


@pytest.mark.parametrize("syntax", ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian", "ExplicitVRBigEndian"])
def test_header_facts_read_from_stored_bytes_equal_pydicoms_values(tmp_path, syntax):
    """The scan reads Rows, Columns, frames, series UID and position from the stored bytes; they
    equal pydicom's converted values whatever the byte order and VR encoding, on an oblique slice."""
    import pydicom
    import pydicom.uid

    from workbench.data.archive import read_header

    path = write_dicom(tmp_path / "slice.dcm", np.zeros((3, 7, 5)), series_uid="1.2.840.99")
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [10.5, -3.25, 42.0], [0.0, 1.0, 0.0, 0.6, 0.0, -0.8]
    ds.file_meta.TransferSyntaxUID = getattr(pydicom.uid, syntax)
    del ds.PixelData  # headers only: big endian would need the pixels byte-swapped
    pydicom.dcmwrite(path, ds, implicit_vr=syntax.startswith("Implicit"), little_endian=not syntax.endswith("BigEndian"), force_encoding=True)
    shape, facts = read_header(path)
    normal = np.cross([0.0, 1.0, 0.0], [0.6, 0.0, -0.8])
    assert shape == (7, 5, 3) and facts["series"] == "1.2.840.99" and facts["frames"] == 3
    assert facts["position"] == pytest.approx(float(normal @ [10.5, -3.25, 42.0]))
