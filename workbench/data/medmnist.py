"""MedMNIST v2 `.npz` files (2D and 3D, 28/64/128/224 px) read from a local path.

Official keys: `{train,val,test}_images` with shape (N, H, W), (N, H, W, 3) or (N, D, H, W),
and `{train,val,test}_labels` with shape (N, 1) (multi-label sets such as ChestMNIST are not
supported yet and are refused).
"""

from __future__ import annotations

import numpy as np

from workbench.data.files import existing_file
from workbench.data.source import SourceData, check_class_labels, class_count
from workbench.errors import WorkbenchError

SPLITS = ("train", "val", "test")


class MedMNISTSource:
    def __init__(self, path: str, spatial_dims: int = 2, num_classes: int | None = None) -> None:
        self.path = path
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes

    def _open(self) -> dict[str, np.ndarray]:
        path = existing_file(self.path, "MedMNIST file", "a .npz file")
        try:
            with np.load(path) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as e:  # zipfile, pickle and value errors all mean "not an npz"
            raise WorkbenchError(f"{path}: not a readable .npz file ({type(e).__name__})") from e
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in arrays]
        if missing:
            raise WorkbenchError(f"{path}: missing keys {missing}; expected MedMNIST keys {{train,val,test}}_{{images,labels}}")
        return arrays

    def _channel_first(self, images: np.ndarray, where: str) -> np.ndarray:
        rgb = images.ndim == self.spatial_dims + 2 and images.shape[-1] == 3
        if images.ndim == self.spatial_dims + 1:
            return images[:, None]
        if rgb:
            return np.moveaxis(images, -1, 1)
        raise WorkbenchError(
            f"{where}: images of shape {images.shape} do not fit spatial_dims={self.spatial_dims} "
            "(expected (N, H, W[, 3]) for 2D or (N, D, H, W) for 3D)"
        )

    def load(self) -> SourceData:
        arrays = self._open()
        labels = {s: arrays[f"{s}_labels"] for s in SPLITS}
        for split, y in labels.items():
            if y.ndim != 2 or y.shape[1] != 1:
                raise WorkbenchError(
                    f"{self.path}: {split}_labels has shape {y.shape}; expected (N, 1) single-label classes"
                )
        # Declared: each split's labels are checked against it below; inferred: ids contiguous from 0.
        num_classes = self.num_classes or class_count(np.concatenate([y[:, 0] for y in labels.values()]), None, str(self.path))
        splits = {}
        in_channels = 1
        for split in SPLITS:
            where = f"{self.path} [{split}]"
            images = self._channel_first(arrays[f"{split}_images"], where)
            y = labels[split][:, 0]
            if len(images) != len(y):
                raise WorkbenchError(f"{where}: {len(images)} images but {len(y)} labels")
            if not np.issubdtype(images.dtype, np.integer):
                bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))
                if bad.size:
                    raise WorkbenchError(f"{where}[{bad[0]}]: image has NaN or Inf values (expected finite intensities)")
            check_class_labels(y, num_classes, where)
            in_channels = images.shape[1]
            splits[split] = [
                {"image": images[i], "label": int(y[i]), "id": f"{split}-{i}"} for i in range(len(images))
            ]
        return SourceData(
            splits=splits,
            task="classification",
            spatial_dims=self.spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
            description=str(self.path),
            extra={"intensity_range": [0.0, 255.0]},
        )
