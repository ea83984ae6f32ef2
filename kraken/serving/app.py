"""The HTTP API of a serving replica (FastAPI; the OpenAPI spec is at ``/openapi.json``).

=====================  ===========================================================================
``POST /v1/predict``   scores for raw feature values: ``{"instances": [{feature: value}, ...]}``
                       or, for ranking, ``{"context": {...}, "candidates": [{...}, ...]}``;
                       returns ``{"scores": [...], "version": v, "dense_version": d, "model": m}``
``GET /healthz``       200 while the process runs
``GET /readyz``        200 once a model is loaded, 503 before
``GET /v1/model``      version, last sync, freshness lag, table sizes, sync history
``GET /metrics``       Prometheus text: requests and latencies by route and status, sync lag,
                       versions applied, rows held
=====================  ===========================================================================

Bad input is a 4xx, never a 5xx: a malformed body or a wrong value is a 422 whose
``detail[].loc`` names the field (``["body", "candidates", 3, "c7"]``), a body over
``max_body_bytes`` or more than ``max_instances`` instances a 413. Requests are answered
from one consistent model version while syncs are applied (see :class:`Replica`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from kraken.data.featurize import check_records
from kraken.errors import InputError, NotReadyError
from kraken.serving.replica import Replica

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_INSTANCES", "create_app"]

DEFAULT_MAX_BODY_BYTES = 4 << 20
DEFAULT_MAX_INSTANCES = 4096
MAX_TEXT = 1024
MAX_VALUES = 1024
ROUTES = ("/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics", "/openapi.json",
          "/docs", "/docs/oauth2-redirect", "/redoc")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Text = Annotated[StrictStr, StringConstraints(max_length=MAX_TEXT)]
Scalar = StrictInt | StrictFloat | Text | None
Value = Scalar | Annotated[list[StrictInt | Text], Field(max_length=MAX_VALUES)]
Record = dict[Annotated[str, StringConstraints(max_length=MAX_TEXT)], Value]


class PredictRequest(BaseModel):
    """Raw feature values, hashed exactly as in training.

    A feature is named as in the stream's schema (``GET /v1/model`` lists them). A
    categorical value is an integer or a string, a multi-valued one a list of them, a dense
    one a number; a missing feature or ``null`` is the missing value. Give either
    ``instances`` (one record per prediction) or ``candidates`` (one record per candidate)
    with optional shared ``context`` features merged into every candidate.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"instances": [{"c0": 17, "c1": 3, "d0": 0.5}]},
        {"context": {"c0": 17}, "candidates": [{"c1": 3}, {"c1": 9}]}]})

    instances: list[Record] | None = Field(default=None, description="one record per score")
    context: Record | None = Field(default=None, description="features shared by candidates")
    candidates: list[Record] | None = Field(default=None, description="one record per score")

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if (self.instances is None) == (self.candidates is None):
            raise ValueError("give exactly one of 'instances' or 'candidates'")
        if self.context is not None and self.candidates is None:
            raise ValueError("'context' goes with 'candidates'")
        if not (self.instances or self.candidates):
            raise ValueError("no instances or candidates to score")
        return self


class PredictResponse(BaseModel):
    """One score (click probability) per instance or candidate, in order."""

    scores: list[float]
    version: int = Field(description="the model version that produced every score")
    dense_version: int = Field(description="the version of the dense weights used")
    shard_versions: list[int] = Field(
        default_factory=list,
        description="the version of each shard's rows used, when shards publish the rows")
    model: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    version: int
    reason: str = ""


class ModelInfo(BaseModel):
    ready: bool
    model: str
    version: int
    dense_version: int
    lineage: str
    published_at: float = Field(description="trainer's publish time of the version served")
    applied_at: float = Field(description="when this server applied it")
    max_event_time: int = Field(description="newest event time trained into it")
    lag_s: float = Field(description="now - published_at: how old the served version is")
    sync_delay_s: float = Field(description="applied_at - published_at of the last version")
    event_lag_s: float = Field(description="now - max_event_time (for streams in real time)")
    versions_applied: int
    snapshots_loaded: int
    sync: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    memory_bytes: int
    features: dict[str, Any]
    history: list[tuple[int, float, float]] = Field(
        description="recent (version, published_at, applied_at)")
    shards: list[dict[str, Any]] = Field(
        default_factory=list,
        description="when shards publish the rows, per shard: version, lineage, "
                    "published_at, applied_at, lag_s (now - published_at), max_event_time, "
                    "versions_applied, snapshots_loaded, history (the last 256 "
                    "[version, published_at, applied_at])")


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


