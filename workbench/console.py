"""Known noise that every command would otherwise print, silenced at the `workbench` console
entry only (`WORKBENCH_QUIET=1`, set by `workbench.cli`), so that library users and the tests
still see every warning, and real warnings stay visible on the console."""

from __future__ import annotations

import logging
import os
import warnings

QUIET = "WORKBENCH_QUIET"
NOISY_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's pytree helper on current torch
    r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register",  # the same, as MONAI's reader says it
    r"monai.metrics.utils get_mask_edges:always_return_as_numpy",  # MONAI's metrics calling their own deprecated argument
    r"You passed in a `val_dataloader` but have no `validation_step`",  # the generators: the datamodule serves every stage
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # every small label budget
)
NOISY_LOG_LINES = {
    "monai.data.nvimgcodec_pydicom_plugin": "nvImageCodec is not available",  # machines without NVIDIA's codec
    "pytorch_lightning.utilities.rank_zero": "💡 Tip: For seamless cloud logging",  # an advertisement
    "lightning_fabric.utilities.rank_zero": "💡 Tip: For seamless cloud logging",
}


class DropLinesStartingWith(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_known_noise() -> None:
    """Silence the known noise, where the console entry asked for it; before MONAI or Lightning is
    imported (the codec line is logged at import)."""
    if os.environ.get(QUIET) != "1":
        return
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for logger, prefix in NOISY_LOG_LINES.items():
        logging.getLogger(logger).addFilter(DropLinesStartingWith(prefix))
