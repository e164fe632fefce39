"""The `workbench` command as a user runs it: help, a real PneumoniaMNIST run, DDP on CPU (a sweep
of 2-process jobs, two torchrun nodes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lightning_fabric.plugins.environments.lightning import find_free_network_port

from tests.conftest import REPO

WORKBENCH = Path(sys.executable).parent / "workbench"


def workbench(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    return subprocess.run([str(WORKBENCH), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def run_dir_of(result: subprocess.CompletedProcess) -> Path:
    lines = [line for line in result.stdout.splitlines() if line.startswith("Run directory: ")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return Path(lines[-1].removeprefix("Run directory: "))


def test_standard_ssl_module_is_not_shadowed():
    out = subprocess.run([sys.executable, "-c", "import ssl; print(ssl.OPENSSL_VERSION)"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("OpenSSL")


def test_help_lists_commands_and_config_groups():
    result = workbench(["--help"])
    assert result.returncode == 0
    assert "train" in result.stdout and "data, " in result.stdout and "trainer" in result.stdout
    result = workbench(["train", "--help"])
    assert result.returncode == 0
    assert "data: archive, datalist, image_folder, medmnist, phantom2d, phantom3d, pneumoniamnist" in result.stdout
    assert workbench(["nonsense"]).returncode == 2


def test_pneumoniamnist_from_the_command_line_reports_test_auc_and_acc(shared_data, tmp_path):
    result = workbench(
        ["train", "experiment=pneumoniamnist", "data.label_fraction=0.05", "data.batch_size=32", "trainer.max_epochs=3", f"paths.log_dir={tmp_path}"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/auc=" in result.stdout and "test/acc=" in result.stdout
    run = run_dir_of(result)
    metrics = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    # 5% of each class of train (1214 / 3494) and of val (135 / 389), nothing more
    assert split["class_counts"]["labeled"] == {"0": 61, "1": 175} and metrics["labeled_images"] == 236
    assert split["class_counts"]["val"] == {"0": 7, "1": 19} and metrics["val_images"] == 26
    assert split["counts"]["test"] == 624
    assert 0.75 < metrics["test/auc"] <= 1.0 and 0.5 < metrics["test/acc"] <= 1.0


RANK_WEIGHTS = "+callbacks.rank_weights._target_=tests.ddp_checks.RankWeights"
TINY_DATA = ["data.source.num_train=16", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=4"]


def assert_ranks_trained_in_step(run: Path) -> None:
    weights = json.loads((run / "rank_weights.json").read_text())
    assert weights["world_size"] == 2 and weights["max_training_change"] > 1e-4
    assert weights["max_rank_difference"] < 1e-6, weights  # the gradients were averaged over both ranks


def test_a_multirun_of_two_process_ddp_jobs(tmp_path):
    """Lightning starts the other rank with the command line: in a sweep, that must be the job's
    own, or each rank runs the whole sweep with its own configs."""
    result = workbench(["train", "-m", "seed=0,1", "trainer=ddp_cpu", "trainer.max_epochs=1", *TINY_DATA, RANK_WEIGHTS, f"paths.log_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stderr + result.stdout
    assert output.count("Launching 2 jobs locally") == 1 and output.count("MEMBER: 2/2") == 2
    assert "distributed_backend=gloo" in output and "[rank: 1] Seed set to 0" in output and "[rank: 1] Seed set to 1" in output
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [job.name[:2] for job in jobs] == ["0_", "1_"]
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert "test/auc" in metrics and "test/acc" in metrics
        assert_ranks_trained_in_step(job)


def run_two_torchrun_nodes(args: list[str]) -> tuple[list[int], list[str]]:
    """Both nodes of a static torchrun rendezvous on this machine. The free port can be taken by
    another process before node 0 binds it; that attempt is run again on a new port."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    for _ in range(3):
        port = find_free_network_port()
        nodes = [
            subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
                 "--master_addr=127.0.0.1", f"--master_port={port}", *args],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for rank in (0, 1)
        ]
        try:
            outputs = [node.communicate(timeout=600)[0] for node in nodes]
        finally:  # a node left waiting for a failed peer must not outlive the test
            for node in nodes:
                node.kill()
        codes = [node.returncode for node in nodes]
        if not (any(codes) and "address already in use" in "".join(outputs).lower()):
            break
    return codes, outputs


def test_two_nodes_of_one_process_each_under_torchrun(tmp_path):
    """Two torchrun 'nodes' on this machine (gloo on CPU): Lightning reads the torchrun
    environment, and trainer.num_nodes=2 with one device each makes one world of 2. Both nodes
    name the run directory by the launch's --rdzv-id, so there is one, holding every file."""
    codes, outputs = run_two_torchrun_nodes(
        ["--rdzv-id=two-nodes", "-m", "workbench.train", "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
         "trainer.max_epochs=1", *TINY_DATA, RANK_WEIGHTS, f"paths.log_dir={tmp_path}"]
    )
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    assert run_dir.name == "torchrun-two-nodes"
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    assert "test/auc" in json.loads((run_dir / "metrics.json").read_text())
    assert_ranks_trained_in_step(run_dir)


NOISE = ("💡 Tip: For seamless cloud logging", "`isinstance(treespec, LeafSpec)` is deprecated", "nvImageCodec",
         "is smaller than the logging interval")


def test_the_console_shows_none_of_the_known_noise_and_still_shows_real_warnings(tmp_path):
    """Four lines every command printed (Lightning's advertisement, its pytree deprecation, the
    missing NVIDIA codec, the logging interval of a small budget) are gone from the console, and
    WORKBENCH_QUIET=0 brings them back; any other warning still shows."""
    tiny = ["train", "data.source.num_train=16", "data.source.num_val=8", "data.source.num_test=8", "data.batch_size=8",
            "trainer.max_epochs=1", "task.width=0.25"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "WORKBENCH_QUIET")}
    runs = {quiet: subprocess.run([str(WORKBENCH), *tiny, f"hydra.run.dir={tmp_path / quiet}"], cwd=REPO, capture_output=True, text=True,
                                  env=dict(env, WANDB_MODE="offline", **({"WORKBENCH_QUIET": quiet} if quiet == "0" else {})))
            for quiet in ("default", "0")}
    assert all(r.returncode == 0 for r in runs.values()), runs["default"].stderr[-3000:]
    console, noisy = (runs[k].stdout + runs[k].stderr for k in ("default", "0"))
    assert [n for n in NOISE if n in console] == [] and [n for n in NOISE if n not in noisy] == []
    code = ("import warnings, workbench; warnings.warn('a real warning'); "
            "warnings.warn('`isinstance(treespec, LeafSpec)` is deprecated, use TreeSpec', FutureWarning)")
    shown = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=dict(env, WORKBENCH_QUIET="1")).stderr
    assert "a real warning" in shown and "LeafSpec" not in shown
