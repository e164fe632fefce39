"""Self-supervised pretraining on unlabeled archives, one method per file on lightly's losses,
heads and utilities; views from MONAI transforms (2D and 3D)."""

from workbench.ssl.barlow_twins import BarlowTwins
from workbench.ssl.base import SSLMethod
from workbench.ssl.byol import BYOL
from workbench.ssl.dino import DINO
from workbench.ssl.mae import MAE
from workbench.ssl.moco import MoCo
from workbench.ssl.simclr import SimCLR
from workbench.ssl.simsiam import SimSiam
from workbench.ssl.vicreg import VICReg

__all__ = ["BYOL", "DINO", "MAE", "BarlowTwins", "MoCo", "SSLMethod", "SimCLR", "SimSiam", "VICReg"]
