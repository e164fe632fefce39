"""Shared fixtures: composing the real Hydra configs, and writers for tiny medical files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from workbench.config_path import config_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a clean skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


# Fails a run whose backward pass leaves a trainable parameter without a gradient (DDP would).
EVERY_PARAMETER_LEARNS = "+callbacks.every_parameter_learns._target_=tests.ddp_checks.EveryParameterLearns"


def compose_train(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """The `workbench train` (or `config_name`) config with `overrides`, writing into `output_dir`."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
    return cfg


def run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m workbench.<command> ...` in a subprocess, as a user runs it."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# ----- writers for tiny real files --------------------------------------------------------------
def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def write_dicom(
    path: Path, array: np.ndarray, z: float = 0.0, series_uid: str | None = None, pixel_spacing: tuple[float, float] = (1.0, 1.0)
) -> Path:
    """A minimal but valid CT slice (int16, explicit VR little endian); a 3D array (frames,
    rows, columns) makes a multi-frame file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientID = "test"
    if array.ndim == 3:  # an enhanced multi-frame file: frames first
        ds.NumberOfFrames = array.shape[0]
    ds.Rows, ds.Columns = array.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelSpacing = list(pixel_spacing)  # [between rows, between columns]
    ds.SliceThickness = 1.0
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.InstanceNumber = int(z) + 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = array.astype(np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_medmnist(path: Path, shape: tuple[int, ...], num_classes: int = 2, n: int = 40, seed: int = 0) -> Path:
    """An .npz with MedMNIST's official keys; images carry a class-dependent brightness."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        labels = rng.integers(0, num_classes, size=(n, 1)).astype(np.uint8)
        base = rng.integers(0, 120, size=(n, *shape))
        images = (base + 100 * labels.reshape((n,) + (1,) * len(shape))).clip(0, 255).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)
    return path


def write_datalist(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path
