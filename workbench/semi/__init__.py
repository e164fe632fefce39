"""Semi-supervised and few-shot finetuning: each method is a downstream task (classification or
segmentation) that also learns from the datamodule's unlabeled subset, or from episodes."""

from workbench.semi.cps import CrossPseudoSupervision
from workbench.semi.fixmatch import FixMatch
from workbench.semi.freematch import FreeMatch
from workbench.semi.mean_teacher import MeanTeacher
from workbench.semi.protonet import PrototypicalNetwork
from workbench.semi.seg_mean_teacher import MeanTeacherSegmentation
from workbench.semi.ua_mt import UncertaintyAwareMeanTeacher

__all__ = [
    "CrossPseudoSupervision",
    "FixMatch",
    "FreeMatch",
    "MeanTeacher",
    "MeanTeacherSegmentation",
    "PrototypicalNetwork",
    "UncertaintyAwareMeanTeacher",
]
