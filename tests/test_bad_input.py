"""Bad input gives one clear error naming the file or key, and a non-zero exit."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.conftest import REPO, compose_train, run_cli, write_datalist, write_dicom, write_medmnist, write_nifti, write_png
from workbench.data import ArchiveSource, DatalistSource, ImageFolderSource, MedicalDataModule, MedMNISTSource
from workbench.errors import WorkbenchError, find_workbench_error, one_line
from workbench.runs import run_command
from workbench.train import train


def first_batch(dm: MedicalDataModule, subset: str = "test"):
    dm.setup()
    return next(iter(dm._loader(subset, shuffle=False, batch_size=2)))


def test_missing_path(tmp_path):
    with pytest.raises(WorkbenchError, match=r"nope\.npz: MedMNIST file not found"):
        MedMNISTSource(str(tmp_path / "nope.npz")).load()
    with pytest.raises(WorkbenchError, match=r"nowhere: archive not found"):
        ArchiveSource(str(tmp_path / "nowhere")).load()


def test_empty_archive(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(WorkbenchError, match=rf"{tmp_path}: no readable .* files in the archive"):
        ArchiveSource(str(tmp_path)).load()


def test_corrupt_dicom_in_archive_is_named_or_skipped(tmp_path):
    write_png(tmp_path / "good.png", np.zeros((8, 8), np.uint8))
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\x00" * 200 + b"garbage")
    with pytest.raises(WorkbenchError, match=r"broken\.dcm: not a readable \.dcm file"):
        ArchiveSource(str(tmp_path)).load()
    data = ArchiveSource(str(tmp_path), on_bad_file="skip").load()
    assert [r["id"] for r in data.splits["train"]] == [str(tmp_path / "good.png")]
    assert len(data.extra["skipped_files"]) == 1 and "broken.dcm" in data.extra["skipped_files"][0]


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_nifti_in_datalist_names_the_file(tmp_path, workers):
    """Read in a DataLoader worker process too, the error names the file in one line."""
    image = write_nifti(tmp_path / "img.nii.gz", np.random.rand(8, 8, 8).astype(np.float32))
    write_nifti(tmp_path / "seg.nii.gz", np.zeros((8, 8, 8), np.uint8))
    broken = tmp_path / "cut.nii.gz"
    broken.write_bytes(image.read_bytes()[:60])
    items = [{"image": "img.nii.gz", "label": "seg.nii.gz"}, {"image": "cut.nii.gz", "label": "seg.nii.gz"}]
    path = write_datalist(tmp_path / "d.json", {"training": items[:1] * 2, "validation": items[:1], "test": items})
    dm = MedicalDataModule(DatalistSource(str(path)), augment=None, num_workers=workers)
    with pytest.raises(WorkbenchError) as raised:
        first_batch(dm)
    assert re.fullmatch(r".*cut\.nii\.gz: cannot read as an image or volume \(.*\)", one_line(find_workbench_error(raised.value)))


def test_image_mask_shape_mismatch(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.random.rand(8, 8, 8).astype(np.float32))
    write_nifti(tmp_path / "seg.nii.gz", np.zeros((8, 8, 6), np.uint8))
    item = {"image": "img.nii.gz", "label": "seg.nii.gz"}
    path = write_datalist(tmp_path / "d.json", {"training": [item, item], "validation": [item], "test": [item]})
    with pytest.raises(WorkbenchError, match=r"img\.nii\.gz: mask shape \(8, 8, 6\) does not match image shape \(8, 8, 8\)"):
        first_batch(MedicalDataModule(DatalistSource(str(path)), augment=None))


def test_mask_values_out_of_range(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.random.rand(6, 6, 6).astype(np.float32))
    write_nifti(tmp_path / "seg.nii.gz", np.full((6, 6, 6), 255, np.uint8))
    item = {"image": "img.nii.gz", "label": "seg.nii.gz"}
    path = write_datalist(tmp_path / "d.json", {"training": [item, item], "validation": [item], "test": [item]})
    with pytest.raises(WorkbenchError, match=r"mask values span \[255, 255\]; expected class ids in \[0, 1\]"):
        first_batch(MedicalDataModule(DatalistSource(str(path)), augment=None))
    # the same masks are fine once declared as 0/255
    batch = first_batch(MedicalDataModule(DatalistSource(str(path)), augment=None, binarize_mask=True))
    assert batch["label"].max() == 1


def test_class_labels_out_of_range(tmp_path):
    path = write_medmnist(tmp_path / "x.npz", (8, 8), num_classes=3)
    with pytest.raises(WorkbenchError, match=r"x\.npz \[train\]: label 2 out of range; expected integers in \[0, 1\]"):
        MedMNISTSource(str(path), num_classes=2).load()
    write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "labels.csv").write_text("image,label\na.png,-1\na.png,1\n")
    with pytest.raises(WorkbenchError, match=r"labels\.csv: label -1 out of range"):
        ImageFolderSource(str(tmp_path)).load()


def test_inferred_class_ids_must_be_contiguous_and_declared_ones_hold(tmp_path):
    """A stray 7 among binary labels is refused, not taken for eight classes."""
    path = write_medmnist(tmp_path / "stray.npz", (8, 8), num_classes=2)
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["train_labels"][3] = 7
    np.savez(path, **arrays)
    with pytest.raises(WorkbenchError, match=r"stray\.npz: class ids \[0, 1, 7\] skip \[2, 3, 4, 5, 6\]; expected contiguous ids from 0"):
        MedMNISTSource(str(path)).load()
    with pytest.raises(WorkbenchError, match=r"stray\.npz \[train\]: label 7 out of range; expected integers in \[0, 1\]"):
        MedMNISTSource(str(path), num_classes=2).load()


def test_string_labels_in_a_csv_map_through_declared_names_or_are_refused(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_png(tmp_path / f"{name}.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "labels.csv").write_text("image,diagnosis\na.png,normal\nb.png,pneumonia\nc.png,normal\nd.png,pneumonia\n")
    with pytest.raises(WorkbenchError, match=r"labels\.csv:2: column 'diagnosis': 'normal' is not an integer class; declare the names"):
        ImageFolderSource(str(tmp_path), label_column="diagnosis").load()
    data = ImageFolderSource(str(tmp_path), label_column="diagnosis", class_names=["normal", "pneumonia"], val_split=0.0, test_split=0.0).load()
    assert data.num_classes == 2 and sorted((r["id"][-5:], r["label"]) for r in data.splits["train"]) == [
        ("a.png", 0), ("b.png", 1), ("c.png", 0), ("d.png", 1)]
    with pytest.raises(WorkbenchError, match=r"labels\.csv:3: column 'diagnosis': 'pneumonia' is not one of the declared class_names \['normal', 'covid'\]"):
        ImageFolderSource(str(tmp_path), label_column="diagnosis", class_names=["normal", "covid"]).load()


def test_a_datalist_declares_its_classes_with_its_own_labels(tmp_path):
    """Decathlon's "labels" give the class count (MSD Hippocampus: background, anterior, posterior)."""
    write_nifti(tmp_path / "img.nii.gz", np.random.rand(6, 6, 6).astype(np.float32))
    write_nifti(tmp_path / "seg.nii.gz", np.arange(216).reshape(6, 6, 6).astype(np.uint8) % 3)
    item = {"image": "img.nii.gz", "label": "seg.nii.gz"}
    labels = {"0": "background", "1": "Anterior", "2": "Posterior"}
    path = write_datalist(tmp_path / "d.json", {"labels": labels, "training": [item, item], "validation": [item], "test": [item]})
    assert DatalistSource(str(path)).load().num_classes == 3
    assert set(first_batch(MedicalDataModule(DatalistSource(str(path)), augment=None))["label"].unique().tolist()) == {0, 1, 2}
    with pytest.raises(WorkbenchError, match=r"d\.json: its 'labels' declare 3 classes, but data.source.num_classes=2"):
        DatalistSource(str(path), num_classes=2).load()


