"""Items: lookup and search, validating, storing and applying item writes (an item the model
can vectorise gets a vector and joins the indexes), and retiring items (:class:`Items`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kinrec.data.errors import DataError
from kinrec.serving import persist
from kinrec.serving.errors import ConflictError, InvalidError, NotFoundError
from kinrec.store import changes

log = logging.getLogger("kinrec.serving")


class Items:
    """Items, mixed into :class:`~kinrec.serving.engine.Engine`.

    ``n_trained_items``: how many items the model was trained on (later ones were added);
    ``retired_stored``: the ids of retired items, including stored items the model lacks.
    """

    n_trained_items: int
    retired_stored: set[str]
    origin: str  # this engine's name in the replication log

    # ------------------------------------------------------------------ lookups
    def _item_index(self, item_id: str) -> int | None:
        item_map = self.model.item_map
        return item_map.index(item_id) if item_id in item_map else None

    def _require_item(self, item_id: str) -> int:
        idx = self._item_index(item_id)
        if idx is None:
            raise NotFoundError(f"unknown item {item_id!r}")
        return idx

    # ------------------------------------------------------------------ start-up
    def _add_stored_items(self) -> None:
        """Stored items the model was not trained on: vectorise them if the model can."""
        missing = self.catalog.stored_only(set(self.catalog.ids))
        if missing and self.model.supports_new_items:
            self._model_add_items(missing)
        elif missing:
            log.info("%d stored items are not in the model (it cannot add items)", len(missing))

    def _model_add_items(self, item_ids: Sequence[str]) -> list[str]:
        before = len(self.model.item_map)
        self.model.add_items(list(item_ids), self.catalog.side(item_ids))
        added = self.model.item_map.ids(range(before, len(self.model.item_map)))
        self.catalog.extend(added)
        self.scorer.refresh()
        return added

    # ------------------------------------------------------------------ items
    def item(self, item_id: str) -> dict[str, Any]:
        with self.lock:
            idx = self._item_index(item_id)
            if idx is not None:
                return self.catalog.describe(idx)
            info = self.catalog.info.get(item_id)
            if info is None:
                raise NotFoundError(f"unknown item {item_id!r}")
            return {
                "item_id": item_id,
                "title": self.catalog.title(item_id),
                "text": dict(info.texts),
                "attributes": {k: list(v) for k, v in info.attributes.items()},
                "entity_id": info.entity_id,
                "retired": item_id in self.retired_stored,
                "recommendable": False,
            }

    def search_items(self, query: str = "", limit: int = 20) -> list[dict[str, Any]]:
        q = query.casefold()
        out = []
        with self.lock:
            for idx, item in enumerate(self.catalog.ids):
                if self.catalog.retired[idx]:
                    continue
                title = self.catalog.title(item) or ""
                if not q or q in title.casefold() or q == item.casefold():
                    out.append({"item_id": item, "title": title or None})
                    if len(out) >= limit:
                        break
        return out

    def check_item(
        self,
        item_id: str,
        texts: Mapping[str, str],
        attributes: Mapping[str, Sequence[str]],
        entity_id: str | None,
        links: Sequence[tuple[str, str]],
        create: bool,
    ) -> str | None:
        """Validate an item write; returns the entity id to write (None: no graph change)."""
        with self.lock:
            exists = item_id in self.catalog.info or self._item_index(item_id) is not None
            if create and exists:
                raise ConflictError(f"item {item_id!r} already exists (use PATCH to update it)")
            if not create and not exists:
                raise NotFoundError(f"unknown item {item_id!r}")
            for name in texts:
                if name not in self.catalog.text_fields:
                    known = ", ".join(self.catalog.text_fields) or "none"
                    raise InvalidError(
                        f"unknown text field {name!r} (declared: {known})", f"text.{name}"
                    )
            for name in attributes:
                if name not in self.catalog.attribute_fields:
                    known = ", ".join(self.catalog.attribute_fields) or "none"
                    raise InvalidError(
                        f"unknown attribute field {name!r} (declared: {known})",
                        f"attributes.{name}",
                    )
            current = self.catalog.info.get(item_id)
            entity = entity_id or (current.entity_id if current else None)
            if entity is None and links:
                entity = f"item:{item_id}"
            if entity is None:
                return None
            owner = self.catalog.links[self.catalog.links["entity_id"] == entity]["item_id"]
            if len(owner) and set(owner) != {item_id}:
                raise InvalidError(
                    f"entity {entity!r} is already linked to item {owner.iloc[0]!r}", "entity_id"
                )
            for i, (relation, tail) in enumerate(links):
                if relation not in self.catalog.relations:
                    raise InvalidError(f"unknown relation {relation!r}", f"links[{i}].relation")
                if tail not in self.catalog.entities:
                    raise InvalidError(f"unknown entity {tail!r}", f"links[{i}].entity_id")
            return entity

    def store_item(
        self,
        item_id: str,
        texts: Mapping[str, str],
        attributes: Mapping[str, Sequence[str]],
        entity_id: str | None,
        links: Sequence[tuple[str, str]],
        create: bool,
    ) -> None:
        try:
            persist.write_item(
                self.store,
                self.dataset,
                item_id,
                texts,
                attributes,
                entity_id,
                links,
                create=create,
                origin=self.origin,
            )
        except KeyError as exc:
            raise ConflictError(str(exc.args[0])) from None
        except DataError as exc:
            raise InvalidError(str(exc), exc.field or "item_id") from None

    def apply_item(
        self,
        item_id: str,
        texts: Mapping[str, str],
        attributes: Mapping[str, Sequence[str]],
        entity_id: str | None,
        links: Sequence[tuple[str, str]],
        create: bool,
    ) -> dict[str, Any]:
        """Update the catalogue and, for a model with content views, the item's vector."""
        with self.lock:
            self.catalog.upsert(item_id, texts, attributes, entity_id, links)
            idx = self._item_index(item_id)
            if self.model.supports_new_items and (idx is None or idx >= self.n_trained_items):
                try:
                    if idx is None:
                        self._model_add_items([item_id])
                    else:
                        self.model.add_items([item_id], self.catalog.side([item_id]))
                        self.scorer.refresh()
                        if self.index is not None:
                            self.index.rebuild(self.scorer.index_vectors())
                        if self.cos_index is not None:
                            self.cos_index.rebuild(self.scorer.item_vectors)
                        if self.retrieval is not None:
                            self._refresh_retrieval_row(idx)
                except Exception:
                    log.exception("the model could not add item %r", item_id)
                self._sync_index()
            self.cache.clear()
            self._update_gauges()
            return self.item(item_id)

    # ------------------------------------------------------------------ retiring
    def store_retire(self, item_id: str) -> None:
        with self.lock:
            if self._item_index(item_id) is None and item_id not in self.catalog.info:
                raise NotFoundError(f"unknown item {item_id!r}")
        change = changes.Pending(self.dataset, "retire", self.origin, {"item_id": item_id})
        persist.put_artifact(
            self.store,
            persist.retired_namespace(self.dataset),
            item_id,
            b"{}",
            "application/json",
            change,
        )

    def apply_retire(self, item_id: str) -> None:
        with self.lock:
            self.retired_stored.add(item_id)
            idx = self._item_index(item_id)
            if idx is not None:
                self.catalog.retire(idx)
            self.cache.clear()
            self._update_gauges()
