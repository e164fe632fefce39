"""The docs build, the README stays short, and the stages stay siblings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ssl", "semi", "generators", "tasks")


def test_the_docs_build_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("mkdocs (the docs extra, installed by scripts/setup.sh) is not in this environment")
    done = subprocess.run([str(mkdocs), "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()


def test_the_readmes_stay_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    assert len((ROOT / "benchmarks" / "README.md").read_text().splitlines()) <= 300


def stage_imports(package: str) -> set[str]:
    """The stage packages that modules of `workbench/<package>` import."""
    found = set()
    for path in (ROOT / "workbench" / package).rglob("*.py"):
        found |= set(re.findall(r"^(?:from|import) workbench\.(\w+)", path.read_text(), flags=re.M))
    return found & set(STAGES)


@pytest.mark.parametrize("package, allowed", [("ssl", {"ssl"}), ("generators", {"generators"}), ("tasks", {"tasks"}), ("semi", {"semi", "tasks"})])
def test_stages_import_no_sibling_but_semi_extends_tasks(package, allowed):
    assert stage_imports(package) <= allowed


def test_the_import_check_sees_a_sibling_import(tmp_path, monkeypatch):
    """The check above can fail: a planted import of a sibling stage is found."""
    planted = tmp_path / "workbench" / "ssl"
    planted.mkdir(parents=True)
    (planted / "bad.py").write_text("from workbench.semi.base import SemiSupervised\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert stage_imports("ssl") == {"semi"}
