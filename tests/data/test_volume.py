"""3D volumes at native resolution (`data.volume`): resampled to a spacing, cropped to the
foreground, cut into fixed-size patches; the cache keeps the resampled volume."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, set_track_meta
from monai.transforms import Compose, Randomizable

from tests.conftest import compose_train, write_datalist, write_dicom, write_nifti
from workbench.data import ArchiveSource, MedicalDataModule
from workbench.data.augment import multi_view
from workbench.data.transforms import build_transforms, load_image
from workbench.data.volume import VolumeSpec
from workbench.errors import WorkbenchError


def box_volume(shape: tuple[int, int, int], box: tuple[slice, ...], ramp: bool = False) -> np.ndarray:
    """Zeros with a bright box: the foreground a crop should find (rising along x with `ramp`,
    so that patches from different places differ)."""
    array = np.zeros(shape, dtype=np.int16)
    array[box] = 100
    if ramp:
        array[box] += np.arange(shape[0], dtype=np.int16)[box[0], None, None]
    return array


def deterministic_part(chain: Compose) -> Compose:
    """The transforms before the first random one: what MONAI's caches keep."""
    first_random = next(i for i, t in enumerate(chain.transforms) if isinstance(t, Randomizable))
    return Compose(chain.transforms[:first_random])


def test_patches_come_at_the_configured_spacing_and_size(tmp_path):
    """2 x 2 x 4 mm voxels resampled to 1 mm: the 16 x 16 x 8 voxel box (32 mm a side) becomes
    about 32 voxels a side after cropping to the foreground; training draws 3 random 16^3
    patches of it, evaluation one centre patch; both come out as plain tensors."""
    path = write_nifti(tmp_path / "ct.nii.gz", box_volume((24, 24, 12), (slice(4, 20), slice(4, 20), slice(2, 10)), ramp=True),
                       affine=np.diag([2.0, 2.0, 4.0, 1.0]))
    spec = VolumeSpec.from_config({"patch_size": 16, "spacing": [1.0, 1.0, 1.0], "patches_per_volume": 3}, spatial_dims=3, image_size=None)
    train = build_transforms(task="unlabeled", spatial_dims=3, num_classes=0, train=False, volume=spec, random_patches=True)
    set_track_meta(True)  # as in a DataLoader worker
    resampled = deterministic_part(train)({"image": str(path)})["image"]
    assert isinstance(resampled, MetaTensor)
    assert resampled.pixdim.tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert all(31 <= n <= 36 for n in resampled.shape[1:]), resampled.shape  # 32 mm, plus interpolated edges
    assert "".join(nib.aff2axcodes(resampled.affine.numpy())) == "RAS"
    patches = train({"image": str(path)})
    assert len(patches) == 3
    assert all(type(p["image"]) is torch.Tensor and p["image"].shape == (1, 16, 16, 16) for p in patches)
    assert not torch.equal(patches[0]["image"], patches[1]["image"]) or not torch.equal(patches[1]["image"], patches[2]["image"])
    centre = build_transforms(task="unlabeled", spatial_dims=3, num_classes=0, train=False, volume=spec)({"image": str(path)})
    assert centre["image"].shape == (1, 16, 16, 16) and centre["image"].min() > 0  # inside the box


def test_a_volume_stored_left_to_right_is_reoriented_to_ras(tmp_path):
    """The same box stored with the x axis flipped (a negative x spacing) reads the same after
    reorienting: a marker voxel at the volume's right end lands at the left of the array."""
    array = box_volume((8, 6, 4), (slice(0, 8), slice(0, 6), slice(0, 4)))
    array[0, 0, 0] = 50  # the marker
    path = write_nifti(tmp_path / "flipped.nii.gz", array, affine=np.diag([-1.0, 1.0, 1.0, 1.0]))
    spec = VolumeSpec.from_config({"patch_size": 4, "crop_foreground": False}, spatial_dims=3, image_size=None)
    chain = build_transforms(task="unlabeled", spatial_dims=3, num_classes=0, train=False, volume=spec, intensity_mode="none", random_patches=True)
    set_track_meta(True)
    image = deterministic_part(chain)({"image": str(path)})["image"]
    assert image[0, -1, 0, 0] == 50 and image[0, 0, 0, 0] == 100


