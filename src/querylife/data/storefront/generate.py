"""Generating the demo storefront into a directory, or reusing the one already there.

A storefront is written to a temp directory beside its destination and renamed into place, so an interrupted run
never leaves a storefront that looks complete; meta.json (generator, version, config) decides reuse.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .config import DemoConfig, DemoStorefront
from .meta import GENERATOR_NAME, GENERATOR_VERSION
from .writer import write_storefront

__all__ = ["generate_demo"]

log = logging.getLogger(__name__)


def _read_meta(out_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR_NAME else None


def _is_current(out_dir: Path, config: DemoConfig) -> bool:
    meta = _read_meta(out_dir)
    if meta is None or meta.get("generator_version") != GENERATOR_VERSION or meta.get("config") != config.to_json():
        return False
    store = DemoStorefront.at(out_dir)
    return store.catalog_path.is_file() and store.pairs_path.is_file() and (out_dir / "images").is_dir()


def _remove_stale_temp_dirs(parent: Path, name: str) -> None:
    """Delete temp dirs left by killed runs (their process is gone); live runs' dirs are left alone."""
    for path in [*parent.glob(f".{name}.tmp-*"), *parent.glob(f".{name}.old-*")]:
        m = re.match(rf"\.{re.escape(name)}\.(?:tmp|old)-(\d+)-", path.name)
        if not m or not path.is_dir():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (PermissionError, OverflowError):
            continue


def generate_demo(
    out_dir: str | Path, config: DemoConfig | None = None, *, progress: bool = True, overwrite: bool = False
) -> DemoStorefront:
    """Generate the demo storefront into ``out_dir`` (or reuse it if it is already there).

    If ``out_dir/meta.json`` records the same config and generator version, nothing is regenerated unless
    ``overwrite``. Otherwise the storefront is written to a temp dir beside ``out_dir`` and renamed into
    place, so an interrupted run never leaves a storefront that looks complete. A previous storefront made by
    this generator with another config is replaced; any other non-empty directory is refused unless
    ``overwrite``.

    Example::

        store = generate_demo("demo_data", DemoConfig(n_products=3000, seed=0))
        catalog = pandas.read_parquet(store.catalog_path)
        other = generate_demo("home_data", DemoConfig(storefront="home_books"))  # see .registry
    """
    config = config or DemoConfig()
    out = Path(out_dir).expanduser().absolute()
    store = DemoStorefront.at(out)
    if not overwrite and _is_current(out, config):
        log.info("demo: reusing the storefront at %s", out)
        return store
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if not overwrite and _read_meta(out) is None and any(out.iterdir()):
            raise FileExistsError(
                f"{out} is a non-empty directory, not a demo storefront; pick another path or overwrite=True"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(out.parent, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        write_storefront(tmp, config, config.spec, progress)
        if out.exists():
            if not overwrite and _is_current(out, config):
                return store  # another process finished the same storefront first
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
            out.rename(trash / "old")
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return store
