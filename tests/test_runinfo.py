"""querylife.runinfo: the machine and command a run records."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

import querylife.runinfo as runinfo
from querylife.runinfo import command_line, machine_info, machine_summary


def test_machine_info_records_platform_versions_threads_and_date() -> None:
    import torch

    info = machine_info()
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["cpu_count"] >= 1
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()
    assert isinstance(info["transformers"], str)
    assert datetime.fromisoformat(info["date"]).tzinfo is not None
    assert info["platform"]


def test_machine_info_extra_packages_and_missing_ones() -> None:
    info = machine_info(["numpy", "no-such-package-xyz"])
    import numpy

    assert info["numpy"] == numpy.__version__
    assert info["no_such_package_xyz"] is None  # dashes become underscores; absent -> None, not an error


def test_machine_info_git_commit_inside_and_outside_a_checkout(tmp_path: Path) -> None:
    outside = machine_info(repo=tmp_path)
    assert outside["git_commit"] is None and outside["git_dirty"] is None

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a\n")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "init")
    clean = machine_info(repo=tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", clean["git_commit"])
    assert clean["git_dirty"] is False
    (tmp_path / "f.txt").write_text("b\n")
    assert machine_info(repo=tmp_path)["git_dirty"] is True


def test_machine_summary_orders_fields_and_skips_missing_ones() -> None:
    info = {
        "platform": "Linux-x",
        "python": "3.11.7",
        "processor": "Some CPU",
        "cpu_count": 2,
        "torch_threads": 1,
        "torch": "2.13.0+cpu",
        "transformers": "5.24.0",
        "sentence_transformers": None,
        "git_commit": "0123456789abcdef0123",
        "git_dirty": True,
        "date": "2026-01-01T00:00:00+00:00",
    }
    assert machine_summary(info) == (
        "Linux-x, Some CPU, 2 CPUs, 1 torch thread, torch 2.13.0+cpu, transformers 5.24.0, "
        "commit 0123456789ab (uncommitted changes)"
    )
    # a results file written before processor / git / date were recorded still renders
    old = {"platform": "Linux-x", "torch": "2.0", "sentence_transformers": "6.2.0", "cpu_count": 2}
    assert machine_summary(old) == "Linux-x, 2 CPUs, torch 2.0, sentence-transformers 6.2.0"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["benchmarks/crowdflower.py", "--folds", "5"], "python benchmarks/crowdflower.py --folds 5"),
        (["b.py", "--set", "a=1 2"], "python b.py --set 'a=1 2'"),
        (["querylife", "eval", "--data", "d"], "querylife eval --data d"),
    ],
)
def test_command_line_given_argv(argv: list[str], expected: str) -> None:
    assert command_line(argv) == expected


def test_command_line_of_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python3", "benchmarks/x.py", "--seeds", "0", "1"])
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--seeds", "0", "1"])
    assert command_line() == "python benchmarks/x.py --seeds 0 1"
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python3", "-m", "querylife.cli", "eval"])
    monkeypatch.setattr(sys, "argv", ["/src/querylife/cli.py", "eval"])
    assert command_line() == "python -m querylife.cli eval"
    # a console script: its shebang runs the interpreter with the script's path
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python3", "/venv/bin/querylife", "eval", "--out", "r"])
    monkeypatch.setattr(sys, "argv", ["/venv/bin/querylife", "eval", "--out", "r"])
    assert command_line() == "querylife eval --out r"


def test_module_examples() -> None:
    result = doctest.testmod(runinfo, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
