"""The shared data layer: sources, splits, transforms and the datamodule."""

from workbench.data.archive import ArchiveSource
from workbench.data.datalist import DatalistSource
from workbench.data.datamodule import MedicalDataModule
from workbench.data.image_folder import ImageFolderSource
from workbench.data.medmnist import MedMNISTSource
from workbench.data.phantom import PhantomSource
from workbench.data.source import SourceData
from workbench.data.synthetic import SyntheticSource

__all__ = [
    "ArchiveSource",
    "DatalistSource",
    "ImageFolderSource",
    "MedMNISTSource",
    "MedicalDataModule",
    "PhantomSource",
    "SourceData",
    "SyntheticSource",
]