class _BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` (declared or streamed) gets a 413.

    The body is read here (at most ``max_bytes`` of it) and replayed to the app, so an
    over-long chunked body is refused before any handler parses it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _error(400, "invalid Content-Length header")(scope, receive, send)
                return
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _error(413, f"request body over the limit of {self.max_bytes} bytes")(
            scope, receive, send)


class _Metrics:
    """ASGI middleware counting requests and timing them by route and status."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("kraken_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram(
            "kraken_http_request_duration_seconds", "HTTP request latency by route and status",
            ["method", "route", "status"], registry=registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def capture(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", None) or scope.get("path", "")
            route = route if route in ROUTES else "other"
            labels = (scope.get("method", ""), route, str(status))
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(time.perf_counter() - t0)


class _ReplicaCollector:
    """Prometheus gauges read from the replica (and its follower) at scrape time."""

    def __init__(self, replica: Replica, sync_status: Callable[[], dict[str, Any]],
                 clock: Callable[[], float], counters: dict[str, int]) -> None:
        self.replica, self.sync_status, self.clock, self.counters = (
            replica, sync_status, clock, counters)

    def collect(self) -> Any:
        info = self.replica.info()
        now = self.clock()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("kraken_serving_ready", "1 once a model is loaded", float(info.ready))
        yield gauge("kraken_serving_version", "model version served", info.version)
        yield gauge("kraken_serving_dense_version", "version of the dense weights served",
                    info.dense_version)
        yield gauge("kraken_serving_lag_seconds", "now - publish time of the version served",
                    now - info.publish_time if info.ready else math.nan)
        yield gauge("kraken_serving_sync_delay_seconds",
                    "apply time - publish time of the last version applied",
                    info.applied_time - info.publish_time if info.ready else math.nan)
        yield gauge("kraken_serving_memory_bytes", "bytes of the weights store", info.memory_bytes)
        rows = GaugeMetricFamily("kraken_serving_rows", "rows held per table", labels=["table"])
        for name, t in info.tables.items():
            rows.add_metric([name], t["rows"])
        yield rows
        if info.shards:  # the rows come from shards: one series per shard
            sv = GaugeMetricFamily("kraken_serving_shard_version",
                                   "version of each shard's rows served", labels=["shard"])
            sl = GaugeMetricFamily("kraken_serving_shard_lag_seconds",
                                   "now - publish time of each shard's rows served",
                                   labels=["shard"])
            for k, st in enumerate(info.shards):
                sv.add_metric([str(k)], st.version)
                sl.add_metric([str(k)], now - st.publish_time if st.version else math.nan)
            yield sv
            yield sl
        yield CounterMetricFamily("kraken_serving_versions_applied", "versions applied",
                                  value=info.versions_applied)
        yield CounterMetricFamily("kraken_serving_snapshots_loaded", "full snapshots loaded",
                                  value=info.snapshots_loaded)
        sync = self.sync_status()
        yield CounterMetricFamily("kraken_serving_sync_gaps", "version gaps detected",
                                  value=sync.get("gaps", 0))
        yield CounterMetricFamily("kraken_serving_sync_errors", "sync errors",
                                  value=sync.get("errors", 0))
        yield CounterMetricFamily("kraken_serving_scored", "instances scored",
                                  value=self.counters["scored"])
        lag = sync.get("consumer_lag")
        if lag is not None:  # the trainer beside this server reads an event log
            yield gauge("kraken_consumer_lag_entries",
                        "log entries not yet read by the trainer", lag["entries"])
            yield gauge("kraken_consumer_lag_seconds",
                        "age of the oldest log entry not yet read by the trainer",
                        lag["seconds"])


def create_app(replica: Replica, *, sync_status: Callable[[], dict[str, Any]] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_instances: int = DEFAULT_MAX_INSTANCES,
               clock: Callable[[], float] = time.time) -> FastAPI:
    """The ASGI app serving ``replica`` (see the module docstring).

    ``sync_status`` returns the follower's counters (``gaps``, ``errors``, ``last_error``)
    and, when a trainer reading an event log runs beside the server, ``consumer_lag``
    (``{"entries", "seconds"}``, exported as ``kraken_consumer_lag_*``).
    """
    status_of = sync_status or (lambda: {})
    registry = CollectorRegistry()
    counters = {"scored": 0}
    registry.register(_ReplicaCollector(replica, status_of, clock, counters))  # type: ignore[arg-type]
    app = FastAPI(title="Kraken serving", version="1",
                  description="Predictions from a replica that follows a continual trainer.")

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness,
             responses={503: {"model": Readiness, "description": "no model loaded yet"}})
    def readyz() -> Any:
        if replica.ready:
            return Readiness(ready=True, version=replica.version)
        return JSONResponse(status_code=503, content=Readiness(
            ready=False, version=0, reason="waiting for the first snapshot").model_dump())

    @app.get("/v1/model", response_model=ModelInfo)
    def model_info() -> ModelInfo:
        i = replica.info()
        now = clock()
        lag = (now - i.publish_time) if i.ready else -1.0
        return ModelInfo(
            ready=i.ready, model=i.model, version=i.version, dense_version=i.dense_version,
            lineage=i.lineage, published_at=i.publish_time, applied_at=i.applied_time,
            max_event_time=i.max_event_time, lag_s=lag,
            sync_delay_s=(i.applied_time - i.publish_time) if i.ready else -1.0,
            event_lag_s=(now - i.max_event_time) if i.ready else -1.0,
            versions_applied=i.versions_applied, snapshots_loaded=i.snapshots_loaded,
            sync=status_of(), tables=i.tables, memory_bytes=i.memory_bytes,
            features=replica.spec.features.to_dict() if i.ready else {}, history=i.history,
            shards=[{"shard": k, "version": st.version, "lineage": st.lineage,
                     "published_at": st.publish_time, "applied_at": st.applied_time,
                     "lag_s": (now - st.publish_time) if st.version else -1.0,
                     "max_event_time": st.max_event_time,
                     "versions_applied": st.versions_applied,
                     "snapshots_loaded": st.snapshots_loaded,
                     "history": [list(h) for h in st.history]}
                    for k, st in enumerate(i.shards)])

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}})
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/predict", response_model=PredictResponse, responses={
        413: {"description": "body or instance count over the limit"},
        503: {"description": "no model loaded yet"}})
    def predict(req: PredictRequest) -> Any:
        if req.instances is not None:
            where, items = "instances", req.instances
        elif req.candidates is not None:
            where, items = "candidates", req.candidates
        else:  # PredictRequest's validator already refuses this
            return _error(422, "give exactly one of 'instances' or 'candidates'")
        if len(items) > max_instances:
            return _error(413, f"{len(items)} {where}, the limit is {max_instances}")
        if not replica.ready:
            return _error(503, "no model loaded yet: waiting for the first snapshot")
        context = req.context or {}
        detail: list[dict[str, Any]] = []
        if context:
            for i, c in enumerate(items):
                for name in c.keys() & context.keys():
                    detail.append({"loc": ["body", where, i, name], "type": "value_error",
                                   "msg": "feature given in both context and candidate"})
            records = [{**context, **c} for c in items]
        else:
            records = items
        seen = set()
        for p in check_records(replica.spec.features, records):
            loc = (["body", "context", p.field] if p.field in context
                   else ["body", where, p.index, p.field])
            if tuple(loc) not in seen:
                seen.add(tuple(loc))
                detail.append({"loc": loc, "type": "value_error", "msg": p.message})
        if detail:
            return _error(422, detail[:100])
        try:
            pred = replica.predict_records(records)
        except NotReadyError as exc:
            return _error(503, str(exc))
        except InputError as exc:
            return _error(422, [{"loc": ["body", where], "type": "value_error",
                                 "msg": str(exc)}])
        counters["scored"] += len(records)
        return PredictResponse(scores=pred.scores.tolist(), version=pred.version,
                               dense_version=pred.dense_version,
                               shard_versions=list(pred.shard_versions),
                               model=replica.spec.model)

    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)  # type: ignore[arg-type]
    app.add_middleware(_Metrics, registry=registry)  # type: ignore[arg-type]
    return app
