"""The data layer on an unlabeled archive: how fast a cold scan reads headers, what the scan
index saves, what the disk cache buys on the second epoch, whether the loaders keep up with the
model, and whether memory stays bounded.

    python benchmarks/archive.py                       # 10,000 DICOM slices + 200 NIfTI volumes
    python benchmarks/archive.py --dicom 2000 --nifti 40 --out /tmp/archive.json   # a quick look

Generates the archive in a temporary folder: `--dicom` 2D DICOM slices (CT, int16) in series of
`--series-length` across folders, two series per folder, and `--nifti` NIfTI volumes of
different sizes and spacings. The pretraining data are its 2D images: the DICOM slices and the
volumes' non-empty axial slices (`data.source.slices=axial`). Measures, in this order:
- `scan_files_per_second`: a cold scan (every header read, in worker processes) of every file;
- `indexed_rescan_seconds`: the same scan again, from the scan index;
- `epoch1_seconds`, `epoch2_seconds`: one pass of `workbench pretrain`'s training loader with
  `data.cache=disk` and the views drawn per batch on the device (`on_device`, so the loader
  delivers the cached images), cold then cached, one loader for both, and their ratio;
- `loader_images_per_second` (the cached epoch) against `model_images_per_second` (on-device
  views and a BYOL training step on cached batches, `--width`, this CPU or `--device`), and
  `loader_images_per_second_views_in_workers` (the CPU default: the workers draw the views);
- `peak_rss_gb`: the peak resident memory of this process and its loader workers.
Writes `results/archive.json` (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import nibabel
import numpy as np
import torch
from hydra.utils import instantiate
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from workbench.data import ArchiveSource
from workbench.stages import compose_stage

RESULTS = Path(__file__).resolve().parent / "results"


def write_series(folder: Path, length: int, side: int, rng: np.random.Generator) -> None:
    """One CT series of `length` slices, int16, positions 1 mm apart."""
    series, study = generate_uid(), generate_uid()
    for z in range(length):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = CTImageStorage, generate_uid(), ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID, series, study
        ds.Modality, ds.PatientID = "CT", folder.name
        ds.Rows = ds.Columns = side
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, float(z)], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.InstanceNumber, ds.RescaleSlope, ds.RescaleIntercept = z + 1, 1, -1024
        ds.PixelData = rng.integers(0, 2000, (side, side), dtype=np.int16).tobytes()
        ds.save_as(folder / f"{series[-8:]}_{z:04d}.dcm", enforce_file_format=True)


def generate(root: Path, dicom: int, series_length: int, nifti: int, side: int, seed: int = 0) -> int:
    """The synthetic archive; returns its number of files."""
    rng = np.random.default_rng(seed)
    for s in range(dicom // series_length):
        folder = root / "dicom" / f"patient{s // 2:04d}"  # two series per folder, as PACS exports have
        folder.mkdir(parents=True, exist_ok=True)
        write_series(folder, series_length, side, rng)
    for v in range(nifti):
        shape = tuple(int(n) for n in rng.integers(24, 48, 3))
        spacing = np.diag([*rng.uniform(0.5, 2.0, 3), 1.0])
        volume = np.zeros(shape, np.float32)
        volume[2:-2, 2:-2, 2:-2] = rng.random((shape[0] - 4, shape[1] - 4, shape[2] - 4), dtype=np.float32)
        (root / "nifti").mkdir(parents=True, exist_ok=True)
        nibabel.save(nibabel.Nifti1Image(volume, spacing), root / "nifti" / f"volume{v:04d}.nii.gz")
    return sum(1 for p in root.rglob("*") if p.is_file())


def loader_rate_with_views_in_workers(cfg, batches: int) -> float:
    """Images/s of the loader when the workers also draw the views (on_device=false, the CPU
    default), from the disk cache the epochs above filled; over `batches` batches."""
    datamodule = instantiate(cfg.data, output_dir=None)
    datamodule.setup()
    loader = iter(datamodule.train_dataloader())
    next(loader)  # workers started
    started, count = time.perf_counter(), 0
    for _, batch in zip(range(batches), loader):
        count += len(batch["views"][0])
    return count / (time.perf_counter() - started)


def peak_rss_gb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + workers) / 1024**2  # kilobytes on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicom", type=int, default=10_000, help="2D DICOM slices")
    parser.add_argument("--series-length", type=int, default=50)
    parser.add_argument("--nifti", type=int, default=200, help="NIfTI volumes")
    parser.add_argument("--side", type=int, default=64, help="DICOM slice side in pixels")
    parser.add_argument("--image-size", type=int, default=32, help="the pretraining images' side")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--model-steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS / "archive.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, index = Path(tmp) / "archive", Path(tmp) / "index"
        started = time.perf_counter()
        files = generate(root, args.dicom, args.series_length, args.nifti, args.side)
        generate_seconds = time.perf_counter() - started

        source = ArchiveSource(str(root), spatial_dims=2, slices="axial", index_dir=str(index))
        started = time.perf_counter()
        source.scan()
        cold = time.perf_counter() - started
        rescan = ArchiveSource(str(root), spatial_dims=2, slices="axial", index_dir=str(index))
        started = time.perf_counter()
        rescan.scan()
        indexed = time.perf_counter() - started
        assert rescan.header_reads == 0, "the rescan read headers: the index was not reused"

        # The disk cache keeps each image's deterministic work (read, intensity, resize); the
        # random views are drawn per batch on the training device (on_device), as on a GPU.
        overrides = ["data=archive", f"data.source.root={root}", "data.source.slices=axial", f"data.source.index_dir={index}",
                     f"data.image_size={args.image_size}", f"data.pretrain_views.size={args.image_size}", f"data.batch_size={args.batch}",
                     f"data.num_workers={args.workers}", "data.cache=disk", f"data.cache_dir={Path(tmp) / 'cache'}", "ssl=byol",
                     f"ssl.width={args.width}"]
        cfg = compose_stage("pretrain", [*overrides, "data.pretrain_views.on_device=true"])
        datamodule = instantiate(cfg.data, output_dir=None)
        datamodule.setup()
        images = len(datamodule.subsets["pretrain"])
        epochs, loader = [], datamodule.train_dataloader()  # one loader, its workers kept between epochs, as in training
        for _ in range(2):
            started = time.perf_counter()
            batches = [batch["image"] for batch in loader]
            epochs.append(time.perf_counter() - started)
        views_in_workers = loader_rate_with_views_in_workers(compose_stage("pretrain", [*overrides, "data.pretrain_views.on_device=false"]),
                                                             args.model_steps)

        from workbench.runner import build_model

        _, model = build_model(cfg, "ssl", output_dir=None)
        model.to(args.device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        views = datamodule.pretrain_views
        generator = views.generator(torch.device(args.device), 0, 0, 0)
        steps = batches[: args.model_steps]
        started = time.perf_counter()
        for i, images_ in enumerate(steps):  # what the model consumes: on-device views, then a BYOL step
            loss = model.training_step({"views": views(images_.to(args.device), generator)}, i)
            loss = loss["loss"] if isinstance(loss, dict) else loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model_seconds = time.perf_counter() - started

    result = {
        "files": files,
        "dicom_files": args.dicom,
        "nifti_files": args.nifti,
        "pretrain_images": images,
        "generate_seconds": round(generate_seconds, 1),
        "scan_files_per_second": round(files / cold, 1),
        "indexed_rescan_seconds": round(indexed, 3),
        "epoch1_seconds": round(epochs[0], 2),
        "epoch2_seconds": round(epochs[1], 2),
        "epoch2_over_epoch1_speedup": round(epochs[0] / epochs[1], 2),
        "loader_images_per_second": round(images / epochs[1], 1),
        "loader_images_per_second_views_in_workers": round(views_in_workers, 1),
        "model_images_per_second": round(sum(len(b) for b in steps) / model_seconds, 1),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "config": vars(args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        if key != "config":
            print(f"| {key} | {value} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
