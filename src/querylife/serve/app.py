"""The HTTP service: FastAPI endpoints over a :class:`~querylife.serve.service.Service`, guarded by limits.

Endpoints: ``POST /v1/relevance``, ``POST /v1/search``, ``POST /v1/embed``; ``GET /healthz`` (the process is up),
``GET /readyz`` (model and store loaded, with what was loaded), ``GET /metrics`` (Prometheus); the OpenAPI schema
at ``/openapi.json`` and ``/docs``.

Before any parsing, a pure-ASGI guard answers for the ``/v1`` endpoints: 401 without the API key (when one is
configured), 503 while the model loads, 429 with ``Retry-After`` when ``max_inflight`` requests are already in
flight (at once: nothing queues without bound), 413 when the body is over ``max_body_bytes`` (by Content-Length,
and by counting the bytes of a streamed body). Model work runs in a thread pool (the event loop never blocks);
query encoding goes through the micro-batcher; a request over ``request_timeout_s`` answers 504 and its
unfinished work keeps its capacity slot until it ends, so timeouts cannot pile up hidden work.

Example::

    app = create_app(ServeConfig(), service)                      # or loader=lambda: load_service(ckpt, store, cfg)
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from .batcher import QueryBatcher
from .config import ServeConfig
from .metrics import CONTENT_TYPE_LATEST, ServiceMetrics, endpoint_label
from .schemas import (
    EmbedItem,
    EmbedRequest,
    EmbedResponse,
    RelevanceRequest,
    RelevanceResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from .service import BadInput, Scored, Service, UnknownProducts

try:  # orjson (the serve extra) writes 1,000 results in ~0.1 ms; the standard library takes ~1.3 ms
    import orjson

    def _dumps(body: Any) -> bytes:
        return orjson.dumps(body)  # NaN/inf would become null; _results already maps NaN weights to null
except ImportError:  # pragma: no cover - without orjson: same JSON, slower

    def _dumps(body: Any) -> bytes:
        return json.dumps(body, allow_nan=False).encode()

__all__ = ["create_app"]

_log = logging.getLogger("uvicorn.error")  # uvicorn's own logger: shown at its log level


class _Capacity:
    """Admitted requests (plus work that outlived a timed-out request); thread-safe, never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def hold(self) -> None:
        with self._lock:
            self.held += 1

    def release(self) -> None:
        with self._lock:
            self.held -= 1


