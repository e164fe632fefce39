"""Data-efficient learning and synthesis workbench for medical imaging."""

from workbench.console import quiet_known_noise

__version__ = "0.1.0"

quiet_known_noise()  # first, before any module of ours imports MONAI or Lightning
