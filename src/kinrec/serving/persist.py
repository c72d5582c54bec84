"""What the service reads and writes in the store beyond :class:`~kinrec.store.Store`'s API.

Every write is one transaction, so a crash leaves either all of a change or none of it:
an erasure deletes the user's rows and records the erasure together; a new item writes its
row, texts, attributes and knowledge-graph links together. Service-only state lives in the
``artifacts`` table under ``kinrec.serving/...`` namespaces (retired items, erased users,
API keys), so the store stays the single source of truth and a restart rebuilds everything.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection, delete, func, insert, select

from kinrec.data.dataset import Dataset, empty_frame
from kinrec.store import Event, Store, UnknownDatasetError, changes, read
from kinrec.store import schema as s
from kinrec.store.engine import write_transaction

KEYS_NAMESPACE = "kinrec.serving/keys"


def retired_namespace(dataset: str) -> str:
    return f"kinrec.serving/{dataset}/retired"


def erased_namespace(dataset: str) -> str:
    return f"kinrec.serving/{dataset}/erased"


def user_hash(user_id: str) -> str:
    """How an erased user is remembered: a hash, not the id itself."""
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


def _dataset_id(conn: Connection, name: str) -> int:
    found = conn.execute(select(s.datasets.c.id).where(s.datasets.c.name == name)).scalar()
    if found is None:
        known = list(conn.execute(select(s.datasets.c.name).order_by(s.datasets.c.name)).scalars())
        raise UnknownDatasetError(f"no dataset {name!r} in the store (stored: {known})")
    return int(found)


# ------------------------------------------------------------------------------ artifacts
def artifacts(store: Store, namespace: str) -> dict[str, bytes]:
    """All (key -> data) rows of one artifact namespace."""
    t = s.artifacts
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.c.key, t.c.data).where(t.c.namespace == namespace)).all()
    return {k: bytes(v) for k, v in rows}


def delete_artifact(store: Store, namespace: str, key: str) -> bool:
    """Remove one artifact; True when it existed."""
    t = s.artifacts
    with write_transaction(store.engine) as conn:
        result = conn.execute(delete(t).where(t.c.namespace == namespace, t.c.key == key))
        return bool(result.rowcount)


def _put(conn: Connection, namespace: str, key: str, data: bytes, media_type: str) -> None:
    t = s.artifacts
    conn.execute(delete(t).where(t.c.namespace == namespace, t.c.key == key))
    conn.execute(
        insert(t).values(
            namespace=namespace, key=key, data=data, media_type=media_type, updated_at=time.time()
        )
    )


def put_artifact(
    store: Store,
    namespace: str,
    key: str,
    data: bytes,
    media_type: str,
    change: changes.Pending | None = None,
) -> None:
    """Write one artifact (and ``change`` to the replication log, in the same transaction)."""
    with write_transaction(store.engine) as conn:
        _put(conn, namespace, key, data, media_type)
        if change is not None:
            changes.record(conn, change)


# ------------------------------------------------------------------------------ events
def all_events(store: Store, dataset: str) -> list[Event]:
    """Every stored event of the dataset, oldest (lowest id) first."""
    e = s.events
    cols = ("id", "user_id", "item_id", "type", "value", "timestamp", "received_at")
    with store.engine.connect() as conn:
        did = _dataset_id(conn, dataset)
        rows = conn.execute(
            select(*(e.c[c] for c in cols)).where(e.c.dataset_id == did).order_by(e.c.id)
        ).all()
    return [Event(*row) for row in rows]


def event_ids_present(store: Store, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` are stored (any dataset)."""
    e = s.events
    found: set[int] = set()
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            found.update(
                int(i) for i in conn.execute(select(e.c.id).where(e.c.id.in_(part))).scalars()
            )
    return found


def erase_user(
    store: Store, dataset: str, user_id: str, origin: str | None = None
) -> dict[str, int]:
    """Delete the user's events, interactions, attributes and row, and their batch lists
    (``batch_recommendations``, of every model), and record the erasure (by hash), all in
    one transaction (with, given the writing replica's ``origin``, its entry in the
    replication log). Rows deleted per table."""
    deleted: dict[str, int] = {}
    with write_transaction(store.engine) as conn:
        did = _dataset_id(conn, dataset)
        for table in (s.events, s.interactions, s.user_attributes, s.users):
            result = conn.execute(
                delete(table).where(table.c.dataset_id == did, table.c.user_id == user_id)
            )
            deleted[table.name] = int(result.rowcount)
        lists = s.batch_recommendations
        result = conn.execute(delete(lists).where(lists.c.user == user_id))
        deleted[lists.name] = int(result.rowcount)
        _put(conn, erased_namespace(dataset), user_hash(user_id), b"{}", "application/json")
        if origin is not None:
            digest = {"digest": user_hash(user_id)}
            changes.record(conn, changes.Pending(dataset, "erase", origin, digest))
    return deleted


