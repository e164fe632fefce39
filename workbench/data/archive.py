"""An unlabeled archive: a directory tree scanned recursively for DICOM, NIfTI and PNG files.

Files are listed, not loaded; the datamodule streams them through MONAI's Dataset,
CacheDataset or PersistentDataset (`cache`), so a large archive never has to fit in memory.
For 3D, the slices of a DICOM series form one volume: files are grouped by SeriesInstanceUID
(several series in one folder become several volumes) and ordered by their position along the
slice normal (ImagePositionPatient; InstanceNumber where it is missing); a multi-frame file is
a volume of its own. Without header checks (`check_headers=false`) a folder is one series.
Each file's header is checked at scan time; `on_bad_file="skip"` skips unreadable files and
lists them instead of stopping. With `index_dir`, the headers go into a scan index that later
runs and the other processes of a run reuse (workbench/data/scan_index.py).

`slices=axial|coronal|sagittal` (with spatial_dims=2) pretrains 2D backbones on the slices of
3D volumes: each volume contributes its slices along that axis (every `slice_every`-th),
leaving out empty ones (a single value throughout) when `skip_empty_slices`; 2D files in the
same archive stay single images.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from workbench.data.files import existing_dir, probe_channels
from workbench.data.scan_index import index_path, scanned
from workbench.data.source import SourceData
from workbench.errors import WorkbenchError

DEFAULT_SUFFIXES = (".dcm", ".nii", ".nii.gz", ".png")
# The array axis of each slice orientation in a NIfTI volume as nibabel reads it (x, y, z).
SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


# Header elements are read from their stored bytes: pydicom's value conversion costs more
# than reading the file at scan time. A freshly read dataset holds every element raw (pydicom
# converts a value only when it is first accessed).
def raw_element(ds, tag: int):
    """The element as stored, or None when absent or empty."""
    element = ds.get_item(tag)
    return None if element is None or not element.value else element


def raw_text(ds, tag: int) -> str | None:
    """A text element's value (UI, DS, IS: backslash-separated values), or None when absent."""
    element = raw_element(ds, tag)
    return None if element is None else element.value.decode("ascii", "replace").strip(" \0")


def raw_numbers(ds, tag: int) -> list[float] | None:
    text = raw_text(ds, tag)
    return [float(v) for v in text.split("\\")] if text else None


def raw_unsigned(ds, tag: int) -> int | None:
    """A US element (Rows, Columns): two bytes in the dataset's byte order (any VR encoding)."""
    element = raw_element(ds, tag)
    return None if element is None else int.from_bytes(element.value[:2], "little" if element.is_little_endian else "big")


def slice_position(ds) -> float:
    """Where a DICOM slice lies along its series' slice normal (or its InstanceNumber)."""
    position, orientation = raw_numbers(ds, 0x00200032), raw_numbers(ds, 0x00200037)
    if position and orientation and len(position) == 3 and len(orientation) == 6:
        (a, b, c), (d, e, f) = orientation[:3], orientation[3:]
        normal = (b * f - c * e, c * d - a * f, a * e - b * d)
        return sum(n * p for n, p in zip(normal, position))
    return (raw_numbers(ds, 0x00200013) or [0.0])[0]


def read_header(path: Path) -> tuple[tuple[int, ...], dict | None]:
    """The image shape in `path`'s header, and for DICOM its series facts (`series` UID,
    `position` along the slice normal, `frames`); WorkbenchError unless the header is readable."""
    suffix = _suffix(path)
    try:
        if suffix == ".dcm":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            rows, columns = raw_unsigned(ds, 0x00280010), raw_unsigned(ds, 0x00280011)
            if rows is None or columns is None:
                raise ValueError("no image rows/columns")
            frames = int((raw_numbers(ds, 0x00280008) or [1])[0])
            shape = (rows, columns, *((frames,) if frames > 1 else ()))
            return shape, {"series": raw_text(ds, 0x0020000E) or str(path.parent), "position": slice_position(ds), "frames": frames}
        if suffix in (".nii", ".nii.gz"):
            import nibabel

            return tuple(int(n) for n in nibabel.load(path).header.get_data_shape()), None
        from PIL import Image

        with Image.open(path) as im:
            im.verify()
            return (im.height, im.width), None
    except Exception as e:
        raise WorkbenchError(f"{path}: not a readable {suffix} file ({type(e).__name__}: {e})") from None


def dicom_volumes(files: list[Path], facts: dict[str, dict]) -> list[str | list[str]]:
    """DICOM files as volumes: each series (by UID) as its files in position order, each
    multi-frame file alone; files whose header was not read go by folder (MONAI reads a folder
    as one series)."""
    series: dict[str, list[tuple[float, str]]] = defaultdict(list)
    volumes: list[str | list[str]] = []
    folders = sorted({str(p.parent) for p in files if str(p) not in facts})
    for p in files:
        fact = facts.get(str(p))
        if fact is None:
            continue
        if fact["frames"] > 1:
            volumes.append(str(p))
        else:
            series[fact["series"]].append((fact["position"], str(p)))
    ordered = [[path for _, path in sorted(slices)] for slices in series.values()]
    return [*folders, *sorted(ordered, key=lambda files_: files_[0]), *volumes]


