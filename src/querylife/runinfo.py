"""What a run records about itself: the machine it ran on and the command that started it.

Benchmarks and reports put both at the top of their results so that a number can be traced back to the code,
the hardware and the library versions that produced it.

Example:
    >>> info = machine_info()
    >>> sorted(k for k in ("python", "platform", "cpu_count", "torch", "date") if k in info)
    ['cpu_count', 'date', 'platform', 'python', 'torch']
    >>> machine_summary({"platform": "Linux", "cpu_count": 2, "torch_threads": 1, "torch": "2.3"})
    'Linux, 2 CPUs, 1 torch thread, torch 2.3'
    >>> command_line(["benchmarks/crowdflower.py", "--folds", "5"])
    'python benchmarks/crowdflower.py --folds 5'
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "machine_summary", "command_line"]

# Versions recorded by every run: the numbers depend on them. Others can be asked for with ``packages=``.
DEFAULT_PACKAGES: tuple[str, ...] = ("torch", "transformers")


def _cpu_model() -> str | None:
    """The CPU's model name: ``platform.processor()`` is empty or just the architecture on Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _package_version(name: str) -> str | None:
    # Importing a module that is already loaded costs nothing and gives its own __version__ (e.g. torch's local
    # "+cpu" tag); the distribution metadata answers for packages that are installed but not imported.
    module = sys.modules.get(name.replace("-", "_"))
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_state(cwd: Path) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the checkout holding ``cwd``; (None, None) outside one."""
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return commit, (bool(status) if status is not None else None)


def machine_info(packages: Iterable[str] = (), *, repo: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What a benchmark or report records about the machine and software it ran on.

    Keys: ``platform``, ``python``, ``processor`` (CPU model, or None), ``cpu_count``, ``torch_threads`` (torch's
    intra-op threads, None without torch), one key per package version (``torch``, ``transformers`` and each of
    ``packages``, dashes as underscores; None when not installed), ``git_commit`` and ``git_dirty`` (of the
    checkout holding ``repo``, by default this package's source; None outside a git checkout) and ``date``
    (UTC, ISO 8601, seconds).

    Example:
        >>> info = machine_info(["numpy"])
        >>> isinstance(info["numpy"], str) and isinstance(info["cpu_count"], int)
        True
    """
    try:
        import torch

        threads: int | None = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency of querylife
        threads = None
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
    }
    for name in dict.fromkeys([*DEFAULT_PACKAGES, *packages]):
        info[name.replace("-", "_")] = _package_version(name)
    commit, dirty = _git_state(Path(repo) if repo is not None else Path(__file__).resolve().parent)
    info["git_commit"] = commit
    info["git_dirty"] = dirty
    info["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return info


# Keys shown by machine_summary before the package versions, and those it leaves out.
_SUMMARY_SKIP = {"platform", "python", "processor", "cpu_count", "torch_threads", "git_commit", "git_dirty", "date"}


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def machine_summary(info: Mapping[str, Any]) -> str:
    """One line for a Markdown report: platform, CPU model, CPUs, torch threads, then the package versions.

    Keys missing from ``info`` (e.g. in a results file written before a key existed) or set to None are left out,
    so an older run's machine record renders too.
    """
    parts = []
    if info.get("platform"):
        parts.append(str(info["platform"]))
    if info.get("processor"):
        parts.append(str(info["processor"]))
    if info.get("cpu_count") is not None:
        parts.append(_count(info["cpu_count"], "CPU"))
    if info.get("torch_threads") is not None:
        parts.append(_count(info["torch_threads"], "torch thread"))
    for key, value in info.items():
        if key not in _SUMMARY_SKIP and value is not None:
            parts.append(f"{key.replace('_', '-')} {value}")
    if info.get("git_commit"):
        dirty = " (uncommitted changes)" if info.get("git_dirty") else ""
        parts.append(f"commit {str(info['git_commit'])[:12]}{dirty}")
    return ", ".join(parts)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as it was run, quoted so that it can be pasted into a shell.

    ``argv`` defaults to this process's ``sys.argv``. A Python script or ``-m`` module is shown as ``python ...``
    (the interpreter's own path, usually a virtual environment's, says nothing about the run); a console script
    (``querylife eval ...``) by its name.
    """
    if argv is not None:
        args = list(argv)
        return shlex.join(["python", *args] if args and args[0].endswith(".py") else args)
    orig = list(getattr(sys, "orig_argv", []) or [])
    script = sys.argv[0] if sys.argv else ""
    if len(orig) > 1 and script and not script.endswith(".py") and orig[1] == script:
        return shlex.join([Path(script).name, *sys.argv[1:]])  # a console script started through its shebang
    if orig:
        return shlex.join(["python", *orig[1:]])
    return shlex.join(["python", *sys.argv])
