"""Data-efficient learning and synthesis workbench for medical imaging."""

import warnings

__version__ = "0.1.0"

# pydicom prints this once per reader on machines without NVIDIA's codec; it is not actionable.
warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
