"""Request and response bodies of the HTTP API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

EventType = Literal["view", "click", "like", "rating", "purchase"]  # = store.schema.EVENT_TYPES

# printable, at least one non-space character
ID_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00\x7f]*$"
MAX_ID = 256


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 text (lone surrogate)") from None
    return value


Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN),
    AfterValidator(_utf8),
]
Text = Annotated[
    str, StringConstraints(max_length=10_000, pattern=TEXT_PATTERN), AfterValidator(_utf8)
]
Token = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN),
    AfterValidator(_utf8),
]
FieldName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=ID_PATTERN), AfterValidator(_utf8)
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EventIn(_In):
    """One user event."""

    user_id: Identifier
    item_id: Identifier
    type: EventType
    value: float | None = Field(None, ge=-1e9, le=1e9, description="e.g. the rating")
    timestamp: float | None = Field(
        None, ge=0, le=4_102_444_800, description="epoch seconds (default: now)"
    )


class EventBatch(_In):
    """Several events, stored in one transaction."""

    events: list[EventIn] = Field(min_length=1, max_length=1000)


class EventsAccepted(BaseModel):
    ids: list[int]
    accepted: int


class LinkIn(_In):
    """A knowledge-graph edge from the item's entity to an existing entity."""

    relation: Identifier
    entity_id: Identifier


class ItemPatch(_In):
    """Fields to change (each given field replaces the stored one)."""

    text: dict[FieldName, Text] = Field(default_factory=dict, max_length=50)
    attributes: dict[FieldName, list[Token]] = Field(default_factory=dict, max_length=50)
    entity_id: Identifier | None = Field(None, description="the item's knowledge-graph entity")
    links: list[LinkIn] = Field(default_factory=list, max_length=200)


class ItemIn(ItemPatch):
    """A new item: its id, text fields, attributes and optional knowledge-graph links."""

    item_id: Identifier


class ItemOut(BaseModel):
    item_id: str
    title: str | None
    text: dict[str, str]
    attributes: dict[str, list[str]]
    entity_id: str | None
    retired: bool
    recommendable: bool


class ItemBrief(BaseModel):
    item_id: str
    title: str | None


class RecommendedItem(BaseModel):
    item_id: str
    title: str | None
    score: float
    reason: str
    new: bool = Field(description="a new item: no interaction in the model's training data")


class RecommendationList(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    cold_start: bool = Field(description="no history: the most popular items")
    source: Literal["exact", "index", "popular"]


class SimilarItem(BaseModel):
    item_id: str
    title: str | None
    score: float


class SimilarList(BaseModel):
    item_id: str
    by: Literal["cf", "text", "kg", "blend"]
    items: list[SimilarItem]


class GraphEdge(BaseModel):
    relation: str
    direction: Literal["out", "in"] = Field(
        description="out: item -relation-> entity; in: entity -relation-> item"
    )
    entity: str
    item_id: str | None = Field(None, description="set when the entity is itself an item")
    title: str | None = Field(None, description="that item's title")
    n_items: int = Field(description="other items linked to the entity")
    items: list[ItemBrief] = Field(description="a few of those items")


class ItemGraph(BaseModel):
    item_id: str
    title: str | None
    graph: bool = Field(description="the catalogue has a knowledge graph")
    n_edges: int = Field(description="the item's edges in the graph (``edges`` lists the first)")
    edges: list[GraphEdge]


class LikedItem(BaseModel):
    item_id: str
    title: str | None
    similarity: float


class PathStep(BaseModel):
    head: str
    relation: str
    tail: str


class KGPath(BaseModel):
    from_item_id: str
    from_title: str | None
    steps: list[PathStep]


class Explanation(BaseModel):
    user_id: str
    item_id: str
    title: str | None
    score: float | None
    reason: str
    similar_liked_items: list[LikedItem]
    kg_paths: list[KGPath]


class HistoryEvent(BaseModel):
    id: int
    item_id: str
    title: str | None
    type: str
    value: float | None
    timestamp: float


class History(BaseModel):
    user_id: str
    known: bool
    trained_items: list[ItemBrief]
    n_trained_items: int
    events: list[HistoryEvent]


class UserList(BaseModel):
    users: list[str]


class ItemList(BaseModel):
    items: list[ItemBrief]


class ModelErasure(BaseModel):
    trained: bool = Field(description="whether the served model was trained on the user")
    exact: list[str] = Field(
        description="the model's parts updated exactly: as if trained without the user"
    )
    pending: list[str] = Field(
        description="the parts that still depend on the user until `kinrec retrain`"
    )
    seconds: float = Field(description="how long the model's update took")
    error: str | None = Field(None, description="why the model could not be updated")


class Erasure(BaseModel):
    user_id: str
    deleted: dict[str, int]
    model: ModelErasure


class ErasureInfo(BaseModel):
    exact_parts: list[str] = Field(description="the parts an erasure updates exactly")
    stale_parts: list[str] = Field(
        description="the parts that still depend on erased users (until `kinrec retrain`)"
    )
    n_forgotten: int = Field(description="trained users the model has forgotten exactly")
    n_pending: int = Field(description="erased users the stale parts still depend on")
    pending: list[str] = Field(
        description="those users as sha256:<digest> of their stored id (at most 1000)"
    )


class Info(BaseModel):
    model: str
    dataset: str
    n_items: int
    n_recommendable_items: int
    n_trained_users: int
    n_online_users: int
    fold_in: str
    history_prior: float = Field(
        description="c: a history of n events leans c / (c + n) on popularity (0: never)"
    )
    graph_lift: float = Field(
        0.0,
        description="a new user's history lifts its items' knowledge-graph neighbours by up "
        "to this much, in the model's score units (0: no lift)",
    )
    supports_new_items: bool
    n_new_items: int = Field(description="recommendable items without training interactions")
    new_item_slots: int = Field(description="positions of each list reserved for new items")
    index: str
    similar_views: list[str]
    text_fields: list[str]
    attribute_fields: list[str]
    views: dict[str, bool] | None = Field(
        None, description="the item views the model uses (kinformer: id, text, kg)"
    )
    view_reasons: dict[str, str] | None = Field(
        None, description="why each view is on or off (from the data, or a setting)"
    )
    privacy: dict[str, Any] | None = Field(
        None,
        description="the differential-privacy accounting of a model trained with "
        "dp_epsilon (mechanisms, composition, epsilon, delta, clipping); null: not private",
    )
    erasure: ErasureInfo | None = Field(
        None, description="erasures applied to the model, and those waiting for a retrain"
    )
    auth: bool


class Health(BaseModel):
    status: str


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    detail: list[ErrorDetail] = Field(default_factory=list)