def test_csv_row_with_missing_label_or_file(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "labels.csv").write_text("image,label\na.png,1\na.png,\n")
    with pytest.raises(WorkbenchError, match=r"labels\.csv:3: empty 'image' or 'label'"):
        ImageFolderSource(str(tmp_path)).load()
    (tmp_path / "labels.csv").write_text("image,label\nb.png,1\n")
    with pytest.raises(WorkbenchError, match=r"labels\.csv:2: file '.*b\.png' not found"):
        ImageFolderSource(str(tmp_path)).load()


def test_csv_missing_rows_for_images_in_the_folder(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / name, np.zeros((8, 8), np.uint8))
    (tmp_path / "labels.csv").write_text("image,label\na.png,0\nb.png,1\n")
    with pytest.raises(WorkbenchError, match=r"labels\.csv: 1 image\(s\) under .* have no row \(e\.g\. .*c\.png\)"):
        ImageFolderSource(str(tmp_path)).load()
    data = ImageFolderSource(str(tmp_path), allow_unlisted=True, val_split=0.0, test_split=0.0).load()
    assert len(data.splits["train"]) == 2


def test_skipped_archive_files_are_said_and_recorded_and_too_few_left_is_refused(tmp_path, capsys):
    archive = tmp_path / "archive"
    for name in ("a", "b", "c"):
        write_png(archive / f"{name}.png", np.zeros((8, 8), np.uint8))
    (archive / "bad.png").write_text("not a png")
    (archive / "bad.dcm").write_bytes(b"nope")
    dm = MedicalDataModule(ArchiveSource(str(archive), on_bad_file="skip"), output_dir=str(tmp_path / "run"))
    dm.setup()
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{archive}: skipped 2 unreadable file(s) (on_bad_file=skip; all listed in split.json): ") and "bad.dcm" in line
    record = json.loads((tmp_path / "run" / "split.json").read_text())
    assert record["skipped_count"] == 2 and sorted(p.split(":")[0].rsplit("/", 1)[-1] for p in record["skipped_files"]) == ["bad.dcm", "bad.png"]
    for name in ("b", "c"):
        (archive / f"{name}.png").unlink()
    dm = MedicalDataModule(ArchiveSource(str(archive), on_bad_file="skip"))
    dm.setup()
    with pytest.raises(WorkbenchError, match=r"archive: the 'unlabeled' subset holds 1 image; training needs at least 2"):
        dm.unlabeled_dataloader()


