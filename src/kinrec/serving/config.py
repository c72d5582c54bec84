"""The service's settings: one typed config, filled from the command line (or by tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""1 MiB: a batch of 1,000 events with long ids, or an item with a long description."""

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 0.3,
    "click": 0.6,
    "like": 1.0,
    "purchase": 1.0,
    "rating": 1.0,  # times the model's weight of the value, or value / rating_scale
}


class ServingConfig(BaseModel):
    """Everything ``kinrec serve`` can be told; defaults suit a laptop demo."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: Path
    db: str = "sqlite:///kinrec.db"
    dataset: str | None = Field(
        None, description="stored dataset name (default: the one named in the model's split.json)"
    )
    insecure_no_auth: bool = Field(False, description="serve without API keys (local demos)")
    hnsw_threshold: int = Field(
        50_000, ge=1, description="catalogue size above which the index is HNSW, not exact"
    )
    scoring: Literal["auto", "exact"] = Field(
        "auto",
        description=(
            "auto: recommendations come from an index above hnsw_threshold (HNSW candidates, "
            "scored exactly where the model is not one dot product); exact: every item is "
            "scored for every request at any size (audits, benchmarks). The similar-items "
            "neighbour index follows hnsw_threshold either way"
        ),
    )
    hnsw_m: int = Field(32, ge=4, le=128)
    index_cache: bool = Field(
        True,
        description=(
            "keep the HNSW indexes built at start-up in <model_dir>/index-cache and read "
            "them back at the next start for the same vectors (minutes at a million items)"
        ),
    )
    hnsw_ef_search: int = Field(128, ge=8, le=4096)
    rescore_candidates: int = Field(
        200,
        ge=1,
        le=100_000,
        description=(
            "for models whose score is not one dot product (kinformer with its linear head), "
            "above hnsw_threshold: items the index retrieves per request, besides k and the "
            "user's history, joined by the model's head candidates and scored exactly"
        ),
    )
    cache_users: int = Field(50_000, ge=0, description="users whose lists are cached (0: off)")
    recent_events: int = Field(500, ge=1, description="events per user kept for the fold-in")
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    rating_scale: float = Field(
        5.0,
        gt=0,
        description=(
            "a rating of this value weighs 1, for models that learned no weight of their "
            "own for a rating (kinformer's linear head learns one from the training ratings)"
        ),
    )
    neighbours: int = Field(30, ge=1, le=500, description="neighbours per item kept for reasons")
    key_refresh_seconds: float = Field(2.0, ge=0.0, description="API keys re-read this often")
    key_last_use_seconds: float = Field(
        60.0,
        ge=0.0,
        description=(
            "a key's last use is written to the store at most this often per key (the "
            "latest use at shutdown); `kinrec keys list` shows it"
        ),
    )
    foldin_l2: float = Field(1.0, gt=0.0, description="ridge weight of the vector fold-in")
    new_item_slots: int = Field(
        0,
        ge=0,
        le=200,
        description=(
            "positions of each list reserved for the best new items (no training "
            "interactions); a request's new_item_slots overrides it (0: one ranking)"
        ),
    )
    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        description="request bodies larger than this get 413 before they are read",
    )
    log_requests: bool = True
    replication: Literal["auto", "off"] = Field(
        "auto",
        description=(
            "auto: apply what other service replicas on the same store commit (events, "
            "items, erasures, keys, reloads): notified on PostgreSQL, polled on SQLite; "
            "off: this process alone serves the store"
        ),
    )
    replication_poll_seconds: float = Field(
        0.25, gt=0.0, description="on SQLite: how often the replication log is read"
    )
    replication_reconnect_seconds: float = Field(
        1.0, gt=0.0, description="on PostgreSQL: wait before listening again after a drop"
    )
    watch_model: bool = Field(
        False,
        description="reload the model when the files of model_dir change (then hold still)",
    )
    watch_seconds: float = Field(2.0, gt=0.0, description="how often model_dir is checked")
    reload_grace_seconds: float = Field(
        10.0, ge=0.0, description="the replaced engine is closed this long after a reload"
    )
    pseudonym_key_file: Path | None = Field(
        None,
        description=(
            "over a pseudonymised store: the file holding its pseudonym key (else "
            "KINREC_PSEUDONYM_KEY); incoming user ids are hashed with it"
        ),
    )
