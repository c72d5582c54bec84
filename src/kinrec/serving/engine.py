"""The serving engine: a trained model, the store, the online user state, the catalogue and
the retrieval index, behind plain methods (the HTTP layer is in :mod:`kinrec.serving.app`).

State that must survive a restart is written to the store *before* the in-memory state
changes; at start-up the engine rebuilds everything from the model directory and the store:
the catalogue (with items added since training, re-vectorised by the model), retired items,
erased users and the recent events of every user.

Methods that write to the store come in two halves: ``store_*`` (blocking I/O, safe to run
in a worker thread) and ``apply_*`` (in-memory, fast). Everything in memory is guarded by one
re-entrant lock.

:class:`Engine` is the one object the routes and the tests hold. This module has its
start-up (what it reads, in which order), ``close`` and what it reports about itself; the
rest is one mixin class per seam, each in its own module:

* :mod:`~kinrec.serving.neighbours`: the item indexes (recommendation, cosine neighbours,
  candidate retrieval) and the neighbour lists behind the reasons, built at start-up and
  extended as items are added;
* :mod:`~kinrec.serving.recommend`: candidates and scores (index, retrieval and rescoring,
  or every item), ranking with reserved new-item slots, the response cache, the reasons;
* :mod:`~kinrec.serving.explain`: similar items (per view and blended), explanations and an
  item's knowledge-graph neighbourhood;
* :mod:`~kinrec.serving.users`: online users, their histories, events and erasure;
* :mod:`~kinrec.serving.items`: item lookup and search, adding, updating and retiring items.

Mixins rather than collaborator objects: the seams share one state (model, scorer,
catalogue, indexes, online users, cache) under one lock, and call across each other
(explanations reuse the ranking's scores and reasons, events and items look items up, an
added item extends the indexes); as mixins the methods moved unchanged, every attribute
stays on the engine where routes, tests and benchmarks reach it, and ``self`` stays the
single owner of the state. Each mixin documents the state it owns; everything is set in
:meth:`Engine.__init__`. What serving needs from a model is declared on
:class:`~kinrec.models.base.Recommender` and wrapped by :mod:`~kinrec.serving.foldin`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from kinrec.models.base import Recommender
from kinrec.serving import persist
from kinrec.serving.cache import RecommendationCache
from kinrec.serving.catalog import Catalog
from kinrec.serving.config import ServingConfig
from kinrec.serving.errors import ConflictError, InvalidError, NotFoundError
from kinrec.serving.explain import Explaining
from kinrec.serving.foldin import ModelScorer
from kinrec.serving.items import Items
from kinrec.serving.metrics import Metrics
from kinrec.serving.neighbours import Neighbours
from kinrec.serving.recommend import Recommending
from kinrec.serving.users import OnlineUser, UsersAndEvents
from kinrec.store import Store

__all__ = [
    "ConflictError",
    "Engine",
    "InvalidError",
    "NotFoundError",
    "OnlineUser",
    "dataset_of_model_dir",
]

log = logging.getLogger("kinrec.serving")


def dataset_of_model_dir(model_dir: Path) -> str:
    """The stored dataset a model directory was trained from (its ``split.json``)."""
    path = Path(model_dir) / "split.json"
    if not path.exists():
        raise FileNotFoundError(f"{model_dir}: no split.json naming the dataset; pass --dataset")
    record = json.loads(path.read_text())
    name = record.get("dataset")
    if not name:
        raise ValueError(f"{path}: no 'dataset' entry; pass --dataset")
    return str(name)


class Engine(Neighbours, Recommending, Explaining, UsersAndEvents, Items):
    """Recommendations, similar items, explanations, events, items and erasure."""

    def __init__(
        self,
        model: Recommender,
        store: Store,
        dataset: str,
        config: ServingConfig,
        metrics: Metrics | None = None,
    ) -> None:
        started = time.perf_counter()
        self.origin = uuid.uuid4().hex[:16]  # this engine's name in the replication log
        self.config = config
        self.store = store
        # An embedded SQLite store commits an event in well under a millisecond (the WAL is
        # checkpointed in the background): the event loop writes it itself.
        self.local_store = store.engine.dialect.name == "sqlite"
        self.dataset = dataset
        self.model = model
        self.metrics = metrics or Metrics()
        self.lock = threading.RLock()
        self.cache = RecommendationCache(config.cache_users)
        self.scorer = ModelScorer(model, config.foldin_l2)
        self.n_trained_items = len(model.item_map)
        self.catalog = Catalog(model.item_map.ids(), persist.read_catalog(store, dataset), dataset)
        self.users: dict[str, OnlineUser] = {}
        self._seen_csc = None
        self._training_png: bytes | None = None
        self._alive = np.zeros(0, dtype=bool)
        self._alive_version = -1
        self.erased = set(persist.artifacts(store, persist.erased_namespace(dataset)))
        self._reapply_erasures()  # the model forgets users erased since training
        for item in persist.artifacts(store, persist.retired_namespace(dataset)):
            idx = self._item_index(item)
            if idx is not None:
                self.catalog.retire(idx)
        self.retired_stored = set(persist.artifacts(store, persist.retired_namespace(dataset)))
        self._add_stored_items()
        self._build_index()
        self._build_neighbours()
        restored = self._restore_events()
        self.catalog.warm()  # content views now, not on the first request that needs them
        if self.model.supports_new_items:
            self.model.warm_up()  # the text encoder now, not on the first POST /v1/items
        self._update_gauges()
        self.started_at = time.time()
        log.info(
            "engine ready: model=%s dataset=%s items=%d users=%d fold_in=%s index=%s "
            "events_restored=%d in %.2fs",
            model.name,
            dataset,
            len(self.catalog),
            self.scorer.n_users,
            self.scorer.fold_in,
            self.scoring,
            restored,
            time.perf_counter() - started,
        )

    @classmethod
    def open(cls, config: ServingConfig, model_cls: type[Recommender] = Recommender) -> Engine:
        """Load the model directory and open the store named by ``config``."""
        model = model_cls.load(config.model_dir)
        dataset = config.dataset or dataset_of_model_dir(config.model_dir)
        store = Store(config.db, checkpoint_every=1.0)
        if dataset not in store.dataset_names():
            raise LookupError(f"dataset {dataset!r} is not in {config.db}: ingest it first")
        return cls(model, store, dataset, config)

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ start-up
    def _restore_events(self) -> int:
        events = persist.all_events(self.store, self.dataset)
        self.apply_events(events, count=False)
        return len(events)

    def _update_gauges(self) -> None:
        index = self.index or self.retrieval
        self.metrics.index_items.set(index.size if index else len(self.catalog))
        alive = self.catalog.servable & ~self.catalog.retired
        self.metrics.catalog_items.set(int(alive.sum()))
        self.metrics.online_users.set(len(self.users))

    # ------------------------------------------------------------------ info
    def training_curve(self) -> bytes:
        """The model's training curve as PNG: the model directory's ``training.png``
        (written by ``kinrec train``), else drawn from the per-epoch history in the model's
        ``fit_info``. :class:`NotFoundError` for a model not trained in epochs."""
        if self._training_png is None:
            from kinrec.plots import TRAINING_FILE, training_curve_png

            path = Path(self.config.model_dir) / TRAINING_FILE
            data = path.read_bytes() if path.is_file() else None
            if data is None:
                data = training_curve_png(self.model.fit_info, self.model.name)
            if data is None:
                if self.model.fit_info.get("epochs_run"):
                    raise NotFoundError(
                        f"no training curve: {path.name} is missing and the model's fit_info "
                        "has no per-epoch history (saved by an older kinrec: retrain to draw one)"
                    )
                raise NotFoundError(
                    f"no training curve: {self.model.name} is not trained in epochs"
                )
            self._training_png = data
        return self._training_png

    def info(self) -> dict[str, Any]:
        alive = self.catalog.servable & ~self.catalog.retired
        return {
            "model": self.model.name,
            "dataset": self.dataset,
            "n_items": len(self.catalog),
            "n_recommendable_items": int(alive.sum()),
            "n_trained_users": self.scorer.n_users,
            "n_online_users": len(self.users),
            "fold_in": self.scorer.fold_in,
            "history_prior": self.model.history_prior_strength,
            "graph_lift": self.model.profile_graph_lift,
            "supports_new_items": self.model.supports_new_items,
            "n_new_items": int((self.new_items() & alive).sum()),
            "new_item_slots": self.config.new_item_slots,
            "index": self.scoring,
            "similar_views": [
                v
                for v, ok in (
                    ("cf", True),
                    ("text", self.catalog.has_text()),
                    ("kg", self.catalog.graph() is not None),
                    ("blend", True),
                )
                if ok
            ],
            "text_fields": self.catalog.text_fields,
            "attribute_fields": self.catalog.attribute_fields,
            "views": self.model.fit_info.get("views"),
            "view_reasons": self.model.fit_info.get("view_reasons"),
            "erasure": self.erasure_info(),
            "privacy": self.model.fit_info.get("privacy"),
        }