@pytest.mark.parametrize("suffix, dims, expected", [
    (".nii.gz", 2, r"a volume of shape \(6, 6, 6\), but data.source.spatial_dims=2 expects 2D images \(set data.source.spatial_dims=3"),
    (".png", 3, r"a 2D image of shape \(6, 6\), but data.source.spatial_dims=3 expects volumes \(set data.source.spatial_dims=2"),
])
def test_an_archive_of_the_other_dimensionality_is_refused_at_scan_time(tmp_path, suffix, dims, expected):
    if suffix == ".png":
        write_png(tmp_path / "x.png", np.zeros((6, 6), np.uint8))
    else:
        write_nifti(tmp_path / "x.nii.gz", np.zeros((6, 6, 6), np.float32))
    with pytest.raises(WorkbenchError, match=rf"x{re.escape(suffix)}: {expected}"):
        ArchiveSource(str(tmp_path), spatial_dims=dims).load()


def test_datalist_path_escaping_its_root(tmp_path):
    (tmp_path / "root").mkdir()
    write_nifti(tmp_path / "outside.nii.gz", np.zeros((4, 4, 4), np.float32))
    path = write_datalist(tmp_path / "root" / "d.json", {"training": [{"image": "../outside.nii.gz", "label": "../outside.nii.gz"}]})
    with pytest.raises(WorkbenchError, match=r"path '\.\./outside\.nii\.gz' escapes the data root"):
        DatalistSource(str(path)).load()


def test_nan_voxels(tmp_path):
    array = np.random.rand(6, 6, 6).astype(np.float32)
    array[0, 0, 0] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", array)
    with pytest.raises(WorkbenchError, match=r"nan\.nii\.gz: image has NaN or Inf"):
        first_batch(MedicalDataModule(ArchiveSource(str(tmp_path), spatial_dims=3)), subset="unlabeled")


# ----- through the command line: exit status and one line on stderr ---------------------------
def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_cli_missing_data_file(tmp_path):
    result = run_cli(["workbench.train", f"paths.log_dir={tmp_path}", "data=medmnist", f"data.source.path={tmp_path}/x.npz"], REPO)
    assert result.returncode == 2
    assert error_lines(result) == [f"error: {tmp_path}/x.npz: MedMNIST file not found (expected a .npz file)"]


def test_cli_corrupt_dicom_in_archive(tmp_path):
    write_dicom(tmp_path / "ok.dcm", np.zeros((8, 8)))
    (tmp_path / "bad.dcm").write_bytes(b"DICM-but-not-really")
    result = run_cli(["workbench.train", f"paths.log_dir={tmp_path}/logs", "data=archive", f"data.source.root={tmp_path}"], REPO)
    assert result.returncode == 2
    [line] = error_lines(result)
    assert f"{tmp_path}/bad.dcm: not a readable .dcm file" in line