# ------------------------------------------------------------------------------ catalogue
@dataclass
class StoredCatalog:
    """The dataset's side tables as stored (no interactions)."""

    fields: read.FieldDeclaration
    items: pd.DataFrame
    triples: pd.DataFrame
    links: pd.DataFrame
    entities: set[str]
    relations: set[str]

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> StoredCatalog:
        """The side tables of ``dataset`` as the store would hold them (the inverse of
        :meth:`as_dataset`): a :class:`~kinrec.serving.catalog.Catalog` over data that was
        never stored (the Python API's filters)."""
        item_fields = [(f, "text") for f in dataset.text_fields]
        item_fields += [(f, "attribute") for f in dataset.attribute_fields]
        triples, links = dataset.triples, dataset.links
        entities = {*triples["head"], *triples["tail"], *links["entity_id"]}
        return cls(
            read.FieldDeclaration(
                item=tuple(item_fields),
                user=tuple((f, "attribute") for f in dataset.user_attribute_fields),
                text_template=dataset.text_template,
            ),
            dataset.items,
            triples,
            links,
            {str(e) for e in entities},
            {str(r) for r in triples["relation"]},
        )

    def as_dataset(self, name: str) -> Dataset:
        return Dataset(
            name=name,
            interactions=empty_frame(["user_id", "item_id", "rating", "timestamp"]),
            items=self.items,
            triples=self.triples,
            links=self.links,
            text_fields=self.fields.text_fields,
            attribute_fields=self.fields.attribute_fields,
            text_template=self.fields.text_template,
        )


def read_catalog(store: Store, dataset: str) -> StoredCatalog:
    with store.engine.connect() as conn:
        did = _dataset_id(conn, dataset)
        decl = read.read_fields(conn, did)
        entities = set(
            conn.execute(select(s.entities.c.entity_id).where(s.entities.c.dataset_id == did))
            .scalars()
            .all()
        )
        relations = set(
            conn.execute(select(s.relations.c.relation_id).where(s.relations.c.dataset_id == did))
            .scalars()
            .all()
        )
        return StoredCatalog(
            decl,
            read.read_items(conn, did, decl),
            read.read_triples(conn, did),
            read.read_links(conn, did),
            entities,
            relations,
        )


def write_item(
    store: Store,
    dataset: str,
    item_id: str,
    texts: Mapping[str, str],
    attributes: Mapping[str, Sequence[str]],
    entity_id: str | None = None,
    triples: Iterable[tuple[str, str]] = (),
    *,
    create: bool,
    origin: str | None = None,
) -> None:
    """Insert (``create``) or update an item: its row, the given text and attribute fields
    (replacing those fields), and its knowledge-graph entity and ``(relation, tail)`` triples.
    Given the writing replica's ``origin``, the write goes to the replication log too.

    Raises ``KeyError`` when creating an existing item or updating a missing one.
    """
    triples = list(triples)
    with write_transaction(store.engine) as conn:
        did = _dataset_id(conn, dataset)
        exists = conn.execute(
            select(func.count())
            .select_from(s.items)
            .where(s.items.c.dataset_id == did, s.items.c.item_id == item_id)
        ).scalar_one()
        if create and exists:
            raise KeyError(f"item {item_id!r} already exists")
        if not create and not exists:
            raise KeyError(f"unknown item {item_id!r}")
        if create:
            position = read.max_position(conn, s.items, did)
            conn.execute(insert(s.items).values(dataset_id=did, item_id=item_id, position=position))
        for field, value in texts.items():
            t = s.item_texts
            conn.execute(
                delete(t).where(t.c.dataset_id == did, t.c.item_id == item_id, t.c.field == field)
            )
            conn.execute(
                insert(t).values(dataset_id=did, item_id=item_id, field=field, value=value)
            )
        for field, tokens in attributes.items():
            t = s.item_attributes
            conn.execute(
                delete(t).where(t.c.dataset_id == did, t.c.item_id == item_id, t.c.field == field)
            )
            for idx, token in enumerate(tokens):
                conn.execute(
                    insert(t).values(
                        dataset_id=did, item_id=item_id, field=field, idx=idx, value=token
                    )
                )
        if entity_id is not None:
            _write_links(conn, did, item_id, entity_id, triples)
        if origin is not None:
            data = {
                "item_id": item_id,
                "texts": dict(texts),
                "attributes": {k: list(v) for k, v in attributes.items()},
                "entity_id": entity_id,
                "links": [list(t) for t in triples],
                "create": create,
            }
            changes.record(conn, changes.Pending(dataset, "item", origin, data))


def _write_links(
    conn: Connection, did: int, item_id: str, entity_id: str, triples: list[tuple[str, str]]
) -> None:
    """The item's entity, its link, and its outgoing triples (replacing earlier ones)."""
    ent, lnk, tri = s.entities, s.links, s.triples
    has_entity = conn.execute(
        select(func.count())
        .select_from(ent)
        .where(ent.c.dataset_id == did, ent.c.entity_id == entity_id)
    ).scalar_one()
    if not has_entity:
        conn.execute(insert(ent).values(dataset_id=did, entity_id=entity_id, name=item_id))
    conn.execute(delete(lnk).where(lnk.c.dataset_id == did, lnk.c.item_id == item_id))
    conn.execute(
        insert(lnk).values(
            dataset_id=did,
            item_id=item_id,
            entity_id=entity_id,
            position=read.max_position(conn, lnk, did),
        )
    )
    conn.execute(delete(tri).where(tri.c.dataset_id == did, tri.c.head == entity_id))
    position = read.max_position(conn, tri, did)
    for offset, (relation, tail) in enumerate(dict.fromkeys(triples)):
        conn.execute(
            insert(tri).values(
                dataset_id=did,
                head=entity_id,
                relation=relation,
                tail=tail,
                position=position + offset,
            )
        )
