"""The versioned JSON API (``/v1``) and the operational endpoints."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from kinrec.serving import audit
from kinrec.serving import schemas as sc
from kinrec.serving.engine import Engine
from kinrec.serving.keys import (
    KeyExpiredError,
    RateLimitedError,
    Role,
    UnknownKeyError,
    allows,
)
from kinrec.serving.pseudonyms import pseudonymise_events

bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer kr_...`")

UserId = Annotated[
    str, Path(min_length=1, max_length=sc.MAX_ID, pattern=sc.ID_PATTERN, description="user id")
]
ItemId = Annotated[
    str, Path(min_length=1, max_length=sc.MAX_ID, pattern=sc.ID_PATTERN, description="item id")
]
ERRORS = {
    401: {"model": sc.ErrorBody, "description": "no, unknown, revoked or expired API key"},
    403: {"model": sc.ErrorBody, "description": "the key's role does not allow this"},
    429: {"model": sc.ErrorBody, "description": "the key is over its rate (see Retry-After)"},
    404: {"model": sc.ErrorBody, "description": "unknown user or item"},
    422: {"model": sc.ErrorBody, "description": "invalid request (the field is named)"},
    503: {"model": sc.ErrorBody, "description": "the model is still loading"},
}


def engine_of(request: Request) -> Engine:
    engine = request.app.state.engine
    if engine is None:
        raise HTTPException(503, "the model is still loading")
    return engine


def require(role: Role):
    """A dependency that lets through keys of ``role`` or higher: 401 for no, unknown,
    revoked or expired key, 429 (with ``Retry-After``) over the key's rate, 403 for a role
    too low. The key's id is left in ``request.state.actor`` for the audit log."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Engine:
        state = request.app.state
        request.state.actor = audit.NO_AUTH_ACTOR
        if state.keyring is not None:
            challenge = {"WWW-Authenticate": "Bearer"}
            if credentials is None or credentials.scheme.lower() != "bearer":
                raise HTTPException(401, "missing API key", headers=challenge)
            try:
                record = state.keyring.authenticate(credentials.credentials)
            except (UnknownKeyError, KeyExpiredError) as exc:
                raise HTTPException(401, str(exc), headers=challenge) from None
            except RateLimitedError as exc:
                raise HTTPException(
                    429, str(exc), headers={"Retry-After": str(exc.retry_after)}
                ) from None
            if not allows(record.role, role):
                raise HTTPException(403, f"this key's role ({record.role}) cannot do this ({role})")
            request.state.actor = record.id
        return engine_of(request)

    return check


async def _audit(
    request: Request,
    engine: Engine,
    action: str,
    kind: audit.TargetKind,
    target: str,
    detail: dict | None = None,
) -> None:
    """Append the admin action just committed to the audit log, by the request's key."""
    await run_in_threadpool(
        audit.record, engine.store, request.state.actor, action, kind, target, detail
    )


Reader = Annotated[Engine, Depends(require("read"))]
Writer = Annotated[Engine, Depends(require("write"))]
Admin = Annotated[Engine, Depends(require("admin"))]

router = APIRouter(responses=ERRORS)


def _json(payload: dict) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), media_type="application/json")


# ---------------------------------------------------------------------------- operations
ops = APIRouter(tags=["operations"])


@ops.get("/healthz", response_model=sc.Health)
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@ops.get("/readyz", response_model=sc.Health, responses={503: {"model": sc.Health}})
async def readyz(request: Request) -> Response:
    """The model is loaded and the online state restored."""
    state = request.app.state
    if state.engine is None:
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status}, status_code=503)
    return JSONResponse({"status": "ready"})


@ops.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    m = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type)


# ---------------------------------------------------------------------------- users
@router.get("/v1/info", response_model=sc.Info, tags=["service"])
async def info(engine: Reader, request: Request) -> dict:
    """The served model, dataset and capabilities."""
    return {**engine.info(), "auth": request.app.state.keyring is not None}


@router.get(
    "/v1/model/training.png",
    response_class=Response,
    tags=["service"],
    responses={200: {"content": {"image/png": {}}, "description": "the training curve (PNG)"}},
)
async def training_curve(engine: Reader) -> Response:
    """The served model's training curve: mean training loss and validation NDCG@10 per
    epoch, the epoch whose state was kept marked. 404 for a model not trained in epochs."""
    data = await run_in_threadpool(engine.training_curve)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


