"""``querylife embed`` / ``index`` / ``search`` as a user runs them (subprocesses), including a real kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from store_helpers import make_checkpoint, small_catalog
from test_cli import TIMEOUT, _env, cli, show, temp_leftovers

from querylife.store import EmbeddingStore

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def checkpoint(tiny_store, tiny_text_model_dir, tmp_path_factory) -> Path:
    types = sorted(pd.read_parquet(tiny_store.catalog_path)["product_type"].unique())
    return make_checkpoint(tiny_text_model_dir, tmp_path_factory.mktemp("ckpt") / "best", types)


@pytest.mark.slow
def test_embed_index_search(checkpoint, tiny_store, tmp_path):
    store = tmp_path / "store"
    proc = cli("embed", "--checkpoint", checkpoint, "--catalog", tiny_store.catalog_path, "--out", store,
               "--shard-size", "100", "--batch-size", "50", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "240 products in 3 shards" in proc.stdout, show(proc)
    proc = cli("index", store, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "flat index over 240 products" in proc.stdout and "recall@100 1.0000" in proc.stdout, show(proc)
    proc = cli("search", store, "red striped dress", "--k", "3", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    for word in ("rank", "product_id", "title", "type", "score", "image weight"):
        assert word in proc.stdout, show(proc)
    products = EmbeddingStore.open(store).load()
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert [ln.split()[0] for ln in lines] == ["1", "2", "3"], show(proc)
    assert all(ln.split()[1] in products.row_of for ln in lines), show(proc)
    # The same command via the public data set path (a querylife folder) gives the same store contents.
    other = tmp_path / "store2"
    proc = cli("embed", "--checkpoint", checkpoint, "--data", Path(tiny_store.catalog_path).parent, "--out", other,
               "--shard-size", "100", "--batch-size", "50", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert torch.equal(EmbeddingStore.open(other).load().t, products.t)


@pytest.mark.slow
def test_embed_and_search_refuse_another_checkpoint(checkpoint, tiny_store, tiny_text_model_dir, tmp_path):
    store = tmp_path / "store"
    proc = cli("embed", "--checkpoint", checkpoint, "--catalog", tiny_store.catalog_path, "--out", store, "--quiet",
               cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    types = json.loads((checkpoint / "config.json").read_text())["product_types"]
    other = make_checkpoint(tiny_text_model_dir, tmp_path / "other", types, seed=1)
    proc = cli("embed", "--checkpoint", other, "--catalog", tiny_store.catalog_path, "--out", store, "--update",
               cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, show(proc)
    assert "cannot be mixed" in proc.stderr, show(proc)
    proc = cli("search", store, "dress", "--checkpoint", other, cwd=tmp_path)
    assert proc.returncode == 2 and "holds vectors of checkpoint" in proc.stderr, show(proc)
    proc = cli("search", store, "dress", cwd=tmp_path)  # no index: every product scored, with a note
    assert proc.returncode == 0 and "no index" in proc.stderr, show(proc)


def test_embed_needs_exactly_one_source(checkpoint, tmp_path):
    proc = cli("embed", "--checkpoint", checkpoint, "--out", tmp_path / "s", cwd=tmp_path)
    assert proc.returncode == 2 and "--catalog" in proc.stderr, show(proc)


@pytest.mark.slow  # imports torch (seconds on a loaded 2-core box)
def test_index_rejects_unknown_settings(tmp_path):
    proc = cli("index", tmp_path, "--param", "nlsit=4", cwd=tmp_path)
    assert proc.returncode == 2 and "nlsit" in proc.stderr and "Traceback" not in proc.stderr, show(proc)


# ----------------------------------------------------------------------------------------------------------
# kill -9 mid-run, then the same command again


@pytest.fixture(scope="module")
def big_catalog(tiny_store, tmp_path_factory) -> Path:
    """The storefront's 240 products ten times over (new ids, same images): long enough to be killed mid-run."""
    base = small_catalog(tiny_store)
    copies = []
    for i in range(10):
        part = base.copy()
        part["product_id"] = [f"{p}-{i}" for p in part["product_id"]]
        part["title"] = [f"{t} {i}" for t in part["title"]]
        copies.append(part)
    path = tmp_path_factory.mktemp("big") / "catalog.parquet"
    pd.concat(copies, ignore_index=True).to_parquet(path)
    return path


@pytest.mark.slow
def test_embed_resumes_after_sigkill(checkpoint, big_catalog, tmp_path):
    args = ["embed", "--checkpoint", checkpoint, "--catalog", big_catalog, "--shard-size", "100", "--batch-size",
            "50", "--quiet"]
    reference = tmp_path / "reference"
    proc = cli(*args, "--out", reference, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)

    store = tmp_path / "store"
    manifest = store / "manifest.json"
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:
        killed = subprocess.Popen([sys.executable, "-m", "querylife.cli", *map(str, args), "--out", str(store)],
                                  cwd=tmp_path, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT
            while killed.poll() is None and time.monotonic() < deadline:
                try:
                    if json.loads(manifest.read_text())["shards"]:
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.005)
            finished_early = killed.poll() is not None
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=30)
        finally:
            if killed.poll() is None:
                killed.kill()
                killed.wait(timeout=30)
    assert not finished_early, f"embed ended before it could be killed:\n{log.read_text()[-4000:]}"
    state = json.loads(manifest.read_text())
    assert state["status"] == "incomplete" and 1 <= len(state["shards"]) < 24
    # A kill can land while a shard is written: make that case deterministic too.
    (store / "shards" / ".part-00099.parquet.k1lled.tmp").write_bytes(b"half a shard")

    proc = cli(*args, "--out", store, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "resum" in proc.stdout + proc.stderr, show(proc)
    done = EmbeddingStore.open(store)
    assert done.manifest["last_run"]["kept"] == 100 * len(state["shards"])
    got, want = done.load(), EmbeddingStore.open(reference).load()
    assert got.product_ids == want.product_ids and len(got) == 2400
    for name in ("t", "v", "has_image", "type_ids", "index_vectors"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert [e["file"] for e in done.manifest["shards"]] == [e["file"] for e in
                                                             EmbeddingStore.open(reference).manifest["shards"]]
    assert sorted(p.name for p in (store / "shards").iterdir()) == sorted(p.name for p in
                                                                          (reference / "shards").iterdir())
    assert temp_leftovers(store / "shards") == [] and temp_leftovers(store) == []


@pytest.mark.parametrize("command", ["embed", "index", "search"])
def test_help_shows_an_example(command, tmp_path):
    proc = cli(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "Example" in proc.stdout and f"querylife {command}" in proc.stdout, show(proc)
