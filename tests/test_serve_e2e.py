"""End to end as a user runs it: train (writes calibrator.json), calibrate, eval, embed, index, then `querylife serve`
as a subprocess on loopback; the served scores and probabilities equal eval's for the same test pairs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from test_cli import _env, cli, show, tiny_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_train_calibrate_embed_serve_equals_eval(tiny_store, tiny_text_model_dir, tmp_path):
    run, best = tmp_path / "run", tmp_path / "run" / "best"
    data = ["--catalog", tiny_store.catalog_path, "--pairs", tiny_store.pairs_path]
    proc = cli("train", *data, "--out", run, *tiny_overrides(tiny_text_model_dir), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert "calibrator (logistic, max_f1) fitted on" in proc.stdout, show(proc)
    fitted = json.loads((best / "calibrator.json").read_text())
    # refit with the settings and split it trained with (read from summary.json): the same decision
    proc = cli("calibrate", "--checkpoint", best, "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert json.loads((best / "calibrator.json").read_text()) == fitted
    proc = cli("eval", "--checkpoint", best, *data, "--out", tmp_path / "eval", "--no-baselines",
               *tiny_overrides(tiny_text_model_dir), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    scored = pd.read_parquet(tmp_path / "eval" / "test_scores.parquet")
    scored = scored[scored["method"] == "run"]
    assert len(scored) and "prob" in scored
    store = tmp_path / "store"
    for args in (("embed", "--checkpoint", best, "--catalog", tiny_store.catalog_path, "--out", store, "--quiet"),
                 ("index", store)):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, show(proc)

    port = _free_port()
    env = {**_env(), "QL_E2E_KEY": "k-123"}
    server = subprocess.Popen(
        [sys.executable, "-m", "querylife.cli", "serve", "--checkpoint", str(best), "--store", str(store),
         "--port", str(port), "--api-key-env", "QL_E2E_KEY", "--set", "max_candidates=200", "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        headers = {"Authorization": "Bearer k-123"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=headers) as c:
            deadline = time.time() + 120
            while True:
                assert server.poll() is None, server.stdout.read()
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.time() < deadline, "server not ready"
                time.sleep(0.2)
            info = c.get("/readyz").json()
            assert info["calibrator"] is True and info["index"] == "flat"
            assert info["limits"]["max_candidates"] == 200
            for query, pairs in list(scored.groupby("query", sort=False))[:6]:
                r = c.post("/v1/relevance", json={"query": query, "product_ids": pairs["product_id"].tolist()})
                assert r.status_code == 200, r.text
                results = r.json()["results"]
                np.testing.assert_allclose([x["score"] for x in results], pairs["score"], atol=1e-5)
                np.testing.assert_allclose([x["probability"] for x in results], pairs["prob"], atol=1e-5)
            hits = c.post("/v1/search", json={"query": scored["query"].iloc[0], "k": 5}).json()["hits"]
            assert len(hits) == 5 and hits[0]["score"] >= hits[-1]["score"]
            assert c.post("/v1/search", json={"query": "x"}, headers={"Authorization": "Bearer no"}).status_code == 401
            assert 'endpoint="/v1/relevance",status="200"' in c.get("/metrics").text
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert "k-123" not in " ".join(server.args)  # the key never was on the command line
    assert os.environ.get("QL_E2E_KEY") is None
