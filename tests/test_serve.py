"""The HTTP service, started for real with uvicorn on loopback and called with httpx.

Every endpoint and every limit: served scores equal ``querylife eval``'s (``scoring.score_pairs``) for the same
pairs; oversize and streamed bodies, too many candidates, too-long queries, unknown ids, malformed JSON, bad
base64, a decompression bomb, a client-named path, API keys, 429 under a bounded burst, 504 on timeouts, 503 while
loading. The model is the tiny random checkpoint of the store tests, the store is built in memory from it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image
from store_helpers import make_checkpoint

from querylife.calibrate import calibrate_model, load_calibrator
from querylife.config import EvalConfig
from querylife.data.prepare import prepare_dataset
from querylife.encode import Catalogue, iter_product_batches
from querylife.model import QueryLifeModel
from querylife.scoring import FeatureCache, score_pairs
from querylife.search import Searcher
from querylife.serve import ServeConfig, Service, create_app
from querylife.serve.batcher import QueryBatcher
from querylife.serve.config import BatcherConfig, load_serve_config
from querylife.store import StoredProducts, checkpoint_hash


@contextmanager
def running(app):
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields an httpx client on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def dataset(tiny_store):
    return prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False,
                           split_by="intent")


@pytest.fixture(scope="module")
def checkpoint(dataset, tiny_text_model_dir, tmp_path_factory):
    path = make_checkpoint(tiny_text_model_dir, tmp_path_factory.mktemp("ckpt") / "best", dataset.product_types)
    model = QueryLifeModel.from_pretrained(path)
    with warnings.catch_warnings():  # a random model: the calibrator falls back to the base rate, and says so
        warnings.simplefilter("ignore", RuntimeWarning)
        assert calibrate_model(model, dataset, EvalConfig(), path).calibrator is not None
    return path


@pytest.fixture(scope="module")
def stored(checkpoint, dataset) -> StoredProducts:
    model = QueryLifeModel.from_pretrained(checkpoint)
    cat = Catalogue.from_frame(dataset.catalog)
    return StoredProducts.concat([b.products for b in iter_product_batches(model, cat, batch_size=64)])


def make_service(checkpoint, stored, settings: ServeConfig, *, calibrated: bool = True) -> Service:
    model = QueryLifeModel.from_pretrained(checkpoint)
    cal, note = load_calibrator(checkpoint) if calibrated else (None, "no calibrator.json")
    info = {"checkpoint": str(checkpoint), "checkpoint_sha256": checkpoint_hash(checkpoint)}
    return Service(Searcher(model, stored), settings, calibrator=cal, calibrator_note=note, info=info)


SMALL = dict(max_candidates=40, max_query_chars=64, max_body_bytes=64 * 1024, max_image_bytes=20_000,
             max_image_pixels=200 * 200, max_inline_products=4, max_k=20)


@pytest.fixture(scope="module")
def client(checkpoint, stored):
    settings = ServeConfig(**SMALL)
    with running(create_app(settings, make_service(checkpoint, stored, settings))) as c:
        yield c


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny valid-looking PNG whose header declares ``width`` x ``height`` pixels (the data is one short row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(
        b"IEND", b"")


# ---- scores ---------------------------------------------------------------------------------------------------
def test_served_scores_equal_eval_scores(client, checkpoint, dataset):
    model = QueryLifeModel.from_pretrained(checkpoint)
    cal, _ = load_calibrator(checkpoint)
    test = dataset.splits["test"]
    for query in test["query"].unique()[:4]:
        pairs = test[test["query"] == query]
        expect = score_pairs(model, dataset, pairs, FeatureCache())
        r = client.post("/v1/relevance", json={"query": query, "product_ids": pairs["product_id"].tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        got = np.array([x["score"] for x in body["results"]])
        assert [x["product_id"] for x in body["results"]] == pairs["product_id"].tolist()
        np.testing.assert_allclose(got, expect.score, atol=1e-5)
        np.testing.assert_allclose([x["image_weight"] for x in body["results"]], expect.image_weight, atol=1e-5)
        prob = cal.predict_proba(expect.score)
        np.testing.assert_allclose([x["probability"] for x in body["results"]], prob, atol=1e-5)
        # The served query vector is a TorchScript trace of eager PyTorch's (equal to ~2e-7), so a pair whose
        # probability lies within that rounding of the threshold may fall on either side of it.
        clear = np.abs(prob - cal.threshold) > 1e-5
        served = np.array([x["relevant"] for x in body["results"]])
        assert (served[clear] == (prob >= cal.threshold)[clear]).all()
        assert body["threshold"] == pytest.approx(cal.threshold)
        assert body["model"] == checkpoint_hash(checkpoint)[:16]


def test_relevance_reports_where_the_time_went(client, dataset, checkpoint, stored):
    """Server-Timing: the whole service time (app) and the endpoint's spans, so a benchmark whose load generator
    shares the cores can tell its own delays from the server's; the one-hop path (idle batcher) scores the same."""
    ids = dataset.splits["test"]["product_id"].tolist()[:5]
    r = client.post("/v1/relevance", json={"query": "red dress", "product_ids": ids})
    assert r.status_code == 200, r.text
    spans = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
    assert set(spans) == {"app", "parse", "pool_wait", "encode", "score", "serialize"}
    assert all(float(v) >= 0 for v in spans.values())
    assert float(spans["app"]) >= float(spans["encode"]) + float(spans["score"])
    service = make_service(checkpoint, stored, ServeConfig())
    expect = service.score_stored(service.searcher.encode_queries(["red dress"])[0], ids, skip_unknown=False)
    np.testing.assert_array_equal([x["score"] for x in r.json()["results"]], expect.scores.astype(float))
    assert client.get("/v1/relevance").headers.get("server-timing", "").startswith("app;dur=")  # 405 too


