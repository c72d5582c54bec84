"""The engine's refusals, which the HTTP layer turns into status codes
(:mod:`kinrec.serving.app`): 404, 422 (with the offending field) and 409."""

from __future__ import annotations


class NotFoundError(LookupError):
    """A user or item the service does not know (HTTP 404)."""


class InvalidError(ValueError):
    """A request that names something unusable (HTTP 422), with the offending field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(RuntimeError):
    """A request that contradicts the current state (HTTP 409)."""
