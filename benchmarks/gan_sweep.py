"""Does the conditional DCGAN improve with more discriminator updates per generator update?

With one discriminator update per generator update, the generator outpaces the spectrally
normalised discriminator: its real-minus-fake score gap (`train/d_gap`) stays near 0 and the
samples of a class collapse to nearly one image (recall 0 in synthesis.json). This trains the
GAN of synthesis.py once per `discriminator_steps:epochs` variant on PneumoniaMNIST and scores
each export against the real **val** split (not test: this sweep chooses the default), with the
feature network of a finished synthesis.py run.

    python benchmarks/gan_sweep.py --features benchmarks/results/synthesis_runs/feature_network

Writes benchmarks/results/gan_sweep.json and prints a table; runs go to
benchmarks/results/gan_sweep_runs/ (not tracked). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from common import add_trainer_argument, run_stage, trainer_overrides

from workbench.synthesize import synthesize

RESULTS = Path(__file__).parent / "results"
QUALITY = ("fid", "kid", "precision", "recall", "ms_ssim_synthetic", "ms_ssim_real")


def variant(text: str) -> tuple[int, int]:
    try:
        steps, epochs = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected discriminator_steps:epochs, e.g. 4:120") from None
    return steps, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=variant, nargs="+", default=[(1, 60), (2, 120), (4, 120)],
                        help="discriminator_steps:epochs pairs")
    parser.add_argument("--features", required=True, help="feature network (backbone.pt or its run directory) for FID and the rest")
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--limit-batches", type=int, default=None, help="smoke test: this many training batches per epoch")
    parser.add_argument("--out", default=str(RESULTS / "gan_sweep.json"))
    parser.add_argument("--runs", default=str(RESULTS / "gan_sweep_runs"), help="where the runs go (reused when finished)")
    add_trainer_argument(parser)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    smoke = [f"+trainer.limit_train_batches={args.limit_batches}"] if args.limit_batches else []
    records = []
    for steps, epochs in args.variants:
        run = run_stage(synthesize, "synthesize", [
            "data=pneumoniamnist", "data.batch_size=64", "generator=dcgan", f"generator.discriminator_steps={steps}",
            f"trainer.max_epochs={epochs}", *trainer_overrides(args), "logger=csv", f"data.num_workers={args.workers}",
            f"paths.data_dir={args.data_dir}", "callbacks.sample_grid.every_n_epochs=10", f"generate.n_per_class={args.per_class}",
            "generate.reference=val", f"generate.features={args.features}", *smoke,
        ], Path(args.runs) / f"ndis{steps}")
        records.append({
            "discriminator_steps": steps, "epochs": epochs,
            "train_seconds": run["train_seconds"], "d_gap": run["train/d_gap"],
            **{key: run[f"quality/{key}"] for key in QUALITY},
        })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": records, "config": vars(args)}, indent=2, default=str) + "\n")
    print("\n| discriminator_steps | epochs | d_gap | " + " | ".join(QUALITY) + " |\n|" + "---|" * (3 + len(QUALITY)))
    for r in records:
        print(f"| {r['discriminator_steps']} | {r['epochs']} | {r['d_gap']:.3f} | " + " | ".join(f"{r[k]:.3f}" for k in QUALITY) + " |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