class _Runtime:
    """What the endpoints share: the service (None while loading), pool, batcher, capacity and metrics."""

    def __init__(self, settings: ServeConfig, service: Service | None, api_key: str | None) -> None:
        self.settings = settings
        self.service = service
        self.load_error: str | None = None
        self.api_key = api_key
        self.metrics = ServiceMetrics()
        self.capacity = _Capacity(settings.max_inflight)
        self.pool = ThreadPoolExecutor(settings.worker_threads or settings.max_inflight, thread_name_prefix="qlife")
        self.batcher: QueryBatcher | None = None

    def attach(self, service: Service) -> None:
        self.service = service
        config = self.settings.batcher
        if config.enabled and not getattr(service.searcher.query_encoder, "batches", True):
            # An encoder that runs each query on its own (an int8 graph) gains nothing from a batch, and its
            # queries would only wait for company.
            config = config.model_copy(update={"enabled": False})
            _log.warning("querylife serve: the query encoder encodes one query at a time (%s): micro-batching off",
                         service.info.get("query_encoder"))
        service.info["micro_batching"] = config.enabled
        self.batcher = QueryBatcher(
            service.searcher.encode_queries,
            config,
            run=self.run,
            busy=lambda: self.capacity.held,
            on_batch=self.metrics.query_batch.observe,
            on_hit=self.metrics.cache_hits.inc,
        )

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run blocking ``fn`` in the pool; if the request is cancelled (timeout) while it runs, the work keeps a
        capacity slot until it ends."""
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                self.capacity.hold()
                future.add_done_callback(lambda _: self.capacity.release())
            raise


def _api_key(settings: ServeConfig) -> str | None:
    if settings.api_key_env is None:
        return None
    key = os.environ.get(settings.api_key_env, "")
    if not key:
        raise ValueError(f"api_key_env={settings.api_key_env!r} is set but that environment variable is empty or "
                         "unset: export the key there (an API key never goes on the command line)")
    return key


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    x = headers.get(b"x-api-key")
    return x.decode("latin-1").strip() if x is not None else None


async def _send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class _Guard:
    """Pure ASGI middleware: metrics for every request; auth, readiness, capacity and body size for ``/v1``."""

    def __init__(self, app, runtime: _Runtime) -> None:
        self.app, self.rt = app, runtime

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label = endpoint_label(scope["path"])
        start = time.perf_counter()
        status = [500]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                # The service time as the server saw it (request read -> response ready), next to the endpoint's
                # own spans: a load generator on the same cores can then tell its own delays from the server's.
                total = f"app;dur={(time.perf_counter() - start) * 1000:.3f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", total)]}
            await send(message)

        try:
            scope.setdefault("state", {})["querylife_start"] = start  # the endpoint's "parse" span starts here
            if scope["path"].startswith("/v1/"):
                await self._guarded(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            m = self.rt.metrics
            m.requests.labels(label, str(status[0])).inc()
            m.latency.labels(label).observe(time.perf_counter() - start)

    async def _reject(self, send, status: int, reason: str, message: str, headers=None) -> None:
        self.rt.metrics.rejected.labels(reason).inc()
        await _send_json(send, status, {"detail": message}, headers)

    async def _guarded(self, scope, receive, send) -> None:
        rt, s = self.rt, self.rt.settings
        headers = dict(scope.get("headers") or [])
        if rt.api_key is not None:
            presented = _presented_key(headers)
            if presented is None or not hmac.compare_digest(presented.encode(), rt.api_key.encode()):
                await self._reject(send, 401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY "
                                   "or X-API-Key: KEY)", {"WWW-Authenticate": "Bearer"})
                return
        if rt.service is None:
            why = f"the model failed to load: {rt.load_error}" if rt.load_error else "the model is still loading"
            await self._reject(send, 503, "not_ready", why, {"Retry-After": str(s.retry_after_s)})
            return
        if not rt.capacity.try_acquire():
            await self._reject(send, 429, "over_capacity", f"over capacity ({s.max_inflight} requests in flight, "
                               "max_inflight): retry later", {"Retry-After": str(s.retry_after_s)})
            return
        rt.metrics.inflight.inc()
        try:
            body = await self._read_body(scope, receive, send, headers)
            if body is None:
                return
            delivered = False

            async def replay():
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: wait for the disconnect, as the server would

            await self.app(scope, replay, send)
        finally:
            rt.metrics.inflight.dec()
            rt.capacity.release()

    async def _read_body(self, scope, receive, send, headers) -> bytes | None:
        limit = self.rt.settings.max_body_bytes
        too_big = f"request body over max_body_bytes={limit}"
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    await self._reject(send, 413, "body_too_large", too_big)
                    return None
            except ValueError:
                await self._reject(send, 400, "invalid", "malformed Content-Length")
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # a chunked body without Content-Length, or one that lies about it
                await self._reject(send, 413, "body_too_large", too_big)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _json(body) -> Response:
    # Already a validated response model: serialise once (FastAPI would validate it again against response_model,
    # a few ms for 1,000 results); response_model stays on the route for the OpenAPI schema.
    return Response(body.model_dump_json(), media_type="application/json")


def _server_timing(spans: dict[str, float]) -> str:
    """A ``Server-Timing`` header value (milliseconds): where the service spent a request's time."""
    return ", ".join(f"{k};dur={v * 1000:.3f}" for k, v in spans.items())


