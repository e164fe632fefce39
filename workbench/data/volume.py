"""3D volumes at native resolution (`data.volume`): instead of resizing a whole volume to
`data.image_size` (a thumbnail of a 512x512x300 CT), the chain reorients it, resamples it to a
fixed voxel spacing, crops it to its foreground and cuts fixed-size patches, as nnssl, SwinUNETR
and MONAI's 3D self-supervised tutorials do.

Training subsets get `patches_per_volume` random patches per volume (each a batch item of its
own); evaluation gets one centre patch, or for segmentation the whole volume (sliding-window
inference over it, batch size 1). Everything before the random crop is deterministic, so MONAI's
CacheDataset / PersistentDataset (`data.cache`) keep the resampled volume and the patches stay
random every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import monai.transforms

from workbench.errors import WorkbenchError

CUTS = ("random", "centre", "whole")


@dataclass(frozen=True)
class VolumeSpec:
    """`data.volume`: off while `patch_size` is null."""

    patch_size: int | None = None
    spacing: Sequence[float] | None = None  # voxel size after resampling (mm); null: as stored
    orientation: str | None = "RAS"  # axis codes after reorienting; null: as stored
    crop_foreground: bool = True  # crop to the bounding box of intensities above 0 (after scaling)
    patches_per_volume: int = 4

    @classmethod
    def from_config(cls, volume: dict | None, spatial_dims: int, image_size: int | None) -> VolumeSpec | None:
        """The spec when `data.volume.patch_size` is set, else None; bad settings name their key."""
        if not volume or volume.get("patch_size") is None:
            if volume and volume.get("spacing") is not None:  # task.spacing follows it: metrics would claim mm
                raise WorkbenchError(f"data.volume.spacing={list(volume['spacing'])} without data.volume.patch_size: volumes are "
                                     "resampled only when cut into patches; set data.volume.patch_size (e.g. 64) or data.volume.spacing=null")
            return None
        unknown = sorted(set(volume) - set(cls.__dataclass_fields__))
        if unknown:
            raise WorkbenchError(f"data.volume.{unknown[0]}: not a setting; expected some of {sorted(cls.__dataclass_fields__)}")
        spec = cls(**volume)
        if spatial_dims != 3:
            raise WorkbenchError(f"data.volume.patch_size={spec.patch_size}: patches at native spacing are for 3D volumes; "
                                 f"this source is {spatial_dims}D (set data.volume.patch_size=null)")
        if image_size:
            raise WorkbenchError(f"data.volume.patch_size={spec.patch_size} with data.image_size={image_size}: patches are cut "
                                 "at native spacing, not resized; set data.image_size=null")
        if int(spec.patch_size) < 4:
            raise WorkbenchError(f"data.volume.patch_size={spec.patch_size}: expected a side of 4 voxels or more")
        if spec.spacing is not None and (len(spec.spacing) != 3 or min(spec.spacing) <= 0):
            raise WorkbenchError(f"data.volume.spacing={list(spec.spacing)}: expected three positive voxel sizes, e.g. [1.0, 1.0, 1.0]")
        if int(spec.patches_per_volume) < 1:
            raise WorkbenchError(f"data.volume.patches_per_volume={spec.patches_per_volume}: expected 1 or more")
        return spec

    @property
    def needs_metadata(self) -> bool:
        """Reorienting and resampling read each volume's affine, which MONAI keeps only while
        metadata tracking is on."""
        return self.spacing is not None or self.orientation is not None

    def steps(self, keys: list[str], cut: str) -> list[tuple[str, dict]]:
        """The volume chain after intensity scaling as (MONAI dictionary transform name, arguments
        but keys), shared by the data chain and the exported bundle; a mask (keys[1]) follows
        with nearest-neighbour resampling. `cut`: `random` patches (training), the `centre`
        patch, or the `whole` volume (segmentation's evaluation)."""
        if cut not in CUTS:
            raise ValueError(f"cut={cut!r}: expected one of {CUTS}")
        seg = len(keys) > 1
        size = [int(self.patch_size)] * 3
        steps: list[tuple[str, dict]] = []
        if self.orientation is not None:
            steps.append(("Orientationd", {"axcodes": self.orientation, "labels": None}))  # labels: the MetaTensor's own space (MONAI's coming default)
        if self.spacing is not None:
            steps.append(("Spacingd", {"pixdim": [float(v) for v in self.spacing], "mode": ["bilinear", "nearest"] if seg else "bilinear"}))
        if self.crop_foreground:
            steps.append(("CropForegroundd", {"source_key": keys[0], "allow_smaller": True}))
        steps.append(("SpatialPadd", {"spatial_size": size}))
        if cut == "random":
            steps.append(("RandSpatialCropSamplesd", {"roi_size": size, "num_samples": int(self.patches_per_volume), "random_size": False}))
        elif cut == "centre":
            steps.append(("CenterSpatialCropd", {"roi_size": size}))
        return steps

    def transforms(self, keys: list[str], cut: str) -> list:
        """`steps` as transforms (a missing mask key is allowed: unlabeled volumes)."""
        return [getattr(monai.transforms, name)(keys, allow_missing_keys=True, **kwargs) for name, kwargs in self.steps(keys, cut)]
