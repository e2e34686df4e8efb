"""The benchmark scripts stay runnable, and their shared helpers (benchmarks/benchkit.py) do what they say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "benchkit.py")


@pytest.fixture(scope="module")
def benchkit():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import benchkit

        yield benchkit
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_mean_std_and_its_format(benchkit) -> None:
    assert benchkit.mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0}  # sample std
    assert benchkit.mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
    assert benchkit.fmt_mean_std({"mean": 0.84836, "std": 0.03231}) == "0.8484 ± 0.0323"
    assert benchkit.fmt_mean_std(benchkit.mean_std([None, None])) == "–"  # a metric no seed had


def test_write_results_and_header(benchkit, tmp_path: Path) -> None:
    meta = {"command": "python benchmarks/x.py", "machine": {"platform": "Linux", "cpu_count": 2, "torch": "2.0"}}
    header = benchkit.run_header(meta)
    assert header == ["Command: `python benchmarks/x.py`  ", "Machine: Linux, 2 CPUs, torch 2.0  "]
    md = benchkit.write_results(tmp_path / "out", "x", ["# X", *header], {**meta, "value": 0.5})
    assert md.read_text() == "\n".join(["# X", *header])
    assert json.loads((tmp_path / "out" / "x.json").read_text())["value"] == 0.5


# Runs every script's `--help` in one fresh process (each as __main__, its output captured), so torch and the
# library are imported once for all of them instead of once per script.
_HELP_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    buf, err, code = io.StringIO(), io.StringIO(), None
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as stop:
        code = stop.code
    except Exception as exc:  # a script that fails to import or to build its parser
        code, err = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
    out[path] = {"code": code, "stdout": buf.getvalue(), "stderr": err.getvalue()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, dict]:
    src = str(BENCHMARKS.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    paths = [str(BENCHMARKS / s) for s in SCRIPTS]
    done = subprocess.run([sys.executable, "-c", _HELP_ALL, *paths], capture_output=True, text=True, env=env,
                          timeout=600, cwd=BENCHMARKS.parent)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {Path(k).name: v for k, v in results.items()}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_parses_its_arguments(script: str, helps) -> None:
    result = helps[script]
    assert result["code"] in (0, None), result["stderr"]  # argparse's --help exits 0
    assert "usage:" in result["stdout"], result["stderr"]