def test_inline_products_score_like_stored_ones(client, dataset, tiny_store):
    cat = dataset.catalog
    rows = [i for i in range(len(cat)) if isinstance(cat["image_path"].iloc[i], str)][:2] + [0]
    base = Path(tiny_store.catalog_path).parent
    products = []
    for i in rows:
        path = cat["image_path"].iloc[i]
        image = base64.b64encode((base / path).read_bytes()).decode() if isinstance(path, str) and path else None
        products.append({"product_id": cat["product_id"].iloc[i], "title": cat["title"].iloc[i],
                         "product_type": cat["product_type"].iloc[i], "image_base64": image})
    query = dataset.splits["test"]["query"].iloc[0]
    inline = client.post("/v1/relevance", json={"query": query, "products": products})
    stored = client.post("/v1/relevance", json={"query": query, "product_ids": [p["product_id"] for p in products]})
    assert inline.status_code == 200, inline.text
    a, b = inline.json()["results"], stored.json()["results"]
    np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], atol=1e-5)
    np.testing.assert_allclose([x["image_weight"] for x in a], [x["image_weight"] for x in b], atol=1e-5)


def test_search_returns_the_searchers_top_k(client, checkpoint, stored):
    r = client.post("/v1/search", json={"query": "red striped dress", "k": 5})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    expect = Searcher(QueryLifeModel.from_pretrained(checkpoint), stored).search("red striped dress", k=5)
    assert [h["product_id"] for h in hits] == [h.product_id for h in expect]
    np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in expect], atol=1e-5)
    assert all(0 <= h["probability"] <= 1 for h in hits) and hits[0]["title"]