def test_cli_evaluate_of_a_folder_that_is_not_a_finished_run(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    result = run_cli(["workbench.evaluate", f"paths.log_dir={tmp_path}/logs", f"run_dir={tmp_path}/not_a_run"], REPO)
    assert result.returncode == 2
    assert error_lines(result) == [f"error: run_dir={tmp_path}/not_a_run: no metrics.json and config.yaml there; "
                                   "expected a finished train, evaluate or pipeline run directory"]
    assert not list((tmp_path / "logs").rglob("*.yaml"))  # nothing written


def test_cli_export_in_an_unknown_format(tmp_path):
    result = run_cli(["workbench.export", f"paths.log_dir={tmp_path}/logs", f"run_dir={tmp_path}", "format=keras"], REPO)
    assert result.returncode == 2
    assert error_lines(result) == ["error: format=keras: expected one of ('bundle', 'torchscript', 'onnx')"]


def test_cli_unknown_config_key(tmp_path):
    result = run_cli(["workbench.train", f"paths.log_dir={tmp_path}", "data.no_such_key=1"], REPO)
    assert result.returncode != 0
    assert "Could not override 'data.no_such_key'" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_file_named_png_that_is_not_one(tmp_path):
    (tmp_path / "fake.png").write_text("this is text, not a PNG")
    with pytest.raises(WorkbenchError, match=r"fake\.png: not a readable \.png file"):
        ArchiveSource(str(tmp_path)).load()
    write_png(tmp_path / "real.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "labels.csv").write_text("image,label\nreal.png,0\nfake.png,1\nreal.png,1\nreal.png,0\n")
    dm = MedicalDataModule(ImageFolderSource(str(tmp_path), split_column=None, val_split=0.0, test_split=0.0))
    dm.setup()
    with pytest.raises(WorkbenchError, match=r"fake\.png: cannot read as an image"):
        list(dm._loader("labeled", shuffle=False, batch_size=4))


def bad_input_run(cfg, capsys) -> str:
    """Runs `workbench train` on `cfg` as its command line does; returns its one error line."""
    with pytest.raises(SystemExit) as stopped:
        run_command(train, cfg)
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def test_bad_input_found_before_or_during_training_leaves_no_run_directory(tmp_path, capsys):
    path = write_medmnist(tmp_path / "nan.npz", (8, 8))
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["val_images"] = arrays["val_images"].astype(np.float32)
    arrays["val_images"][2, 0, 0] = np.nan
    np.savez(path, **arrays)
    line = bad_input_run(compose_train(["data=medmnist", f"data.source.path={path}"], tmp_path / "nan_run"), capsys)
    assert line == f"error: {path} [val][2]: image has NaN or Inf values (expected finite intensities)"
    assert not (tmp_path / "nan_run").exists()  # checked before anything was written

    write_nifti(tmp_path / "img.nii.gz", np.random.rand(8, 8, 8).astype(np.float32))
    write_nifti(tmp_path / "seg.nii.gz", np.zeros((8, 8, 8), np.uint8))
    write_nifti(tmp_path / "short.nii.gz", np.zeros((8, 8, 6), np.uint8))
    good, bad = {"image": "img.nii.gz", "label": "seg.nii.gz"}, {"image": "img.nii.gz", "label": "short.nii.gz"}
    datalist = write_datalist(tmp_path / "d.json", {"training": [good, good], "validation": [bad], "test": [good]})
    overrides = ["data=datalist", f"data.source.path={datalist}", "task=segmentation", "task.channels=[8,16]", "data.image_size=null",
                 "trainer.max_epochs=1"]
    line = bad_input_run(compose_train(overrides, tmp_path / "mask_run"), capsys)  # read by the val loader, after training began
    assert line.startswith("error: ") and "img.nii.gz: mask shape (8, 8, 6) does not match image shape (8, 8, 8)" in line
    assert not (tmp_path / "mask_run").exists()

    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "notes.txt").write_text("an earlier run's file")
    bad_input_run(compose_train(overrides, tmp_path / "earlier"), capsys)
    assert (tmp_path / "earlier" / "notes.txt").read_text() == "an earlier run's file"  # never removes what it did not create


def test_the_pipeline_report_says_how_many_files_were_skipped(tmp_path):
    from workbench.pipeline import pipeline
    from workbench.stages import quoted_list

    archive = tmp_path / "archive"
    for i in range(12):
        write_png(archive / f"{i}.png", np.full((16, 16), 20 * i, np.uint8))
    (archive / "broken.png").write_text("not a png")
    common = ["data.source.num_train=16", "data.source.num_val=4", "data.source.num_test=4", "data.source.size=16", "data.batch_size=8",
              f"data.unlabeled_source={{_target_:workbench.data.ArchiveSource,root:{archive},on_bad_file:skip}}"]
    overrides = ["recipe=ssl", "selection=val", "label_fraction=0.5", f"common={quoted_list(common)}", "stages.baseline=null",
                 "stages.pretrain=['ssl.width=0.25','trainer.max_epochs=1','data.pretrain_views.size=16']",
                 "stages.finetune=['task.width=0.25','trainer.max_epochs=1']", f"cache_dir={tmp_path / 'stages'}"]
    pipeline(compose_train(overrides, tmp_path / "run", config_name="pipeline"))
    assert "Skipped unreadable files: 1 (on_bad_file=skip; all listed in" in (tmp_path / "run" / "report.md").read_text()