def test_a_dicom_series_carries_its_spacing_and_position(tmp_path):
    """The series' affine comes from its headers: 0.7 mm between columns, 0.5 mm between rows,
    2.5 mm between slices, as MONAI's own DICOM reader gives for the same folder."""
    for k in range(4):
        write_dicom(tmp_path / "series" / f"s{k}.dcm", np.full((6, 5), k), z=2.5 * k, series_uid="1.2.3", pixel_spacing=(0.5, 0.7))
    paths = [str(tmp_path / "series" / f"s{k}.dcm") for k in range(4)]
    set_track_meta(True)
    volume = load_image(paths)
    assert volume.shape == (1, 5, 6, 4)
    assert volume.pixdim.tolist() == pytest.approx([0.7, 0.5, 2.5])
    from monai.transforms import LoadImage

    monai_volume = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=True)(str(tmp_path / "series"))
    assert np.allclose(volume.affine.numpy(), monai_volume.affine.numpy(), atol=1e-5)
    assert torch.equal(volume.as_tensor(), monai_volume.as_tensor().float())


def test_pretraining_batches_hold_every_volumes_patches_and_the_disk_cache_keeps_resampled_volumes(tmp_path):
    """An archive of volumes of three shapes and spacings (no image_size needed): a batch of its
    3 volumes gives 3 x 2 patches per view; the disk cache holds one file per volume, and the
    next epoch draws other patches from it."""
    shapes = [((20, 20, 10), (1.0, 1.0, 2.0)), ((16, 24, 12), (1.5, 1.0, 1.0)), ((30, 30, 8), (0.8, 0.8, 3.0))]
    for i, (shape, spacing) in enumerate(shapes):
        box = tuple(slice(2, n - 2) for n in shape)
        write_nifti(tmp_path / "archive" / f"v{i}.nii.gz", box_volume(shape, box, ramp=True), affine=np.diag([*spacing, 1.0]))
    dm = MedicalDataModule(
        ArchiveSource(str(tmp_path / "archive"), spatial_dims=3), mode="pretrain", batch_size=3, cache="disk",
        cache_dir=str(tmp_path / "cache"), pretrain_views=multi_view(3, size=12),
        volume={"patch_size": 12, "spacing": [1.0, 1.0, 1.0], "patches_per_volume": 2},
    )
    dm.setup()
    loader = dm.train_dataloader()
    epochs = [[batch["views"] for batch in loader] for _ in range(2)]
    assert [[tuple(v.shape) for v in views] for views in epochs[0]] == [[(6, 1, 12, 12, 12)] * 2]  # one batch
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3  # the three volumes, resampled
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])


def test_segmentation_trains_on_patches_and_is_scored_on_whole_volumes(tmp_path):
    """Training batches are image/mask patch pairs; validation hands over each whole resampled
    volume alone, which the task scores with sliding windows of the patch size."""
    entries = []
    for i in range(6):
        mask = box_volume((20, 20, 10), (slice(6, 14), slice(6, 14), slice(3, 7))).astype(np.uint8) // 100
        write_nifti(tmp_path / f"img{i}.nii.gz", mask.astype(np.float32) * 80 + 10, affine=np.diag([1.0, 1.0, 2.0, 1.0]))
        write_nifti(tmp_path / f"seg{i}.nii.gz", mask, affine=np.diag([1.0, 1.0, 2.0, 1.0]))
        entries.append({"image": f"img{i}.nii.gz", "label": f"seg{i}.nii.gz"})
    datalist = write_datalist(tmp_path / "dataset.json", {"training": entries[:4], "validation": entries[4:5], "test": entries[5:]})
    cfg = compose_train(["task=segmentation", "data=datalist", f"data.source.path={datalist}", "data.source.spatial_dims=3",
                         "data.image_size=null", "data.volume.patch_size=8", "data.volume.spacing=[1.0,1.0,1.0]",
                         "data.volume.crop_foreground=false", "data.batch_size=2", "task.channels=[16,32,64]"], tmp_path / "run")
    assert cfg.task.roi_size == 8 and list(cfg.task.spacing) == [1.0, 1.0, 1.0]
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 1, 8, 8, 8) and batch["label"].shape == (8, 1, 8, 8, 8)  # 2 volumes x 4 patches
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (1, 1, 20, 20, 19)  # 10 voxel centres 2 mm apart span 18 mm: 19 at 1 mm
    task = instantiate(cfg.task, **dm.task_kwargs()).eval()
    assert task.roi_size == [8, 8, 8]
    assert task.infer(val["image"]).shape == (1, 2, 20, 20, 19)  # a UNet of 8^3 windows over the whole volume
    assert dm.image_shape() == [8, 8, 8]  # the network's input grid: the patches