def _opt(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _results(scored: Scored) -> list[dict]:
    # Plain dicts from whole-array tolist() calls: 1,000 results cost ~0.2 ms instead of ~2.5 ms as pydantic
    # objects (the shape is RelevanceResult's, which the OpenAPI schema shows). float32 tolist() gives the same
    # Python floats as astype(float) without the copy; the NaN pass (concat's weights -> null) only when needed.
    scores, w = scored.scores.tolist(), scored.image_weight
    weight = [None if x != x else x for x in w.tolist()] if np.isnan(w).any() else w.tolist()
    if scored.probability is None:  # no calibrator: two fewer columns to zip
        return [{"product_id": pid, "score": s, "probability": None, "relevant": None, "image_weight": x}
                for pid, s, x in zip(scored.product_ids, scores, weight, strict=True)]
    prob, rel = scored.probability.astype(float).tolist(), scored.relevant.astype(bool).tolist()
    return [
        {"product_id": pid, "score": s, "probability": p, "relevant": r, "image_weight": x}
        for pid, s, p, r, x in zip(scored.product_ids, scores, prob, rel, weight, strict=True)
    ]


def _check_text(value: str, limit: int, loc: tuple, key: str) -> None:
    if len(value) > limit:
        raise BadInput(loc, f"{len(value)} characters, over {key}={limit}", "string_too_long")


def _check_count(n: int, limit: int, loc: tuple, key: str) -> None:
    if n > limit:
        raise BadInput(loc, f"{n} items, over {key}={limit}", "too_long")


def create_app(
    settings: ServeConfig | None = None,
    service: Service | None = None,
    *,
    loader: Callable[[], Service] | None = None,
) -> FastAPI:
    """The FastAPI app over ``service`` (or over what ``loader`` returns, loaded in the background at startup
    while /healthz already answers and /readyz says 503).

    Raises:
        ValueError: ``api_key_env`` names an empty or unset environment variable.
    """
    settings = settings or ServeConfig()
    if (service is None) == (loader is None):
        raise ValueError("give exactly one of service or loader")
    rt = _Runtime(settings, None, _api_key(settings))
    if service is not None:
        rt.attach(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = None
        if loader is not None and rt.service is None:

            async def load() -> None:
                started = time.perf_counter()
                try:
                    rt.attach(await asyncio.get_running_loop().run_in_executor(rt.pool, loader))
                except Exception as err:  # reported by /readyz, every /v1 answer and the log
                    rt.load_error = f"{type(err).__name__}: {err}"
                    _log.error("querylife serve: cannot load the model: %s", rt.load_error)
                    return
                info = rt.service.info
                _log.warning("querylife serve: ready in %.1f s: %s products, index %s, calibrator %s",
                             time.perf_counter() - started, info.get("store_products"), info.get("index"),
                             "yes" if info.get("calibrator") else f"no ({info.get('calibrator_note')})")

            task = asyncio.create_task(load())
        yield
        if task is not None:
            task.cancel()
        rt.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="querylife",
        summary="Query-aware multimodal relevance: score candidates, search the catalogue, embed.",
        version="1",
        lifespan=lifespan,
    )
    app.state.runtime = rt

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        rt.metrics.rejected.labels("invalid").inc()
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in err.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, err: BadInput) -> JSONResponse:
        rt.metrics.rejected.labels("invalid").inc()
        return JSONResponse({"detail": [{"type": err.kind, "loc": list(err.loc), "msg": err.message}]}, 422)

    @app.exception_handler(UnknownProducts)
    async def unknown(request: Request, err: UnknownProducts) -> JSONResponse:
        rt.metrics.rejected.labels("unknown_ids").inc()
        shown = ", ".join(map(repr, err.ids[:10])) + (f" and {len(err.ids) - 10} more" if len(err.ids) > 10 else "")
        body = {"detail": {"message": f"{len(err.ids)} product id(s) not in the store: {shown} (send "
                                      '"unknown_ids": "skip" to score the others)', "unknown_product_ids": err.ids}}
        return JSONResponse(body, status_code=404)

    async def timed(coro):
        try:
            return await asyncio.wait_for(coro, settings.request_timeout_s)
        except asyncio.TimeoutError:
            rt.metrics.rejected.labels("timeout").inc()
            msg = f"request took longer than request_timeout_s={settings.request_timeout_s}"
            return JSONResponse({"detail": msg}, status_code=504)

    def check_query(query: str) -> None:
        _check_text(query, settings.max_query_chars, ("body", "query"), "max_query_chars")

    @app.post("/v1/relevance", response_model=RelevanceResponse, responses={404: {}, 413: {}, 429: {}, 504: {}})
    async def relevance(req: RelevanceRequest, request: Request):
        """Score one query against candidates (stored ids or inline products) in one batched operation."""
        entered = time.perf_counter()
        check_query(req.query)
        if req.product_ids is not None:
            _check_count(len(req.product_ids), settings.max_candidates, ("body", "product_ids"), "max_candidates")
        else:
            _check_count(len(req.products), settings.max_inline_products, ("body", "products"),
                         "max_inline_products")
        n = len(req.product_ids if req.product_ids is not None else req.products)
        rt.metrics.candidates.labels("/v1/relevance").observe(n)

        async def work():
            svc, batcher = rt.service, rt.batcher
            # parse: body read, JSON parsing and validation (FastAPI) before this endpoint ran
            spans: dict[str, float] = {"parse": entered - request.scope["state"].get("querylife_start", entered)}

            def score(q: Any) -> bytes:  # fused scoring and the JSON body, in one pool thread
                t0 = time.perf_counter()
                if req.product_ids is not None:
                    scored = svc.score_stored(q, req.product_ids, skip_unknown=req.unknown_ids == "skip")
                else:
                    scored = svc.score_inline(q, req.products)
                t1 = time.perf_counter()
                body = _dumps({"query": req.query, "results": _results(scored), "unknown_product_ids": scored.unknown,
                               "threshold": svc.threshold, "model": svc.model_id})
                spans["score"], spans["serialize"] = t1 - t0, time.perf_counter() - t1
                return body

            if batcher.solo():
                # Nobody to batch with: encode in the same pool hop as the scoring (a hand-off costs ~0.3 ms and a
                # GIL round trip; at concurrency 1 that was the batcher's whole overhead).
                def encode_and_score() -> bytes:
                    t0 = time.perf_counter()
                    spans["pool_wait"] = t0 - submitted  # hand-off to a pool thread (and waiting for a core)
                    q = batcher.encode_blocking(req.query)
                    spans["encode"] = time.perf_counter() - t0
                    return score(q)

                submitted = time.perf_counter()
                payload = await rt.run(encode_and_score)
            else:
                t0 = time.perf_counter()
                q = await batcher.encode(req.query)
                spans["encode"] = time.perf_counter() - t0  # includes waiting for the batch
                payload = await rt.run(lambda: score(q))
            return Response(payload, media_type="application/json", headers={"server-timing": _server_timing(spans)})

        return await timed(work())

    @app.post("/v1/search", response_model=SearchResponse, responses={413: {}, 429: {}, 504: {}})
    async def search(req: SearchRequest):
        """Top-k products from the index, re-scored with the query-aware gate."""
        check_query(req.query)
        _check_count(req.k, settings.max_k, ("body", "k"), "max_k")
        if req.candidates is not None:
            _check_count(req.candidates, settings.max_search_candidates, ("body", "candidates"),
                         "max_search_candidates")
        rt.metrics.candidates.labels("/v1/search").observe(req.k)

        async def work():
            svc = rt.service
            q = await rt.batcher.encode(req.query)
            hits, prob, rel = await rt.run(lambda: svc.search(q, req.k, req.candidates))
            out = [
                SearchHit(product_id=h.product_id, title=h.title, product_type=h.product_type, score=h.score,
                          probability=None if prob is None else float(prob[i]),
                          relevant=None if rel is None else bool(rel[i]), image_weight=_opt(h.image_weight))
                for i, h in enumerate(hits)
            ]
            return _json(SearchResponse(query=req.query, hits=out, threshold=svc.threshold, model=svc.model_id))

        return await timed(work())

    @app.post("/v1/embed", response_model=EmbedResponse, responses={404: {}, 413: {}, 429: {}, 504: {}})
    async def embed(req: EmbedRequest):
        """Query vectors q, or product vectors (the index vector an ANN index searches with q, plus t and v)."""
        svc = rt.service
        if req.queries is not None:
            _check_count(len(req.queries), settings.max_embed_queries, ("body", "queries"), "max_embed_queries")
            for i, q in enumerate(req.queries):
                _check_text(q, settings.max_query_chars, ("body", "queries", i), "max_query_chars")
            rt.metrics.candidates.labels("/v1/embed").observe(len(req.queries))

            async def queries():
                vectors = await asyncio.gather(*(rt.batcher.encode(q) for q in req.queries))
                items = [EmbedItem(id=q, vector=v.tolist()) for q, v in zip(req.queries, vectors, strict=True)]
                return _json(EmbedResponse(kind="query", dim=svc.model.config.embed_dim, items=items,
                                           model=svc.model_id))

            return await timed(queries())
        if req.product_ids is not None:
            _check_count(len(req.product_ids), settings.max_candidates, ("body", "product_ids"), "max_candidates")
            n = len(req.product_ids)
        else:
            _check_count(len(req.products), settings.max_inline_products, ("body", "products"),
                         "max_inline_products")
            n = len(req.products)
        rt.metrics.candidates.labels("/v1/embed").observe(n)

        async def products():
            if req.product_ids is not None:
                stored = await rt.run(lambda: svc.embed_stored(req.product_ids))
                ids: list[str | None] = list(req.product_ids)
            else:
                stored = await rt.run(lambda: svc.encode_inline(req.products))
                ids = [p.product_id for p in req.products]
            has = stored.has_image.numpy().astype(bool)
            items = [
                EmbedItem(id=ids[i], vector=stored.index_vectors[i].tolist(), title_vector=stored.t[i].tolist(),
                          image_vector=stored.v[i].tolist(), has_image=bool(has[i]))
                for i in range(len(ids))
            ]
            dim = int(stored.index_vectors.shape[-1]) if len(ids) else svc.model.config.embed_dim
            return _json(EmbedResponse(kind="product", dim=dim, items=items, model=svc.model_id))

        return await timed(products())

    @app.get("/healthz")
    async def healthz() -> dict:
        """The process is up (it may still be loading the model: see /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {}})
    async def readyz():
        """Ready when the model and the store are loaded; says what was loaded (checkpoint hash, store size,
        whether a calibrator gives probabilities and decisions)."""
        if rt.service is None:
            reason = f"load failed: {rt.load_error}" if rt.load_error else "loading"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503,
                                headers={"Retry-After": str(settings.retry_after_s)})
        info = {k: (v if not isinstance(v, np.generic) else v.item()) for k, v in rt.service.info.items()}
        return {"ready": True, **info, "limits": settings.model_dump(exclude={"api_key_env"}),
                "auth": settings.api_key_env is not None, "pid": os.getpid()}  # which worker (--workers N) answered

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format (querylife.serve.metrics lists the names)."""
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return _wrap(app, rt)


def _wrap(app: FastAPI, rt: _Runtime) -> FastAPI:
    # Outermost, so that it sees (and counts) every request, including the ones it refuses before routing.
    app.add_middleware(_Guard, runtime=rt)
    return app