class ArchiveSource:
    def __init__(
        self,
        root: str,
        spatial_dims: int = 2,
        suffixes: list[str] | tuple[str, ...] = DEFAULT_SUFFIXES,
        on_bad_file: str = "error",
        check_headers: bool = True,
        slices: str | None = None,
        slice_every: int = 1,
        skip_empty_slices: bool = True,
        index_dir: str | None = None,
        header_workers: int | None = None,
    ) -> None:
        if on_bad_file not in ("error", "skip"):
            raise WorkbenchError(f"data.unlabeled_source.on_bad_file='{on_bad_file}': expected 'error' or 'skip'")
        if slices is not None and (slices not in SLICE_AXES or spatial_dims != 2):
            raise WorkbenchError(f"data.source.slices={slices} (spatial_dims={spatial_dims}): expected one of {sorted(SLICE_AXES)} "
                                 "with spatial_dims=2 (2D images cut from 3D volumes)")
        if int(slice_every) < 1:
            raise WorkbenchError(f"data.source.slice_every={slice_every}: expected 1 or more")
        self.slices, self.slice_every, self.skip_empty_slices = slices, int(slice_every), skip_empty_slices
        self.dicom_facts: dict[str, dict] = {}  # filled by scan()
        self.index_dir, self.header_workers = index_dir, header_workers
        self.header_reads = 0  # headers this process read (the rest came from the index)
        self.root = root
        self.spatial_dims = spatial_dims
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.on_bad_file = on_bad_file
        self.check_headers = check_headers

    def scan(self) -> tuple[list[Path], list[str], dict[str, tuple[int, ...]]]:
        """Files with a wanted suffix (sorted), the bad ones skipped (as 'path: reason'), and the
        header shape of each good file (when headers are checked)."""
        root = existing_dir(self.root, "archive")
        files = sorted(p for p in root.rglob("*") if p.is_file() and _suffix(p) in self.suffixes)
        good, skipped, shapes = [], [], {}
        entries: dict[str, dict] = {}
        if self.check_headers:
            index = index_path(self.index_dir, root, self.suffixes) if self.index_dir else None
            entries, self.header_reads = scanned(files, root, read_header, index, self.header_workers)
        for path in files:
            try:
                if self.check_headers:
                    entry = entries[str(path)]
                    if "error" in entry:
                        raise WorkbenchError(entry["error"])
                    shapes[str(path)] = self.check_dimensions(path, tuple(entry["shape"]))
                    if entry["facts"] is not None:
                        self.dicom_facts[str(path)] = entry["facts"]
                good.append(path)
            except WorkbenchError as e:
                if self.on_bad_file == "error":
                    raise
                skipped.append(str(e))
        if not good:
            raise WorkbenchError(f"{root}: no readable {'/'.join(self.suffixes)} files in the archive")
        if skipped:  # said on the console as well as recorded in split.json
            shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
            print(f"{root}: skipped {len(skipped)} unreadable file(s) (on_bad_file=skip; all listed in split.json): {shown}", file=sys.stderr)
        return good, skipped, shapes

    def check_dimensions(self, path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
        """A volume where 2D images are expected, or a 2D image where volumes are, is refused at
        scan time, naming the setting to change (DICOM slices make volumes by series)."""
        volume = len(shape) >= 3 and shape[2] > 1
        if self.spatial_dims == 2 and volume and not self.slices:
            raise WorkbenchError(f"{path}: a volume of shape {shape}, but data.source.spatial_dims=2 expects 2D images "
                                 "(set data.source.spatial_dims=3 to read volumes, or data.source.slices=axial to cut them into slices)")
        if self.spatial_dims == 3 and not volume and _suffix(path) != ".dcm":
            raise WorkbenchError(f"{path}: a 2D image of shape {shape}, but data.source.spatial_dims=3 expects volumes "
                                 "(set data.source.spatial_dims=2 to read 2D images)")
        return shape

    def records_of(self, path: str) -> list[dict]:
        """One record per image: the file, or in slices mode one per kept slice of a volume
        (`slice`: [array axis, index], which the loading transform cuts out)."""
        if not self.slices or _suffix(Path(path)) not in (".nii", ".nii.gz"):
            return [{"image": path, "id": path}]
        import nibabel
        import numpy as np

        axis = SLICE_AXES[self.slices]
        volume = nibabel.load(path)
        if len(volume.shape) < 3 or volume.shape[2] == 1:  # a 2D image stored as NIfTI
            return [{"image": path, "id": path}]
        indices = range(0, volume.shape[axis], self.slice_every)
        if self.skip_empty_slices:  # the whole volume read once here, at scan time
            data = np.asarray(volume.dataobj)
            indices = [k for k in indices if np.ptp(np.take(data, k, axis=axis)) > 0]
        return [{"image": path, "slice": [axis, int(k)], "id": f"{path}#{self.slices}{k}"} for k in indices]

    def load(self) -> SourceData:
        files, skipped, shapes = self.scan()
        if self.spatial_dims == 3:
            dicom = [p for p in files if _suffix(p) == ".dcm"]
            volumes = dicom_volumes(dicom, self.dicom_facts) + [str(p) for p in files if _suffix(p) != ".dcm"]
            records = [{"image": v, "id": f"{Path(v[0]).parent}#{self.dicom_facts[v[0]]['series']}"} if isinstance(v, list) else {"image": v, "id": v}
                       for v in volumes]
        else:
            records = [record for path in files for record in self.records_of(str(path))]
        return SourceData(
            splits={"train": records},
            task="unlabeled",
            spatial_dims=self.spatial_dims,
            in_channels=probe_channels(records[0]["image"]),
            num_classes=0,
            description=str(self.root),
            extra={"skipped_files": skipped, "shapes": sorted(set(shapes.values()))},
        )