@router.get(
    "/v1/users/{user_id}/recommendations",
    response_model=sc.RecommendationList,
    tags=["recommendations"],
)
async def recommendations(
    engine: Reader,
    user_id: UserId,
    k: Annotated[int, Query(ge=1, le=200, description="number of items")] = 10,
    exclude_seen: Annotated[bool, Query(description="leave out items in the history")] = True,
    category: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=sc.MAX_ID,
            pattern=sc.ID_PATTERN,
            description='an attribute token ("Comedy") or field:token ("genre:Comedy")',
        ),
    ] = None,
    new_item_slots: Annotated[
        int | None,
        Query(
            ge=0,
            le=200,
            description="positions reserved for the best new items (default: the server's)",
        ),
    ] = None,
) -> Response:
    """The user's top-k items, ranked, each with a reason. Unknown users get popular items."""
    body = engine.recommend_json(user_id, k, exclude_seen, category, new_item_slots)
    return Response(body, media_type="application/json")


@router.get(
    "/v1/users/{user_id}/recommendations/{item_id}/explanation",
    response_model=sc.Explanation,
    tags=["recommendations"],
)
async def explanation(engine: Reader, user_id: UserId, item_id: ItemId) -> Response:
    """Why an item suits a user: similar items in their history, knowledge-graph paths."""
    return _json(await run_in_threadpool(engine.explain, user_id, item_id))


