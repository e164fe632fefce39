"""Built-in phantom data: seeded, generated on the fly, 2D or 3D, with a mask and an image label.

Each phantom is MONAI's `create_test_image_2d/3d` (bright blobs on noise). Its mask is the blob
foreground, and its image-level label is "high lesion burden": 1 when the foreground fills more
than the median fraction of a fixed pilot sample. The label is a deterministic function of the
mask, so a classifier has a known answer to find, and the classes are balanced by construction.
"""

from __future__ import annotations

import numpy as np
from monai.data import create_test_image_2d, create_test_image_3d

from workbench.data.source import SourceData
from workbench.errors import WorkbenchError

_PILOT_SEED = 12345
_PILOT_COUNT = 256
_SPLIT_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003}


class PhantomSource:
    """Phantoms for classification (`task="classification"`) or segmentation (`"segmentation"`)."""

    def __init__(
        self,
        task: str = "classification",
        spatial_dims: int = 2,
        size: int = 32,
        num_train: int = 200,
        num_val: int = 60,
        num_test: int = 100,
        max_objects: int = 6,
        noise: float = 0.3,
        seed: int = 0,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise WorkbenchError(f"data.source.spatial_dims={spatial_dims}: expected 2 or 3")
        if size < 16:
            raise WorkbenchError(f"data.source.size={size}: expected at least 16 pixels")
        if min(num_train, num_val, num_test) < 2:
            raise WorkbenchError("data.source.num_train/num_val/num_test: expected at least 2 each")
        self.task = task
        self.spatial_dims = spatial_dims
        self.size = size
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.max_objects = max_objects
        self.noise = noise
        self.seed = seed

    def _draw(self, rs: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.size,) * self.spatial_dims
        make = create_test_image_2d if self.spatial_dims == 2 else create_test_image_3d
        image, mask = make(
            *shape,
            num_objs=int(rs.randint(1, self.max_objects + 1)),
            rad_max=max(3, self.size // 5),
            rad_min=2,
            noise_max=self.noise,
            num_seg_classes=1,
            random_state=rs,
        )
        return image.astype(np.float32)[None], (mask > 0).astype(np.uint8)[None]

    def burden_threshold(self) -> float:
        rs = np.random.RandomState(_PILOT_SEED)
        fractions = [self._draw(rs)[1].mean() for _ in range(_PILOT_COUNT)]
        return float(np.median(fractions))

    def load(self) -> SourceData:
        threshold = self.burden_threshold()
        splits = {}
        for split, count in self.counts.items():
            rs = np.random.RandomState(self.seed + _SPLIT_OFFSETS[split])
            records = []
            for i in range(count):
                wanted = int(rs.randint(2))
                # Rejection-sample until the burden matches the drawn class: balanced labels.
                while True:
                    image, mask = self._draw(rs)
                    if int(mask.mean() > threshold) == wanted:
                        break
                label = mask if self.task == "segmentation" else wanted
                records.append({"image": image, "label": label, "id": f"phantom-{split}-{i}"})
            splits[split] = records
        return SourceData(
            splits=splits,
            task=self.task,
            spatial_dims=self.spatial_dims,
            in_channels=1,
            num_classes=2,
            description=f"phantom{self.spatial_dims}d",
            extra={"burden_threshold": threshold},
        )
