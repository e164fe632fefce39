"""What ahead-of-time bytecode (scripts/setup.sh's compileall step) saves each process.

Where PYTHONDONTWRITEBYTECODE is set (as on our CI machine), Python never caches the bytecode it
compiles, so without compiled files every process compiles torch, Lightning and MONAI from
source: every `workbench` command, every DDP rank, every test that starts one. Side by side,
in alternating rounds, this times a fresh interpreter importing what `workbench train` imports:
with the installed bytecode, and with none found (`-X pycache_prefix` pointed at an empty
folder, so Python looks there instead and compiles everything).

    python benchmarks/startup.py [--rounds 3]

Prints a table and writes results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
IMPORT = "import workbench.train"


def seconds_to_import(extra: list[str]) -> float:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    subprocess.run([sys.executable, *extra, "-c", IMPORT], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"installed bytecode": [], "no bytecode": []}
    with tempfile.TemporaryDirectory() as empty:
        for _ in range(args.rounds):
            times["installed bytecode"].append(seconds_to_import([]))
            times["no bytecode"].append(seconds_to_import(["-X", f"pycache_prefix={empty}"]))
    medians = {mode: statistics.median(t) for mode, t in times.items()}
    ratio = medians["no bytecode"] / medians["installed bytecode"]
    print(f"`python -c '{IMPORT}'` with PYTHONDONTWRITEBYTECODE=1, {args.rounds} alternating rounds, medians:")
    print("| mode | seconds | rounds |")
    print("|---|---|---|")
    for mode, t in times.items():
        print(f"| {mode} | {medians[mode]:.1f} | {', '.join(f'{x:.1f}' for x in t)} |")
    print(f"no bytecode / installed bytecode: {ratio:.1f}x")
    RESULTS.mkdir(exist_ok=True)
    record = {"command": IMPORT, "rounds": times, "median_seconds": medians, "ratio": ratio, "cpus": os.cpu_count()}
    (RESULTS / "startup.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