@router.get("/v1/users/{user_id}/history", response_model=sc.History, tags=["users"])
async def history(
    engine: Reader, user_id: UserId, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> Response:
    """Items the user was trained on and their events since (newest first)."""
    return _json(engine.user_history(user_id, limit))


@router.get("/v1/users", response_model=sc.UserList, tags=["users"])
async def users(
    engine: Reader,
    prefix: Annotated[str, Query(max_length=sc.MAX_ID)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict:
    """User ids (users with recent events first), for pickers."""
    return {"users": engine.list_users(prefix, limit)}


@router.delete("/v1/users/{user_id}", response_model=sc.Erasure, tags=["users"])
async def erase_user(engine: Admin, user_id: UserId, request: Request) -> dict:
    """Erase a user: stored events, interactions and attributes, online state, cache, and
    what the served model learned from them: the parts it can update exactly are updated
    now (``model.exact``), the others wait for ``kinrec retrain`` (``model.pending``)."""
    deleted = await run_in_threadpool(engine.store_erasure, user_id)
    engine.apply_erasure(user_id)
    model = await run_in_threadpool(engine.forget_in_model, user_id)
    detail = {"deleted": deleted, "model": model}
    await _audit(request, engine, "user.erase", "user", user_id, detail)
    return {"user_id": user_id, "deleted": deleted, "model": model}


# ---------------------------------------------------------------------------- events
@router.post("/v1/events", response_model=sc.EventsAccepted, status_code=201, tags=["events"])
async def post_events(engine: Writer, body: sc.EventIn | sc.EventBatch, request: Request) -> dict:
    """Store events (committed before the response), then fold them into the users' state:
    the next recommendation reflects them. Unknown users become new users."""
    batch = isinstance(body, sc.EventBatch)
    rows = [e.model_dump() for e in (body.events if batch else [body])]
    pseudonymise_events(request.app.state.pseudonyms, rows)  # over a pseudonymised store
    engine.validate_events(rows, batch)
    if engine.local_store:  # a sub-millisecond SQLite commit: cheaper than a thread hand-off
        events = engine.store_events(rows)
    else:
        events = await run_in_threadpool(engine.store_events, rows)
    engine.apply_events(events)
    return {"ids": [e.id for e in events], "accepted": len(events)}


# ---------------------------------------------------------------------------- items
@router.get("/v1/items", response_model=sc.ItemList, tags=["items"])
async def items(
    engine: Reader,
    q: Annotated[str, Query(max_length=200, description="title substring or item id")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict:
    """Recommendable items whose title contains ``q``."""
    return {"items": engine.search_items(q, limit)}


@router.get("/v1/items/{item_id}", response_model=sc.ItemOut, tags=["items"])
async def item(engine: Reader, item_id: ItemId) -> dict:
    """An item's stored fields and whether it can be recommended."""
    return engine.item(item_id)


async def _write_item(engine: Engine, item_id: str, body: sc.ItemPatch, create: bool) -> dict:
    texts = dict(body.text)
    attributes = {k: list(v) for k, v in body.attributes.items()}
    links = [(link.relation, link.entity_id) for link in body.links]
    entity = engine.check_item(item_id, texts, attributes, body.entity_id, links, create)
    await run_in_threadpool(engine.store_item, item_id, texts, attributes, entity, links, create)
    return engine.apply_item(item_id, texts, attributes, entity, links, create)


@router.post("/v1/items", response_model=sc.ItemOut, status_code=201, tags=["items"])
async def create_item(engine: Admin, body: sc.ItemIn, request: Request) -> dict:
    """Add an item: stored, vectorised from its content and graph views by the model (when it
    can), indexed, and recommendable on the next call."""
    out = await _write_item(engine, body.item_id, body, create=True)
    await _audit(request, engine, "item.create", "item", body.item_id)
    return out


@router.patch("/v1/items/{item_id}", response_model=sc.ItemOut, tags=["items"])
async def update_item(engine: Admin, item_id: ItemId, body: sc.ItemPatch, request: Request) -> dict:
    """Replace the given fields of an item."""
    out = await _write_item(engine, item_id, body, create=False)
    graph = [name for name in ("entity_id", "links") if getattr(body, name)]
    changed = sorted({*body.text, *body.attributes, *graph})
    await _audit(request, engine, "item.update", "item", item_id, {"fields": changed})
    return out


@router.delete("/v1/items/{item_id}", response_model=sc.ItemOut, tags=["items"])
async def retire_item(engine: Admin, item_id: ItemId, request: Request) -> dict:
    """Retire an item: never recommended again (its history stays)."""
    await run_in_threadpool(engine.store_retire, item_id)
    engine.apply_retire(item_id)
    await _audit(request, engine, "item.retire", "item", item_id)
    return engine.item(item_id)


@router.get("/v1/items/{item_id}/graph", response_model=sc.ItemGraph, tags=["items"])
async def item_graph(
    engine: Reader,
    item_id: ItemId,
    limit: Annotated[int, Query(ge=1, le=200, description="edges to list")] = 24,
) -> Response:
    """An item's knowledge-graph neighbourhood: item -relation-> entity, and how many other
    items share each entity (a few named)."""
    return _json(await run_in_threadpool(engine.item_graph, item_id, limit))


@router.get("/v1/items/{item_id}/similar", response_model=sc.SimilarList, tags=["items"])
async def similar(
    engine: Reader,
    item_id: ItemId,
    k: Annotated[int, Query(ge=1, le=200)] = 10,
    by: Annotated[Literal["cf", "text", "kg", "blend"], Query()] = "cf",
) -> Response:
    """Items like this one: collaborative (``cf``), text, knowledge graph, or a blend."""
    return _json(await run_in_threadpool(engine.similar, item_id, k, by))


# ---------------------------------------------------------------------------- admin
def _reloader(request: Request):
    reloader = getattr(request.app.state, "reloader", None)
    if reloader is None or reloader.factory is None:
        raise HTTPException(409, "this service was not started from a model directory to reload")
    return reloader


@router.post("/v1/admin/reload", status_code=202, tags=["admin"])
async def reload_model(
    engine: Admin,
    request: Request,
    scope: Annotated[
        Literal["all", "this"],
        Query(description="all: every replica on the store reloads; this: this one only"),
    ] = "all",
) -> JSONResponse:
    """Load the model directory again in the background and swap it in when loaded; the
    current model answers until then (:mod:`kinrec.serving.reload`). 202 at once;
    ``GET /v1/admin/reload`` says when it is done."""
    from kinrec.serving.reload import publish_reload

    reloader = _reloader(request)
    if scope == "all":
        await run_in_threadpool(publish_reload, engine, request.state.actor)
    reloader.start("request")
    return JSONResponse({**reloader.status(), "scope": scope}, status_code=202)


@router.get("/v1/admin/reload", tags=["admin"])
async def reload_status(engine: Admin, request: Request) -> dict:
    """The last reload: ``state`` (idle, loading, failed), ``generation`` (reloads done),
    ``last_error``, ``seconds``."""
    return _reloader(request).status()


@router.get("/v1/admin/replication", tags=["admin"])
async def replication_status(engine: Admin, request: Request) -> dict:
    """This replica's view of the replication log (:mod:`kinrec.serving.replication`):
    ``mode`` (notify on PostgreSQL, poll on SQLite, off), whether its listener is connected,
    changes applied, resyncs."""
    replicator = getattr(request.app.state, "replicator", None)
    out = {"origin": engine.origin}
    if replicator is None:
        return {**out, "mode": "off"}
    return {**out, **replicator.status()}
