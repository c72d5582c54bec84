"""The database schema, in SQLAlchemy Core: portable between SQLite and PostgreSQL.

Every dataset table is keyed by ``dataset_id`` (one database holds several datasets) and by the
dataset's own external string ids, so that ingestion is idempotent: a row whose key is already
stored is not written again. ``position`` columns keep the input's row order for round trips
(they are not part of any key).

* ``datasets``: one row per dataset name; ``fields`` declares its item and user fields;
  ``dataset_settings`` holds its options as (key, value), e.g. its ``text_template`` (a table
  of its own, so that stores made before it gain it on first use).
* ``users`` / ``user_attributes``: the user table, one attribute value per (user, field).
* ``items`` / ``item_texts`` / ``item_attributes``: the item table; a multi-valued attribute is
  one row per token (``idx`` keeps the token order).
* ``interactions``: keyed by ``seq``, the row's position in the dataset's interaction table
  (interactions may repeat a (user, item) pair and may lack timestamps, so there is no natural
  key). They may name users and items absent from the user and item tables, as in RecBole.
* ``entities``, ``relations``, ``triples`` (a set: unique head, relation, tail) and ``links``
  (item -> entity; items must be in the item table: ingestion adds a row without fields for
  an item known only from the links, as such an item belongs to the catalogue).
* ``events``: the real-time log (autoincrement id), for the serving layer.
* ``embeddings``: a text-embedding cache keyed by (model, adapter, text hash) -> float32 blob;
  ``artifacts``: a small key-value table (namespace, key) -> bytes. Neither is per dataset:
  both are content caches that datasets can share.
* ``audit_log``: append-only record of administrative actions (API keys created or revoked,
  items added, changed or retired, users erased): when, who (an API key id, or ``cli``), what
  and on what. Not per dataset. Written by :func:`kinrec.serving.audit.record`; a table of its
  own, so that stores made before it gain it on first use.
* ``changes``: the replication log (autoincrement id) of what service replicas sharing the
  store must apply to their memory: event batches (by event id), item writes, retirements,
  erasures (by digest), key changes, model reloads (:mod:`kinrec.store.changes`). Pruned
  after an hour; a table of its own, so that stores made before it gain it on first use.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 1

EVENT_TYPES = ("view", "click", "like", "rating", "purchase")
FIELD_KINDS = ("text", "attribute")
FIELD_ENTITIES = ("item", "user")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _dataset_fk() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE")


meta = Table(
    "kinrec_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

fields = Table(
    "fields",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("entity", String(8), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("position", Integer, nullable=False),
    _dataset_fk(),
    CheckConstraint(_in("entity", FIELD_ENTITIES), name="entity"),
    CheckConstraint(_in("kind", FIELD_KINDS), name="kind"),
)

dataset_settings = Table(
    "dataset_settings",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    _dataset_fk(),
)

users = Table(
    "users",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("user_id", String, primary_key=True),
    Column("position", BigInteger, nullable=False),
    _dataset_fk(),
)

user_attributes = Table(
    "user_attributes",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("user_id", String, primary_key=True),
    Column("field", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    ForeignKeyConstraint(
        ["dataset_id", "user_id"], ["users.dataset_id", "users.user_id"], ondelete="CASCADE"
    ),
)

items = Table(
    "items",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("item_id", String, primary_key=True),
    Column("position", BigInteger, nullable=False),
    _dataset_fk(),
)

item_texts = Table(
    "item_texts",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("item_id", String, primary_key=True),
    Column("field", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    ForeignKeyConstraint(
        ["dataset_id", "item_id"], ["items.dataset_id", "items.item_id"], ondelete="CASCADE"
    ),
)

item_attributes = Table(
    "item_attributes",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("item_id", String, primary_key=True),
    Column("field", String(200), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("value", Text, nullable=False),
    ForeignKeyConstraint(
        ["dataset_id", "item_id"], ["items.dataset_id", "items.item_id"], ondelete="CASCADE"
    ),
)

interactions = Table(
    "interactions",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("user_id", String, nullable=False),
    Column("item_id", String, nullable=False),
    Column("rating", Double, nullable=True),
    Column("timestamp", Double, nullable=True),
    _dataset_fk(),
    Index(None, "dataset_id", "user_id"),
)

entities = Table(
    "entities",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("entity_id", String, primary_key=True),
    Column("name", Text, nullable=True),
    _dataset_fk(),
)

relations = Table(
    "relations",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("relation_id", String, primary_key=True),
    _dataset_fk(),
)

triples = Table(
    "triples",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("head", String, primary_key=True),
    Column("relation", String, primary_key=True),
    Column("tail", String, primary_key=True),
    Column("position", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["dataset_id", "head"], ["entities.dataset_id", "entities.entity_id"], ondelete="CASCADE"
    ),
    ForeignKeyConstraint(
        ["dataset_id", "tail"], ["entities.dataset_id", "entities.entity_id"], ondelete="CASCADE"
    ),
    ForeignKeyConstraint(
        ["dataset_id", "relation"],
        ["relations.dataset_id", "relations.relation_id"],
        ondelete="CASCADE",
    ),
)

links = Table(
    "links",
    metadata,
    Column("dataset_id", Integer, primary_key=True),
    Column("item_id", String, primary_key=True),
    Column("entity_id", String, primary_key=True),
    Column("position", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["dataset_id", "item_id"], ["items.dataset_id", "items.item_id"], ondelete="CASCADE"
    ),
    ForeignKeyConstraint(
        ["dataset_id", "entity_id"],
        ["entities.dataset_id", "entities.entity_id"],
        ondelete="CASCADE",
    ),
)

events = Table(
    "events",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("dataset_id", Integer, nullable=False),
    Column("user_id", String, nullable=False),
    Column("item_id", String, nullable=False),
    Column("type", String(16), nullable=False),
    Column("value", Double, nullable=True),
    Column("timestamp", Double, nullable=False),  # when it happened (epoch seconds, UTC)
    Column("received_at", Double, nullable=False),  # when the store got it
    _dataset_fk(),
    CheckConstraint(_in("type", EVENT_TYPES), name="type"),
    Index(None, "dataset_id", "user_id", "id"),
)

embeddings = Table(
    "embeddings",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("adapter", String(200), primary_key=True),  # "" for the bare model
    Column("text_hash", String(64), primary_key=True),  # sha256 hex of the text
    Column("dim", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # little-endian float32, dim values
    Column("created_at", Double, nullable=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("namespace", String(200), primary_key=True),
    Column("key", String(500), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("media_type", String(100), nullable=False),
    Column("updated_at", Double, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),  # epoch seconds, UTC
    Column("actor", String(64), nullable=False),  # an API key id, "cli", or "insecure-no-auth"
    Column("action", String(64), nullable=False),  # e.g. "key.create", "user.erase"
    Column("target_kind", String(16), nullable=False),  # key, item, user
    Column("target", Text, nullable=False),  # a user is recorded as a digest, never the id
    Column("detail", Text, nullable=False),  # a JSON object; never a secret
    Index(None, "at"),
)

changes = Table(
    "changes",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),  # epoch seconds, UTC
    Column("dataset", String(200), nullable=True),  # None: every dataset (keys, ...)
    Column("kind", String(16), nullable=False),  # events, item, retire, erase, keys, reload
    Column("origin", String(64), nullable=False),  # the writing replica (or "cli")
    Column("data", Text, nullable=False),  # a JSON object; never a user id or a secret
    Index(None, "at"),
)

batch_recommendations = Table(
    "batch_recommendations",
    metadata,
    Column("model", Text, primary_key=True),  # the model folder's name
    Column("user", Text, primary_key=True),  # as stored (a pseudonym where users are)
    Column("rank", Integer, primary_key=True),  # 1 = best
    Column("item", Text, nullable=False),
    Column("score", Double, nullable=False),
    Column("created", Double, nullable=False),  # epoch seconds, UTC
)
"""``kinrec recommend --all-users --out URL``'s lists (:mod:`kinrec.distributed.batch`);
erasing a user deletes their rows of every model's lists."""

# Dataset tables in dependency order (parents first): the order of ingestion and the reverse
# order of deletion.
DATASET_TABLES = (
    fields,
    dataset_settings,
    users,
    user_attributes,
    items,
    item_texts,
    item_attributes,
    entities,
    relations,
    triples,
    links,
    interactions,
    events,
)

__all__ = [
    "DATASET_TABLES",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "artifacts",
    "audit_log",
    "batch_recommendations",
    "changes",
    "dataset_settings",
    "datasets",
    "embeddings",
    "entities",
    "events",
    "fields",
    "interactions",
    "item_attributes",
    "item_texts",
    "items",
    "links",
    "meta",
    "metadata",
    "relations",
    "triples",
    "user_attributes",
    "users",
]
