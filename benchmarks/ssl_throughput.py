"""Images per second of the workbench's SimCLR module under the Lightning Trainer against a bare
PyTorch loop with the same lightly loss, backbone, batch, views, data and optimizer schedule.

The two run alternately, `--rounds` times each, in one process; the median of each side is
reported, with the ratio workbench / bare. Timing covers the training batches only (data
loading and augmentation included, Trainer setup excluded) on both sides.

    python benchmarks/ssl_throughput.py [--images 512] [--batch 64] [--size 28] [--rounds 3]

Writes benchmarks/results/ssl_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from common import ImagesPerSecond

from workbench.data import MedicalDataModule, PhantomSource
from workbench.data.augment import multi_view
from workbench.models.backbones import build_backbone
from workbench.models.optim import warmup_cosine
from workbench.ssl import SimCLR

RESULTS = Path(__file__).parent / "results" / "ssl_throughput.json"


def datamodule(args) -> MedicalDataModule:
    source = PhantomSource(size=args.size, num_train=args.images, num_val=2, num_test=2)
    dm = MedicalDataModule(source, batch_size=args.batch, pretrain_views=multi_view(2, args.size), num_workers=args.workers)
    dm.setup()
    return dm


def workbench_run(args) -> float:
    torch.manual_seed(0)
    model = SimCLR(in_channels=1, backbone=args.backbone, image_size=args.size, warmup_epochs=0)
    meter = ImagesPerSecond()
    trainer = pl.Trainer(
        max_epochs=1, accelerator=args.accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[meter],
    )
    trainer.fit(model, datamodule=datamodule(args))
    return meter.rate


def bare_run(args) -> float:
    torch.manual_seed(0)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    backbone, dim = build_backbone(args.backbone, 2, 1, True, args.size)
    projection = SimCLRProjectionHead(dim, 512, 128)
    model = torch.nn.Sequential(backbone, projection).to(device).train()
    criterion = NTXentLoss(temperature=0.1)
    loader = datamodule(args).train_dataloader()
    opt = warmup_cosine(model.parameters(), "adamw", lr=1e-3, weight_decay=1e-4, total_steps=len(loader), warmup_steps=0)
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    images, start = 0, time.perf_counter()
    for batch in loader:
        v0, v1 = (v.to(device, non_blocking=True) for v in batch["views"])
        loss = criterion(model(v0), model(v1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        images += len(v0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--accelerator", default="gpu" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sides = {"workbench": [], "bare": []}
    for r in range(args.rounds):  # alternate, so drift in machine load hits both sides alike
        sides["workbench"].append(workbench_run(args))
        sides["bare"].append(bare_run(args))
        print(f"round {r + 1}: workbench {sides['workbench'][-1]:.1f} img/s, bare {sides['bare'][-1]:.1f} img/s", flush=True)
    wb, bare = statistics.median(sides["workbench"]), statistics.median(sides["bare"])
    result = {
        "workbench_img_per_s": round(wb, 2),
        "bare_img_per_s": round(bare, 2),
        "ratio": round(wb / bare, 4),
        "rounds": sides,
        "config": {**vars(args), "method": "simclr", "views": 2, "torch_threads": torch.get_num_threads()},
        "machine": platform.platform(),
        "device": torch.cuda.get_device_name() if args.accelerator == "gpu" else f"cpu x{torch.get_num_threads()} threads",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| side | img/s (median) |\n|---|---|")
    print(f"| workbench (Lightning) | {wb:.1f} |\n| bare PyTorch loop | {bare:.1f} |\n| ratio | {wb / bare:.3f} |")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
