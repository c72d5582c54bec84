"""Incoming user ids become pseudonyms at the edge of a service over a pseudonymised store.

Clients keep using their own user ids. :class:`PseudonymMiddleware`, the outermost layer of
the application, replaces the id in ``/v1/users/{user_id}...`` paths by its pseudonym before
any other layer sees the request, so routes, the access log, error logs, metrics and the
store only ever hold the pseudonym; :func:`pseudonymise_events` does the same for the
``user_id`` of posted events. Below this module the engine works in the store's ids.
Responses that name a user (recommendations, history, erasure) name them by pseudonym.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.responses import JSONResponse

from kinrec.privacy.pseudonym import Pseudonymiser, serving_pseudonymiser
from kinrec.serving.schemas import ID_PATTERN, MAX_ID

if TYPE_CHECKING:
    from kinrec.serving.config import ServingConfig
    from kinrec.serving.engine import Engine

USERS_PREFIX = "/v1/users/"
_ID = re.compile(ID_PATTERN)


def _invalid(user_id: str) -> str | None:
    """Why the route would refuse ``user_id`` (None: it is a valid id)."""
    if len(user_id) > MAX_ID:
        return f"String should have at most {MAX_ID} characters"
    if not _ID.match(user_id):
        return f"String should match pattern '{ID_PATTERN}'"
    return None


class PseudonymMiddleware:
    """Rewrite ``/v1/users/{user_id}...`` to ``/v1/users/{pseudonym}...`` in the request's
    scope, in place (an invalid id is refused here with 422, as the route would refuse it,
    so that it never travels further either)."""

    def __init__(self, app: Any, pseudonymiser: Pseudonymiser) -> None:
        self.app = app
        self.pseudonymiser = pseudonymiser

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(USERS_PREFIX):
            user_id, sep, rest = path[len(USERS_PREFIX) :].partition("/")
            if user_id:
                problem = _invalid(user_id)
                if problem is not None:
                    field = "path.user_id"
                    body = {
                        "error": f"invalid request: {field}: {problem}",
                        "detail": [{"field": field, "message": problem}],
                    }
                    await JSONResponse(body, status_code=422)(scope, receive, send)
                    return
                new_path = USERS_PREFIX + self.pseudonymiser(user_id) + sep + rest
                scope["path"] = new_path
                scope["raw_path"] = quote(new_path).encode("ascii")
        await self.app(scope, receive, send)


def pseudonymise_events(pseudonymiser: Pseudonymiser | None, rows: Sequence[dict]) -> None:
    """Replace each event row's ``user_id`` by its pseudonym, in place (no-op without one)."""
    if pseudonymiser is None:
        return
    for row in rows:
        if isinstance(row.get("user_id"), str):
            row["user_id"] = pseudonymiser(row["user_id"])


def app_pseudonymiser(
    config: ServingConfig | None, engine: Engine | None, given: Pseudonymiser | None
) -> Pseudonymiser | None:
    """What :func:`~kinrec.serving.app.create_app` applies to incoming user ids: None over a
    store of raw ids; over a pseudonymised store, ``given`` or the key from the config's
    ``pseudonym_key_file`` / ``KINREC_PSEUDONYM_KEY``, checked against the store (a missing
    or wrong key raises :class:`~kinrec.privacy.PseudonymError` before the service starts)."""
    from kinrec.store import Store

    key_file = config.pseudonym_key_file if config is not None else None
    if engine is not None:
        return serving_pseudonymiser(engine.store, key_file, given)
    assert config is not None
    with Store(config.db) as store:
        return serving_pseudonymiser(store, key_file, given)
