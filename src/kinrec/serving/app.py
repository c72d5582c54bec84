"""The FastAPI application: routes, auth, errors as 4xx naming the field, metrics,
structured logs, the web console, and loading the engine in the background."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import kinrec
from kinrec.data.errors import DataError
from kinrec.models.memory import MemoryLimitError
from kinrec.privacy.pseudonym import Pseudonymiser
from kinrec.serving.config import DEFAULT_MAX_BODY_BYTES, ServingConfig
from kinrec.serving.engine import Engine
from kinrec.serving.errors import ConflictError, InvalidError, NotFoundError
from kinrec.serving.keys import KeyRing
from kinrec.serving.metrics import Metrics
from kinrec.serving.pseudonyms import PseudonymMiddleware, app_pseudonymiser
from kinrec.serving.reload import ModelWatcher, Reloader
from kinrec.serving.replication import Replicator
from kinrec.serving.routes import ops, router

log = logging.getLogger("kinrec.serving")
access = logging.getLogger("kinrec.serving.access")
STATIC = resources.files("kinrec.serving") / "static"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Structured (JSON lines) logs on stderr for the service's loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("kinrec")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def freeze_heap() -> None:
    """Move everything loaded so far (model, libraries, catalogue) out of the garbage
    collector's reach: a full collection over it takes ~0.1 s, a pause every request waiting
    at that moment would see."""
    gc.collect()
    gc.freeze()


def _error(status: int, message: str, fields: list[dict[str, str]] | None = None, **kw):
    body = {"error": message, "detail": fields or []}
    return JSONResponse(body, status_code=status, **kw)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif p not in ("EventIn", "EventBatch") and not str(p).startswith("function-"):
            parts.append(str(p))
    return ".".join(parts)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = []
    for err in exc.errors():
        name = _field_name(tuple(err.get("loc", ())))
        message = str(err.get("msg", "invalid"))
        if {"field": name, "message": message} not in fields:
            fields.append({"field": name, "message": message})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return _error(422, f"invalid request: {summary}", fields)


def _install_errors(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return _error(404, str(exc.args[0]))

    @app.exception_handler(InvalidError)
    async def _invalid(request: Request, exc: InvalidError) -> JSONResponse:
        return _error(422, f"{exc.field}: {exc}", [{"field": exc.field, "message": str(exc)}])

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        field = exc.field or "body"
        return _error(422, str(exc), [{"field": field, "message": str(exc)}])

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(MemoryLimitError)
    async def _memory(request: Request, exc: MemoryLimitError) -> JSONResponse:
        log.error("refused for memory on %s %s: %s", request.method, request.url.path, exc)
        return _error(503, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error (logged)")


def _replicator(
    app: FastAPI, config: ServingConfig | None, engine: Engine | None, wanted: bool | None
) -> Replicator | None:
    """The replication listener the service runs, if any (see :func:`create_app`)."""
    if wanted is None:
        wanted = config is not None and config.replication == "auto"
    if not wanted:
        return None
    url = config.db if config is not None else str(engine.store.engine.url.render_as_string(False))

    def reload_keys() -> None:
        if app.state.keyring is not None:
            app.state.keyring.reload()

    return Replicator(
        url,
        poll_seconds=config.replication_poll_seconds if config is not None else 0.25,
        reconnect_seconds=config.replication_reconnect_seconds if config is not None else 1.0,
        on_keys=reload_keys,
    )


def _too_large(limit: int) -> StarletteHTTPException:
    return StarletteHTTPException(
        413,
        f"request body larger than {limit:,} bytes (the service's max_body_bytes)",
        headers={"Connection": "close"},
    )


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 before they are read: at once when
    ``Content-Length`` says so, and for a body without one (chunked) as soon as the bytes
    received pass the limit, so that no body larger than the limit is ever held whole."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await self._refuse(scope, receive, send, limit)
                    return
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        async def watched_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except StarletteHTTPException as exc:
            # raised while reading the body outside the exception handlers' reach
            if exc.status_code != 413 or started:
                raise
            await self._refuse(scope, receive, send, limit)

    @staticmethod
    async def _refuse(scope, receive, send, limit: int) -> None:
        exc = _too_large(limit)
        await _error(exc.status_code, str(exc.detail), headers=exc.headers)(scope, receive, send)


class ObserveMiddleware:
    """Latency histogram per route template and one structured log line per request."""

    def __init__(self, app, metrics: Metrics, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).observe(elapsed)
            if status in (401, 403, 429):
                self.metrics.auth_failures.labels(str(status)).inc()
            if self.log_requests:
                access.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                    },
                )


def create_app(
    config: ServingConfig | None = None,
    *,
    engine: Engine | None = None,
    engine_factory: Callable[[], Engine] | None = None,
    keyring: KeyRing | None = None,
    metrics: Metrics | None = None,
    max_body_bytes: int | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    replication: bool | None = None,
) -> FastAPI:
    """The service. Give a ready ``engine`` (tests), or an ``engine_factory`` (or a
    ``config``) to load one in the background after start-up: ``/healthz`` answers at once,
    ``/readyz`` and the API answer 503 until the engine is loaded. Request bodies over
    ``max_body_bytes`` (default: the config's, else ``DEFAULT_MAX_BODY_BYTES``) get 413
    before they are read. Over a pseudonymised store, incoming user ids are replaced by their
    pseudonyms (``pseudonymiser``, else the key the config or the environment names;
    :mod:`kinrec.serving.pseudonyms`). ``replication``: apply other replicas' changes to
    this service's engine (:mod:`kinrec.serving.replication`; default: the config's
    ``replication``, off for a given ``engine`` without a config). ``POST /v1/admin/reload``
    loads a new engine with ``engine_factory`` (or from the config) and swaps it in
    (:mod:`kinrec.serving.reload`)."""
    if config is None and engine is None:
        raise ValueError("create_app needs a config or an engine")
    metrics = metrics or (engine.metrics if engine is not None else Metrics())
    if engine_factory is None and config is not None:
        engine_factory = lambda: Engine.open(config)  # noqa: E731

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = None
        replicator = app.state.replicator = _replicator(app, config, engine, replication)
        reloader = app.state.reloader = Reloader(
            app,
            engine_factory,
            replicator=replicator,
            grace_seconds=config.reload_grace_seconds if config is not None else 10.0,
            model_dir=config.model_dir if config is not None else None,
        )
        if replicator is not None:
            replicator.on_reload = reloader.start
        watcher = None
        if config is not None and config.watch_model:
            watcher = ModelWatcher(config.model_dir, reloader, config.watch_seconds)
        if app.state.engine is None:

            async def load() -> None:
                try:
                    # before the state is read: what commits meanwhile is applied after
                    cursor = await asyncio.to_thread(replicator.snapshot) if replicator else None
                    loaded = await asyncio.to_thread(engine_factory)
                    loaded.metrics = metrics
                    loaded._update_gauges()
                    freeze_heap()
                    if replicator is not None:
                        await asyncio.to_thread(replicator.attach, loaded, cursor)
                    app.state.engine = loaded
                    if replicator is not None:
                        replicator.start()
                    if watcher is not None:
                        watcher.start()
                except Exception as exc:  # reported by /readyz; the process stays up
                    app.state.load_error = str(exc)
                    log.exception("could not load the engine")

            task = asyncio.create_task(load())
        else:
            if replicator is not None:
                replicator.attach(app.state.engine, replicator.snapshot())
                replicator.start()
            if watcher is not None:
                watcher.start()
            freeze_heap()
        yield
        if task is not None and not task.done():
            task.cancel()
        if watcher is not None and watcher._thread.is_alive():
            watcher.stop()
        if replicator is not None:
            replicator.stop()
        if app.state.engine is not None and app.state.engine is not engine:
            app.state.engine.close()
        if app.state.keyring is not None:
            app.state.keyring.flush()  # the keys' latest uses
        log.info("shutdown complete")

    app = FastAPI(
        title="kinrec",
        version=kinrec.__version__,
        description=(
            "Real-time recommendations from a trained kinrec model: live events, new items, "
            "explanations. Authenticate with `Authorization: Bearer <API key>` "
            "(`kinrec keys create`)."
        ),
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.load_error = None
    app.state.metrics = metrics
    app.state.pseudonyms = app_pseudonymiser(config, engine, pseudonymiser)
    insecure = config.insecure_no_auth if config is not None else keyring is None
    if insecure:
        app.state.keyring = None
    elif keyring is not None:
        app.state.keyring = keyring
    else:
        from kinrec.store import Store

        app.state.keyring = KeyRing(
            Store(config.db),
            config.key_refresh_seconds,
            last_use_every=config.key_last_use_seconds,
        )
    _install_errors(app)
    app.include_router(ops)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    log_requests = config.log_requests if config is not None else True
    if max_body_bytes is None:
        max_body_bytes = config.max_body_bytes if config is not None else DEFAULT_MAX_BODY_BYTES
    app.state.max_body_bytes = max_body_bytes
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(ObserveMiddleware, metrics=metrics, log_requests=log_requests)
    if app.state.pseudonyms is not None:  # added last = outermost: no layer sees a raw id
        app.add_middleware(PseudonymMiddleware, pseudonymiser=app.state.pseudonyms)
    return app