def test_embed_queries_and_products(client, checkpoint, stored):
    model = QueryLifeModel.from_pretrained(checkpoint)
    r = client.post("/v1/embed", json={"queries": ["red dress", "usb c cable"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "query" and body["dim"] == 16
    with torch.no_grad():
        q = model.encode_queries(["red dress", "usb c cable"])
    np.testing.assert_allclose([i["vector"] for i in body["items"]], q.numpy(), atol=1e-5)
    ids = stored.product_ids[:3]
    r = client.post("/v1/embed", json={"product_ids": ids})
    items = r.json()["items"]
    np.testing.assert_allclose([i["vector"] for i in items], stored.index_vectors[:3].numpy(), atol=1e-6)
    np.testing.assert_allclose([i["title_vector"] for i in items], stored.t[:3].numpy(), atol=1e-6)
    r = client.post("/v1/embed", json={"products": [{"title": "red dress", "product_type": "dress"}]})
    assert r.status_code == 200 and r.json()["items"][0]["has_image"] is False


def test_health_ready_metrics_and_openapi(client, checkpoint, stored):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    info = ready.json()
    assert info["ready"] and info["calibrator"] is True and info["store_products"] == len(stored)
    assert info["checkpoint_sha256"] == checkpoint_hash(checkpoint) and info["limits"]["max_candidates"] == 40
    assert info["query_offset_strength"] == 0.0  # this checkpoint has no fitted reference: raw fused scores
    client.post("/v1/relevance", json={"query": "x", "product_ids": ["nope"]})
    text = client.get("/metrics").text
    for name in ("querylife_requests_total", "querylife_request_duration_seconds_bucket",
                 "querylife_candidates_per_request_bucket", "querylife_query_batch_size_bucket",
                 "querylife_rejected_requests_total", "querylife_inflight_requests"):
        assert name in text, name
    assert 'querylife_requests_total{endpoint="/v1/relevance",status="404"}' in text
    assert 'querylife_rejected_requests_total{reason="unknown_ids"}' in text
    spec = client.get("/openapi.json").json()
    assert {"/v1/relevance", "/v1/search", "/v1/embed", "/healthz", "/readyz"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


# ---- limits ---------------------------------------------------------------------------------------------------
def _detail(r) -> str:
    return json.dumps(r.json()["detail"])


def test_unknown_ids_are_named_or_skipped(client, stored):
    ids = [stored.product_ids[0], "nope-1", "nope-2"]
    r = client.post("/v1/relevance", json={"query": "red dress", "product_ids": ids})
    assert r.status_code == 404
    assert r.json()["detail"]["unknown_product_ids"] == ["nope-1", "nope-2"] and "nope-1" in _detail(r)
    r = client.post("/v1/relevance", json={"query": "red dress", "product_ids": ids, "unknown_ids": "skip"})
    assert r.status_code == 200
    assert [x["product_id"] for x in r.json()["results"]] == ids[:1]
    assert r.json()["unknown_product_ids"] == ["nope-1", "nope-2"]
    assert client.post("/v1/embed", json={"product_ids": ["nope-3"]}).status_code == 404


def test_request_size_limits(client, stored):
    r = client.post("/v1/relevance", json={"query": "q", "product_ids": stored.product_ids[:41]})
    assert r.status_code == 422 and "max_candidates=40" in _detail(r)
    r = client.post("/v1/relevance", json={"query": "q" * 65, "product_ids": stored.product_ids[:1]})
    assert r.status_code == 422 and "max_query_chars=64" in _detail(r) and '"query"' in _detail(r)
    r = client.post("/v1/search", json={"query": "q", "k": 21})
    assert r.status_code == 422 and "max_k=20" in _detail(r)
    r = client.post("/v1/embed", json={"queries": ["q" * 65]})
    assert r.status_code == 422 and "max_query_chars" in _detail(r)
    big = json.dumps({"query": "q", "product_ids": ["x" * 1000] * 70}).encode()  # > 64 KiB
    r = client.post("/v1/relevance", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.text

    def chunks():  # streamed without Content-Length: the guard counts the bytes
        for _ in range(70):
            yield b" " * 1024

    r = client.post("/v1/relevance", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/relevance", json={"query": "q", "products": [{"title": "t"}] * 5})
    assert r.status_code == 422 and "max_inline_products=4" in _detail(r)


def test_malformed_requests_are_422(client):
    r = client.post("/v1/relevance", content=b'{"query": "x", "product_ids": [', headers={
        "content-type": "application/json"})
    assert r.status_code == 422 and "json" in _detail(r).lower()
    r = client.post("/v1/relevance", json={"query": "x"})
    assert r.status_code == 422 and "exactly one of product_ids" in _detail(r)
    r = client.post("/v1/relevance", json={"query": "x", "product_ids": ["a"], "products": [{"title": "t"}]})
    assert r.status_code == 422
    r = client.post("/v1/search", json={"query": "", "k": 3})
    assert r.status_code == 422


def test_client_named_paths_and_urls_are_refused(client, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(8, 8))
    for field in ("image_path", "image_url", "url", "path"):
        r = client.post("/v1/relevance", json={"query": "x", "products": [{"title": "t", field: str(secret)}]})
        assert r.status_code == 422, field
        assert "extra" in _detail(r).lower() and field in _detail(r)


def test_bad_images_are_422(client):
    def send(image: str):
        return client.post("/v1/relevance", json={"query": "x", "products": [{"title": "t", "image_base64": image}]})

    r = send("not base64 !!")
    assert r.status_code == 422 and "bad_base64" in _detail(r) and "image_base64" in _detail(r)
    r = send(base64.b64encode(b"definitely not an image").decode())
    assert r.status_code == 422 and "bad_image" in _detail(r)
    bomb = _bomb()
    assert len(bomb) < 200
    r = send(base64.b64encode(bomb).decode())
    assert r.status_code == 422 and "image_too_large" in _detail(r) and "max_image_pixels" in _detail(r)
    r = send(base64.b64encode(_bomb(1000, 1000)).decode())  # under PIL's own limit: our check on the header
    assert r.status_code == 422 and "1000 x 1000" in _detail(r) and "max_image_pixels" in _detail(r)
    r = send(base64.b64encode(_png(300, 300)).decode())  # real, but over max_image_pixels=40000
    assert r.status_code == 422 and "max_image_pixels" in _detail(r)
    r = send(base64.b64encode(b"\0" * 30_000).decode())  # over max_image_bytes, refused before decoding
    assert r.status_code == 422 and "max_image_bytes" in _detail(r)
    r = send(base64.b64encode(_png(40, 30)).decode())
    assert r.status_code == 200 and r.json()["results"][0]["image_weight"] is not None


def test_api_key(checkpoint, stored, monkeypatch):
    monkeypatch.setenv("QL_TEST_KEY", "s3cret-key")
    settings = ServeConfig(api_key_env="QL_TEST_KEY")
    body = {"query": "red dress", "product_ids": stored.product_ids[:2]}
    with running(create_app(settings, make_service(checkpoint, stored, settings))) as c:
        assert c.post("/v1/relevance", json=body).status_code == 401
        r = c.post("/v1/relevance", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/relevance", json=body, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.post("/v1/relevance", json=body, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").json()["auth"] is True
        assert 'reason="unauthorized"' in c.get("/metrics").text
    monkeypatch.delenv("QL_TEST_KEY")
    with pytest.raises(ValueError, match="QL_TEST_KEY"):
        create_app(settings, make_service(checkpoint, stored, settings))


def test_over_capacity_answers_429_at_once(checkpoint, stored):
    settings = ServeConfig(max_inflight=1, retry_after_s=2)
    service = make_service(checkpoint, stored, settings)
    slow = service.score_stored

    def score_slowly(*args, **kwargs):
        time.sleep(0.4)
        return slow(*args, **kwargs)

    service.score_stored = score_slowly
    body = {"query": "red dress", "product_ids": stored.product_ids[:2]}
    with running(create_app(settings, service)) as c:
        results = []

        def call():
            start = time.perf_counter()
            r = c.post("/v1/relevance", json=body)
            results.append((r.status_code, r.headers.get("retry-after"), time.perf_counter() - start))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(code for code, _, _ in results)
        assert codes.count(200) >= 1 and codes.count(429) >= 1 and set(codes) <= {200, 429}, results
        refused = [(ra, sec) for code, ra, sec in results if code == 429]
        assert all(ra == "2" and sec < 0.35 for ra, sec in refused), refused  # at once, not after queueing
        assert 'reason="over_capacity"' in c.get("/metrics").text


def test_timeout_answers_504_and_keeps_the_slot(checkpoint, stored):
    settings = ServeConfig(request_timeout_s=0.2, max_inflight=1)
    service = make_service(checkpoint, stored, settings)
    slow = service.score_stored
    service.score_stored = lambda *a, **k: (time.sleep(0.6), slow(*a, **k))[1]
    body = {"query": "red dress", "product_ids": stored.product_ids[:2]}
    with running(create_app(settings, service)) as c:
        r = c.post("/v1/relevance", json=body)
        assert r.status_code == 504 and "request_timeout_s" in r.text
        # its work still runs: the one slot is taken until it ends
        assert c.post("/v1/relevance", json=body).status_code == 429
        time.sleep(0.6)
        service.score_stored = slow
        assert c.post("/v1/relevance", json=body).status_code == 200


def test_not_ready_while_loading_and_no_calibrator(checkpoint, stored):
    gate = threading.Event()
    settings = ServeConfig()

    def loader():
        gate.wait(10)
        return make_service(checkpoint, stored, settings, calibrated=False)

    with running(create_app(settings, loader=loader)) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["reason"] == "loading"
        r = c.post("/v1/search", json={"query": "dress"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        gate.set()
        for _ in range(200):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.02)
        info = c.get("/readyz").json()
        assert info["calibrator"] is False and "calibrator.json" in info["calibrator_note"]
        r = c.post("/v1/relevance", json={"query": "dress", "product_ids": stored.product_ids[:2]})
        assert r.status_code == 200
        assert {x["probability"] for x in r.json()["results"]} == {None} and r.json()["threshold"] is None


def test_failed_load_is_reported(checkpoint):
    def loader():
        raise FileNotFoundError("store/manifest.json is missing")

    with running(create_app(ServeConfig(), loader=loader)) as c:
        for _ in range(100):
            r = c.get("/readyz")
            if "failed" in r.json()["reason"]:
                break
            time.sleep(0.02)
        assert r.status_code == 503 and "manifest.json is missing" in r.json()["reason"]
        assert "manifest.json" in c.post("/v1/search", json={"query": "dress"}).text


# ---- pieces ---------------------------------------------------------------------------------------------------
def test_micro_batching_is_off_for_an_encoder_that_encodes_one_query_at_a_time(checkpoint, stored):
    # An int8 ONNX graph encodes each query on its own (OnnxQueryEncoder.batches is False): waiting for company
    # would only add latency, so the service turns micro-batching off for it and says so in /readyz.
    model = QueryLifeModel.from_pretrained(checkpoint)

    class OneAtATime:
        batches = False

        def __call__(self, texts):
            return model.encode_queries(texts).detach()

    settings = ServeConfig()
    assert settings.batcher.enabled
    for encoder, expect in ((OneAtATime(), False), (None, True)):
        service = Service(Searcher(model, stored, query_encoder=encoder), settings)
        app = create_app(settings, service)
        assert app.state.runtime.batcher.config.enabled is expect
        with running(app) as c:
            ready = c.get("/readyz").json()
            assert ready["micro_batching"] is expect and ready["limits"]["batcher"]["enabled"] is True
            assert c.post("/v1/relevance", json={"query": "red dress", "product_ids": stored.product_ids[:3]}
                          ).status_code == 200


def test_batcher_encodes_concurrent_queries_in_one_forward():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.tensor([[float(len(t)), 1.0] for t in texts])

    async def main(config, busy):
        async def run(fn):
            return fn()

        b = QueryBatcher(encode, config, run=run, busy=lambda: busy)
        out = await asyncio.gather(*(b.encode(q) for q in ["a", "bb", "ccc", "a"]))
        again = await b.encode("bb")
        return out, again

    out, again = asyncio.run(main(BatcherConfig(max_batch=8, max_wait_ms=50), busy=4))
    assert calls == [["a", "bb", "ccc"]]  # one forward, duplicates once
    assert [float(v[0]) for v in out] == [1.0, 2.0, 3.0, 1.0] and float(again[0]) == 2.0  # cache hit
    calls.clear()
    asyncio.run(main(BatcherConfig(enabled=False, cache_size=0), busy=4))
    assert calls == [["a"], ["bb"], ["ccc"], ["a"], ["bb"]]
    calls.clear()
    asyncio.run(main(BatcherConfig(max_batch=2, max_wait_ms=50), busy=4))
    assert calls[0] == ["a", "bb"]


def test_batcher_solo_path_encodes_in_the_callers_thread_only_when_nobody_can_join():
    calls, batches, hits = [], [], []
    busy = [1]

    def encode(texts):
        calls.append(list(texts))
        return torch.tensor([[float(len(t)), 1.0] for t in texts])

    async def run(fn):
        return fn()

    b = QueryBatcher(encode, BatcherConfig(max_batch=8, max_wait_ms=50), run=run, busy=lambda: busy[0],
                     on_batch=batches.append, on_hit=lambda: hits.append(1))
    assert b.solo()
    assert float(b.encode_blocking("abc")[0]) == 3.0 and float(b.encode_blocking("abc")[0]) == 3.0
    assert calls == [["abc"]] and batches == [1] and hits == [1]  # the second came from the shared cache
    assert float(asyncio.run(b.encode("abc"))[0]) == 3.0 and calls == [["abc"]]
    busy[0] = 2  # another request in flight could join a batch: go through encode()
    assert not b.solo()
    off = QueryBatcher(encode, BatcherConfig(enabled=False), run=run, busy=lambda: 5)
    assert off.solo()  # batching off: every query is encoded alone anyway


def test_batcher_queries_arriving_during_a_forward_go_in_the_next_one():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        time.sleep(0.1)
        return torch.zeros(len(texts), 2)

    async def main():
        loop = asyncio.get_running_loop()

        async def run(fn):
            return await loop.run_in_executor(None, fn)

        # busy=1: nobody else in flight when the first query arrives, so it goes at once (no wait)
        b = QueryBatcher(encode, BatcherConfig(max_batch=8, max_wait_ms=50), run=run, busy=lambda: 1)
        first = asyncio.ensure_future(b.encode("q1"))
        await asyncio.sleep(0.03)  # q1's forward is running
        rest = [asyncio.ensure_future(b.encode(q)) for q in ("q2", "q3", "q4")]
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert calls == [["q1"], ["q2", "q3", "q4"]]


def test_serve_config_refuses_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="max_candidatez"):
        load_serve_config(None, ["max_candidatez=3"])
    path = tmp_path / "serve.yaml"
    path.write_text("max_candidates: 7\nbatcher:\n  max_wait_ms: 1\n")
    cfg = load_serve_config(path, ["batcher.enabled=false"])
    assert cfg.max_candidates == 7 and cfg.batcher.max_wait_ms == 1 and cfg.batcher.enabled is False
    with pytest.raises(ValueError, match="batcher.max_batch"):
        load_serve_config(path, ["batcher.max_batch=0"])


def test_auto_threads_leave_half_the_cores_to_the_rest_of_the_service():
    from querylife.serve.run import auto_threads, configure_process

    assert [auto_threads(1, cpus=2), auto_threads(1, cpus=16), auto_threads(4, cpus=16), auto_threads(8, cpus=4)] == [
        1, 8, 2, 1]
    before = torch.get_num_threads()
    try:
        assert configure_process(ServeConfig(torch_threads=3)) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_load_service_over_an_embedded_store_and_index(checkpoint, dataset, tiny_store, tiny_text_model_dir,
                                                        tmp_path):
    from querylife.config import DataConfig
    from querylife.encode import load_catalogue
    from querylife.index import build_index
    from querylife.serve import load_service
    from querylife.store import StoreError, embed_catalogue

    store = tmp_path / "store"
    catalogue = load_catalogue(DataConfig(catalog=str(tiny_store.catalog_path)))
    embed_catalogue(checkpoint, catalogue, store, batch_size=64, progress=False)
    exhaustive = load_service(checkpoint, store, ServeConfig(torchscript=False))
    assert exhaustive.searcher.index is None and "exhaustive" in exhaustive.info["index"]
    assert exhaustive.info["query_encoder"] == "pytorch (eager)"
    build_index(store)
    service = load_service(checkpoint, store, ServeConfig())
    assert service.info["index"] == "flat" and service.info["checkpoint_sha256"] == checkpoint_hash(checkpoint)
    assert service.info["store_products"] == len(dataset.catalog) and service.calibrator is not None
    assert service.info["query_encoder"].startswith("pytorch (torchscript")  # the default; scores checked below
    test = dataset.splits["test"]
    pairs = test[test["query"] == test["query"].iloc[0]]
    q = service.searcher.encode_queries([pairs["query"].iloc[0]])[0]
    got = service.score_stored(q, pairs["product_id"].tolist(), skip_unknown=False)
    expect = score_pairs(QueryLifeModel.from_pretrained(checkpoint), dataset, pairs, FeatureCache())
    np.testing.assert_allclose(got.scores, expect.score, atol=1e-5)
    other = make_checkpoint(tiny_text_model_dir, tmp_path / "other", dataset.product_types, seed=1)
    with pytest.raises(StoreError, match="not .*other"):
        load_service(other, store, ServeConfig())


def test_empty_and_all_unknown_candidate_lists(client):
    r = client.post("/v1/relevance", json={"query": "red dress", "product_ids": []})
    assert r.status_code == 200 and r.json()["results"] == []
    r = client.post("/v1/relevance", json={"query": "red dress", "product_ids": ["zz"], "unknown_ids": "skip"})
    assert r.status_code == 200 and r.json()["results"] == [] and r.json()["unknown_product_ids"] == ["zz"]
    assert client.get("/v1/relevance").status_code == 405
    assert client.post("/v1/nothing", json={}).status_code == 404


@pytest.mark.slow
def test_serve_with_two_worker_processes(checkpoint, dataset, tiny_store, tmp_path):
    """`querylife serve --workers 2`: two processes, each loads the model and the store, both answer, same scores."""
    import subprocess
    import sys

    from test_cli import _env

    from querylife.config import DataConfig
    from querylife.encode import load_catalogue
    from querylife.store import embed_catalogue

    store = tmp_path / "store"
    embed_catalogue(checkpoint, load_catalogue(DataConfig(catalog=str(tiny_store.catalog_path))), store,
                    batch_size=64, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env()
    server = subprocess.Popen([sys.executable, "-m", "querylife.cli", "serve", "--checkpoint", str(checkpoint),
                               "--store", str(store), "--port", str(port), "--workers", "2", "--log-level", "warning"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    test = dataset.splits["test"]
    pairs = test[test["query"] == test["query"].iloc[0]]
    body = {"query": pairs["query"].iloc[0], "product_ids": pairs["product_id"].tolist()}
    try:
        pids, scores = set(), []
        deadline = time.time() + 300  # two processes each import torch and load the model: minutes on a slow CPU
        while len(pids) < 2:  # a fresh connection each time: the kernel spreads them over the workers
            assert server.poll() is None, server.stdout.read()
            assert time.time() < deadline, f"ready workers seen: {pids}"
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                    ready = c.get("/readyz")
                    if ready.status_code == 200:
                        r = c.post("/v1/relevance", json=body)
                        assert r.status_code == 200, r.text
                        pids.add(ready.json()["pid"])
                        scores.append([x["score"] for x in r.json()["results"]])
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        assert server.pid not in pids  # the workers answer, the supervisor only supervises
        for s in scores[1:]:
            np.testing.assert_array_equal(s, scores[0])
    finally:
        server.terminate()
        server.wait(30)