@pytest.mark.parametrize("volume, dims, image_size, key", [
    ({"patch_size": 16}, 2, None, "data.volume.patch_size=16"),
    ({"patch_size": 16}, 3, 64, "data.image_size=null"),
    ({"patch_size": 16, "spacing": [1.0, 1.0]}, 3, None, "data.volume.spacing=[1.0, 1.0]"),
    ({"patch_size": 16, "patch": 3}, 3, None, "data.volume.patch"),
    ({"patch_size": 16, "patches_per_volume": 0}, 3, None, "data.volume.patches_per_volume=0"),
    ({"patch_size": None, "spacing": [1.0, 1.0, 1.0]}, 3, None, "data.volume.spacing=[1.0, 1.0, 1.0] without data.volume.patch_size"),
])
def test_bad_volume_settings_name_their_key(volume, dims, image_size, key):
    with pytest.raises(WorkbenchError, match=key.replace("[", r"\[").replace("]", r"\]")):
        VolumeSpec.from_config(volume, spatial_dims=dims, image_size=image_size)


def test_percentile_scaling_maps_each_images_percentiles_to_the_unit_range():
    image = torch.arange(101, dtype=torch.float32).reshape(1, 101, 1, 1)  # percentile p is the value p
    chain = build_transforms(task="unlabeled", spatial_dims=3, num_classes=0, train=False, intensity_mode="percentile",
                             intensity_percentiles=[10, 90])
    out = chain({"image": image})["image"].flatten()
    assert out[10] == 0 and out[90] == 1 and out[50] == pytest.approx(0.5) and out.min() == 0 and out.max() == 1
    with pytest.raises(WorkbenchError, match="data.intensity_percentiles"):
        build_transforms(task="unlabeled", spatial_dims=3, num_classes=0, train=False, intensity_mode="percentile", intensity_percentiles=[90, 10])


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_the_exported_bundle_prepares_a_file_as_the_data_chain_does(tmp_path, task):
    """The bundle's preprocessing (MONAI bundle syntax, parsed by monai.bundle) reorients,
    resamples, scales and crops a volume file to the very tensor evaluation sees."""
    from monai.bundle import ConfigParser

    from workbench.export import preprocessing

    path = write_nifti(tmp_path / "v.nii.gz", box_volume((20, 16, 10), (slice(3, 17), slice(2, 14), slice(2, 8)), ramp=True),
                       affine=np.diag([-1.0, 1.5, 2.5, 1.0]))
    entries = [{"image": str(path), "label": 0 if task == "classification" else str(path)}] * 3
    datalist = write_datalist(tmp_path / "dataset.json", {"training": entries[:1], "validation": entries[1:2], "test": entries[2:]})
    overrides = [] if task == "classification" else ["task=segmentation", "data.binarize_mask=true"]
    cfg = compose_train([*overrides, "data=datalist", f"data.source.path={datalist}", f"task_kind={task}", "data.image_size=null",
                         "data.volume.patch_size=8", "data.volume.spacing=[1.2,1.2,1.2]", "data.intensity_mode=percentile"], tmp_path / "run")
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    expected = dm.dataset("test")[0]["image"]
    parser = ConfigParser({"imports": ["$import torch"], "pre": {"_target_": "Compose", "transforms": preprocessing(dm, 3)}})
    prepared = parser.get_parsed_content("pre")({"image": str(path)})["image"]
    assert type(prepared) is torch.Tensor and prepared.shape == expected.shape
    assert torch.allclose(prepared, expected, atol=1e-5)
    if task == "classification":
        assert expected.shape == (1, 8, 8, 8)  # the centre patch
    else:
        assert min(expected.shape[1:]) > 8  # the whole foreground at 1.2 mm
