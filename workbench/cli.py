"""The `workbench` console command: `workbench <command> [hydra overrides] [-m]`.

Each command is a Hydra app run as `python -m workbench.<command>`, so Hydra's overrides,
multirun, `--help` and `--cfg` work as usual, and Lightning's DDP launcher can start the other
ranks with the same command line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from workbench.config_path import config_dir
from workbench.console import QUIET

COMMANDS = {
    "pipeline": ("workbench.pipeline", "pretrain -> synthesize -> finetune -> test -> report, with cached stages"),
    "train": ("workbench.train", "fit and test a classification (CAD) or segmentation task"),
    "evaluate": ("workbench.evaluate", "score a trained checkpoint on the val subset and the test split (1 or many processes)"),
    "pretrain": ("workbench.pretrain", "self-supervised pretraining of a backbone (SimCLR, MoCo, BYOL, DINO, MAE, ...)"),
    "synthesize": ("workbench.synthesize", "train a generator (DDPM/DDIM, latent diffusion, GAN) and export a synthetic set"),
    "generate": ("workbench.generate", "sample a trained generator into a synthetic dataset with manifest and metrics"),
    "export": ("workbench.export", "a trained classifier or segmentation model (or fold ensemble) as a MONAI bundle, TorchScript or ONNX"),
}


def usage() -> str:
    internal = ("base", "hydra")  # shared fragments and Hydra's own settings, not user choices
    groups = sorted(p.name for p in Path(config_dir()).iterdir() if p.is_dir() and p.name not in internal)
    lines = ["usage: workbench <command> [key=value ...] [-m] [--help] [--cfg job]", "", "commands:"]
    lines += [f"  {name:<10} {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", f"config groups (in {config_dir()}):", "  " + ", ".join(groups)]
    lines += ["", "`workbench <command> --help` lists each group's options and the composed config."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command '{argv[0]}'; expected one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    module = COMMANDS[argv[0]][0]
    os.environ.setdefault(QUIET, "1")  # the known noise off (workbench.console); WORKBENCH_QUIET=0 shows it
    os.execv(sys.executable, [sys.executable, "-m", module, *argv[1:]])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
