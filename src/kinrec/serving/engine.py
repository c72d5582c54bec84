"""The serving engine: a trained model, the store, the online user state, the catalogue and
the retrieval index, behind plain methods (the HTTP layer is in :mod:`kinrec.serving.app`).

State that must survive a restart is written to the store *before* the in-memory state
changes; at start-up the engine rebuilds everything from the model directory and the store:
the catalogue (with items added since training, re-vectorised by the model), retired items,
erased users and the recent events of every user.

Methods that write to the store come in two halves: ``store_*`` (blocking I/O, safe to run
in a worker thread) and ``apply_*`` (in-memory, fast). Everything in memory is guarded by one
re-entrant lock.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kinrec.data.errors import DataError
from kinrec.models.base import Recommender
from kinrec.serving import persist
from kinrec.serving.cache import RecommendationCache
from kinrec.serving.catalog import Catalog
from kinrec.serving.config import ServingConfig
from kinrec.serving.foldin import ModelScorer
from kinrec.serving.index import ItemIndex
from kinrec.serving.metrics import Metrics
from kinrec.serving.ranking import top_k, top_with_reserved
from kinrec.store import Event, Store

log = logging.getLogger("kinrec.serving")

VERBS = {"view": "viewed", "click": "clicked", "like": "liked", "rating": "rated"}
VERBS["purchase"] = "bought"
SIMILAR_VIEWS = ("cf", "text", "kg", "blend")
NEIGHBOURS_NAMESPACE = "kinrec.serving/neighbours"  # key: model manifest digest, width


class NotFoundError(LookupError):
    """A user or item the service does not know (HTTP 404)."""


class InvalidError(ValueError):
    """A request that names something unusable (HTTP 422), with the offending field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(RuntimeError):
    """A request that contradicts the current state (HTTP 409)."""


@dataclass
class OnlineUser:
    """A user's events since training (the most recent ``maxlen``), newest last."""

    events: deque[tuple[int, int, str, float | None, float]]
    _arrays: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, event_id: int, item: int, kind: str, value: float | None, ts: float) -> None:
        self.events.append((event_id, item, kind, value, ts))
        self._arrays = None

    def arrays(self, weight_of) -> tuple[np.ndarray, np.ndarray]:
        """Event items (unique) and their weights (an item's largest)."""
        if self._arrays is None:
            best: dict[int, float] = {}
            for _, item, kind, value, _ in self.events:
                w = weight_of(kind, value)
                if w > best.get(item, -1.0):
                    best[item] = w
            items = np.fromiter(best.keys(), dtype=np.int64, count=len(best))
            weights = np.fromiter(best.values(), dtype=np.float32, count=len(best))
            self._arrays = (items, weights)
        return self._arrays


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


class Engine:
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

    def _build_index(self) -> None:
        vectors = self.scorer.item_vectors
        self.index: ItemIndex | None = None
        self.cos_index: ItemIndex | None = None
        self.retrieval: ItemIndex | None = None
        options = {
            "hnsw_threshold": self.config.hnsw_threshold,
            "hnsw_m": self.config.hnsw_m,
            "ef_search": self.config.hnsw_ef_search,
        }
        cache = Path(self.config.model_dir) / "index-cache" if self.config.index_cache else None
        exact = self.config.scoring == "exact"
        big = len(self.catalog) > self.config.hnsw_threshold
        if big and not exact and self.scorer.retrieves:
            # not one dot product: candidates from an index over the model's tower (and its
            # head), scored exactly; below the threshold every item is scored exactly
            self.retrieval = ItemIndex(
                self.scorer.retrieval_rows(), **options, cache_dir=cache, name="retrieval"
            )
        if vectors is None:
            return
        if self.scorer.dot_model or self.scorer.fold_in == "vector":
            # scoring = exact: a flat index, which scores every item
            recommend = {**options, "hnsw_threshold": 2**62} if exact else options
            self.index = ItemIndex(
                self.scorer.index_vectors(), **recommend, cache_dir=cache, name="recommend"
            )
        # similar items and the reasons' neighbour lists: HNSW above the threshold whatever
        # the scoring (the all-pairs flat search is quadratic in the catalogue)
        self.cos_index = ItemIndex(
            vectors, cosine=True, **options, cache_dir=cache, name="neighbours"
        )

    @property
    def scoring(self) -> str:
        """How recommendations are scored: ``exact`` (every item), the kind of the index a
        dot-product model is searched with (``flat``, ``hnsw``), or ``hnsw+rescore`` (index
        candidates of a model's tower and head, scored exactly by the model)."""
        if self.index is not None:
            return self.index.kind
        if self.retrieval is not None:
            return f"{self.retrieval.kind}+rescore"
        return "exact"

    def _build_neighbours(self) -> None:
        """Top neighbours of every item, for the "because you liked X" reasons.

        From item vectors when the model has them; otherwise item-item cosine over the
        training matrix, computed once per trained model and cached in the store.
        """
        m = self.config.neighbours
        n = len(self.catalog)
        if self.cos_index is not None:
            ids, sims = self.cos_index.nearest_to_each(self.scorer.item_vectors, m + 1)
            self.nb_ids, self.nb_sims = _drop_self(ids, sims, m)
            return
        key = self._neighbour_cache_key(m)
        cached = self.store.get_artifact(NEIGHBOURS_NAMESPACE, key) if key else None
        if cached is not None:
            with np.load(io.BytesIO(cached)) as data:
                self.nb_ids, self.nb_sims = data["ids"], data["sims"]
            if len(self.nb_ids) == n:
                return
        from kinrec.models.itemknn import cosine_topk

        seen = self.model.seen
        w = cosine_topk(seen, min(m, max(seen.shape[1] - 1, 1))).tocsc()
        self.nb_ids = np.full((n, m), -1, dtype=np.int64)
        self.nb_sims = np.zeros((n, m), dtype=np.float32)
        for i in range(min(n, w.shape[1])):
            lo, hi = w.indptr[i], w.indptr[i + 1]
            self.nb_ids[i, : hi - lo] = w.indices[lo:hi]
            self.nb_sims[i, : hi - lo] = w.data[lo:hi]
        if key:
            buffer = io.BytesIO()
            np.savez(buffer, ids=self.nb_ids, sims=self.nb_sims)
            self.store.put_artifact(NEIGHBOURS_NAMESPACE, key, buffer.getvalue())

    def _neighbour_cache_key(self, m: int) -> str | None:
        manifest = Path(self.config.model_dir) / "manifest.json"
        if not manifest.exists():
            return None
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:32]
        return f"{digest}:{m}"

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

    # ------------------------------------------------------------------ lookups
    def _item_index(self, item_id: str) -> int | None:
        item_map = self.model.item_map
        return item_map.index(item_id) if item_id in item_map else None

    def _require_item(self, item_id: str) -> int:
        idx = self._item_index(item_id)
        if idx is None:
            raise NotFoundError(f"unknown item {item_id!r}")
        return idx

    def _trained_user(self, user_id: str) -> int | None:
        """The model's index of a user it was trained on (None: new, or erased since)."""
        user_map = self.model.user_map
        if user_id not in user_map:
            return None
        if self.erased and persist.user_hash(user_id) in self.erased:
            return None
        return user_map.index(user_id)

    def _train_items(self, user: int | None) -> np.ndarray:
        if user is None:
            return np.zeros(0, dtype=np.int64)
        seen = self.model.seen
        return seen.indices[seen.indptr[user] : seen.indptr[user + 1]].astype(np.int64)

    def weight_of(self, kind: str, value: float | None) -> float:
        weight = self.config.event_weights.get(kind, 1.0)
        if kind == "rating" and value is not None:
            learned = self.model.rating_weight(value)
            if learned is None:
                learned = min(max(value / self.config.rating_scale, 0.05), 1.0)
            weight *= learned
        return float(weight)

    def _history(self, user_id: str) -> tuple[int | None, np.ndarray, np.ndarray, np.ndarray]:
        user = self._trained_user(user_id)
        online = self.users.get(user_id)
        if online is None:
            empty = np.zeros(0, dtype=np.int64)
            return user, self._train_items(user), empty, np.zeros(0, dtype=np.float32)
        items, weights = online.arrays(self.weight_of)
        return user, self._train_items(user), items, weights

    # ------------------------------------------------------------------ recommendations
    def _allowed(self, category: str | None) -> np.ndarray:
        """Recommendable items (servable, not retired, in the category); do not modify."""
        catalog = self.catalog
        if self._alive_version != catalog.version or len(self._alive) != len(catalog):
            self._alive = catalog.servable & ~catalog.retired
            self._alive_version = catalog.version
        if not category:
            return self._alive
        try:
            return self._alive & catalog.category_mask(category)
        except ValueError as exc:
            raise InvalidError(str(exc), "category") from None

    def _scores(
        self,
        user: int | None,
        train: np.ndarray,
        items: np.ndarray,
        weights: np.ndarray,
        allowed: np.ndarray,
        k: int,
        include: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Candidate item indices, their scores and how they were found; an index search's
        candidates are joined by the allowed items of ``include`` (reserved new items)."""
        scorer = self.scorer
        query = search = None
        if self.index is not None:
            if user is not None and not len(items) and scorer.dot_model:
                query = scorer.user_vectors[user]
                search = scorer.index_query(query, with_bias=True)
            elif scorer.fold_in == "vector" and (len(items) or len(train)):
                query = scorer.query(user, train, items, weights)
                if query is not None:
                    search = scorer.index_query(query, with_bias=False)
        if query is not None:
            n_allowed = int(allowed.sum())
            want = k + len(train) + len(items) + 32
            if n_allowed < len(allowed):
                want = int(want * len(allowed) / max(n_allowed, 1))
            cand, _ = self.index.search(search, want)
            cand = cand[allowed[cand]]
            if include is not None:
                cand = np.union1d(cand, include[allowed[include]])
            if len(cand) >= min(k, n_allowed):
                if user is not None and not len(items):
                    return cand, scorer.known_scores(user, cand), "index"
                return cand, scorer.item_vectors[cand] @ query, "index"
        if self.retrieval is not None:
            found = self._rescored(user, train, items, weights, allowed, k, include)
            if found is not None:
                return found
        source = "exact"
        scores = None
        if user is not None and not len(items):
            scores = scorer.known_scores(user)
        elif len(items) or len(train):
            scores = scorer.history_scores(user, train, items, weights)
            if scores is None and user is not None:
                scores = scorer.known_scores(user)
        if scores is None:
            scores, source = scorer.popularity, "popular"
        cand = np.flatnonzero(allowed)
        return cand, scores[cand], source

    def _rescored(
        self,
        user: int | None,
        train: np.ndarray,
        items: np.ndarray,
        weights: np.ndarray,
        allowed: np.ndarray,
        k: int,
        include: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, str] | None:
        """Candidates of a model that declares retrieval, scored exactly: the index's best
        items for the user's tower query, the model's head candidates, the most popular items
        for a new user (whose scores lean on popularity) and ``include``, the allowed ones;
        None where the exact path must score (no history, or as many items as there are)."""
        scorer = self.scorer
        request = scorer.retrieval_request(user, train, items, weights)
        if request is None:
            return None
        n_allowed = int(allowed.sum())
        want = self.config.rescore_candidates + k + len(train) + len(items)
        if n_allowed < len(allowed):
            want = int(want * len(allowed) / max(n_allowed, 1))
        if want >= len(allowed):
            return None
        found, _ = self.retrieval.search(scorer.retrieval_query(request), want)
        parts = [found, scorer.head_candidates(request, want)]
        if request.blend_events is not None:
            parts.append(scorer.popular(want))
        if include is not None:
            parts.append(include)
        cand = np.unique(np.concatenate(parts))
        cand = cand[cand < len(allowed)]
        cand = cand[allowed[cand]]
        if len(cand) < min(k, n_allowed):
            return None
        return cand, scorer.rescore(request, cand), "index"

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        exclude_seen: bool = True,
        category: str | None = None,
        new_item_slots: int | None = None,
    ) -> dict[str, Any]:
        """Top-``k`` items for a user, with a reason each; ``new_item_slots`` positions go to
        the best new items (default: the configured number; :mod:`kinrec.serving.ranking`)."""
        return json.loads(self.recommend_json(user_id, k, exclude_seen, category, new_item_slots))

    def recommend_json(
        self,
        user_id: str,
        k: int = 10,
        exclude_seen: bool = True,
        category: str | None = None,
        new_item_slots: int | None = None,
    ) -> bytes:
        """:meth:`recommend` as a JSON document, cached until the user or the catalogue
        changes (as bytes: one object per entry for the garbage collector, no re-encoding)."""
        if new_item_slots is None:
            new_item_slots = self.config.new_item_slots
        key = (k, exclude_seen, category, new_item_slots)
        cached = self.cache.get(user_id, key)
        if cached is not None:
            self.metrics.cache.labels("hit").inc()
            return cached
        self.metrics.cache.labels("miss").inc()
        with self.lock:
            result = self._recommend(user_id, k, exclude_seen, category, new_item_slots)
            body = json.dumps(result, ensure_ascii=False).encode("utf-8")
            self.cache.put(user_id, key, body)
        return body

    def _recommend(
        self, user_id: str, k: int, exclude_seen: bool, category: str | None, new_slots: int = 0
    ) -> dict[str, Any]:
        user, train, items, weights = self._history(user_id)
        allowed = self._allowed(category)
        if exclude_seen and (len(train) or len(items)):
            allowed = allowed.copy()
            allowed[train] = False
            allowed[items] = False
        new = self.new_items() if new_slots else None
        include = np.flatnonzero(new) if new is not None else None
        cand, scores, source = self._scores(user, train, items, weights, allowed, k, include)
        scores = np.asarray(scores, dtype=np.float64)
        finite = np.isfinite(scores)
        cand, scores = cand[finite], scores[finite]
        if new is not None and source != "popular":
            top = top_with_reserved(scores, new[cand], k, new_slots)
        else:  # popularity ranks new items last by construction: no slots to reserve
            top = top_k(scores, k)
        picked = cand[top]
        reasons = self._reasons(picked, train, items, self.users.get(user_id), source)
        is_new = new[picked] if new is not None else self.new_items(picked)
        ids, title = self.catalog.ids, self.catalog.title
        out = [
            {"item_id": ids[i], "title": title(ids[i]), "score": score, "reason": reason,
             "new": fresh}
            for i, score, reason, fresh in zip(
                picked.tolist(), scores[top].tolist(), reasons, is_new.tolist(), strict=True
            )
        ]  # fmt: skip
        return {
            "user_id": user_id,
            "items": out,
            "cold_start": source == "popular",
            "source": source,
        }

    def new_items(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Whether catalogue items (``idx``, default all) are new: no interaction in the
        model's training data (added after training, or declared but never used)."""
        if idx is None:
            idx = np.arange(len(self.catalog))
        trained = self.scorer.popularity
        known = idx < len(trained)
        new = np.ones(len(idx), dtype=bool)
        new[known] = trained[idx[known]] == 0
        return new

    def _history_mask(self, train: np.ndarray, items: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(self.catalog), dtype=bool)
        mask[train] = True
        mask[items] = True
        return mask

    def _reasons(
        self,
        top: np.ndarray,
        train: np.ndarray,
        items: np.ndarray,
        online: OnlineUser | None,
        source: str,
    ) -> list[str]:
        """One reason per item of ``top``: its nearest neighbour in the user's history."""
        if source == "popular":
            return ["popular with everyone"] * len(top)
        history = self._history_mask(train, items)
        best = np.full(len(top), -1, dtype=np.int64)
        inside = top < len(self.nb_ids)
        if inside.any():
            nb, sims = self.nb_ids[top[inside]], self.nb_sims[top[inside]]
            ok = (nb >= 0) & history[np.maximum(nb, 0)]
            pick = np.where(ok, sims, -np.inf).argmax(axis=1)
            rows = np.arange(len(nb))
            best[inside] = np.where(ok[rows, pick], nb[rows, pick], -1)
        verbs: dict[int, str] = {}
        if online is not None:
            for _, e_item, kind, _, _ in online.events:
                verbs[e_item] = VERBS.get(kind, "liked")
        out = []
        for idx, j in zip(top.tolist(), best.tolist(), strict=True):
            if j >= 0:
                item = self.catalog.ids[j]
                name = self.catalog.title(item) or item
                out.append(f"because you {verbs.get(j, 'liked')} {name}")
            elif idx >= self.n_trained_items:
                out.append("new item matching your tastes")
            else:
                out.append("matches your history")
        return out

    # ------------------------------------------------------------------ similar items
    def similar(self, item_id: str, k: int = 10, by: str = "cf") -> dict[str, Any]:
        with self.lock:
            idx = self._require_item(item_id)
            allowed = self.catalog.servable & ~self.catalog.retired
            allowed[idx] = False
            if by == "blend":
                views = [self._view(v, idx) for v in ("cf", "text", "kg")]
                views = [v for v in views if v is not None]
                scores = sum(_unit_scale(v) for v in views) / len(views)
            else:
                raw = self._view(by, idx)
                if raw is None:
                    raise InvalidError(f"by={by}: this catalogue has no {by} view", "by")
                scores = np.asarray(raw, dtype=np.float64)
            scores = np.where(allowed, scores, -np.inf)
            cand = np.flatnonzero(np.isfinite(scores) & (scores > 0))
            top = cand[top_k(scores[cand], k)]
            return {
                "item_id": item_id,
                "by": by,
                "items": [
                    {
                        "item_id": self.catalog.ids[i],
                        "title": self.catalog.title(self.catalog.ids[i]),
                        "score": float(scores[i]),
                    }
                    for i in top
                ],
            }

    def _view(self, by: str, idx: int) -> np.ndarray | None:
        if by == "cf":
            return self._cf_similarity(idx)
        if by == "text":
            return self.catalog.text_similarity(idx)
        if by == "kg":
            return self.catalog.kg_similarity(idx)
        raise InvalidError(f"unknown view {by!r} (one of {', '.join(SIMILAR_VIEWS)})", "by")

    def _cf_similarity(self, idx: int, n: int = 200) -> np.ndarray:
        out = np.full(len(self.catalog), -np.inf, dtype=np.float64)
        if self.cos_index is not None:
            vectors = self.scorer.item_vectors
            ids, sims = self.cos_index.search(vectors[idx], n + 1)
            out[ids] = sims
        else:
            for s in self.model.similar_items(self.catalog.ids[idx], k=n):
                out[self.model.item_map.index(s.item_id)] = s.score
        out[idx] = -np.inf
        return out

    # ------------------------------------------------------------------ explanations
    def explain(self, user_id: str, item_id: str, max_paths: int = 5) -> dict[str, Any]:
        """Why ``item_id`` suits ``user_id``: similar items in their history, graph paths."""
        with self.lock:
            idx = self._require_item(item_id)
            user, train, items, weights = self._history(user_id)
            hist = np.unique(np.concatenate([train, items]))
            hist = hist[hist != idx]
            sims = self._history_similarity(idx, hist)
            order = np.argsort(-sims, kind="stable")
            liked = [
                {
                    "item_id": self.catalog.ids[int(hist[o])],
                    "title": self.catalog.title(self.catalog.ids[int(hist[o])]),
                    "similarity": float(sims[o]),
                }
                for o in order[:5]
                if sims[o] > 0
            ]
            allowed = np.ones(len(self.catalog), dtype=bool)
            cand, scores, source = self._scores(
                user, train, items, weights, allowed, len(self.catalog)
            )
            hit = np.flatnonzero(cand == idx)
            score = float(scores[hit[0]]) if len(hit) and np.isfinite(scores[hit[0]]) else None
            online = self.users.get(user_id)
            reason = self._reasons(np.array([idx]), train, items, online, source)[0]
            recent = [self.catalog.ids[e[1]] for e in reversed(online.events)] if online else []
            sources = list(dict.fromkeys([x["item_id"] for x in liked] + recent[:10]))
        paths = []
        for other in sources:
            for path in self.catalog.kg_paths(other, item_id, limit=2):
                paths.append(
                    {
                        "from_item_id": other,
                        "from_title": self.catalog.title(other),
                        "steps": [{"head": h, "relation": r, "tail": t} for h, r, t in path],
                    }
                )
            if len(paths) >= max_paths:
                break
        paths.sort(key=lambda p: len(p["steps"]))
        return {
            "user_id": user_id,
            "item_id": item_id,
            "title": self.catalog.title(item_id),
            "score": score,
            "reason": reason,
            "similar_liked_items": liked,
            "kg_paths": paths[:max_paths],
        }

    def item_graph(self, item_id: str, limit: int = 24) -> dict[str, Any]:
        """An item's knowledge-graph neighbourhood: its edges item -relation-> entity, and
        for each entity how many other items it links to (with a few of them)."""
        with self.lock:
            if item_id not in self.catalog.info:
                raise NotFoundError(f"unknown item {item_id!r}")
            found = self.catalog.kg_neighbourhood(item_id, limit)
            n_edges, edges = found if found is not None else (0, [])
            return {
                "item_id": item_id,
                "title": self.catalog.title(item_id),
                "graph": found is not None,
                "n_edges": n_edges,
                "edges": edges,
            }

    def _history_similarity(self, idx: int, hist: np.ndarray) -> np.ndarray:
        if not len(hist):
            return np.zeros(0, dtype=np.float64)
        vectors = self.scorer.item_vectors
        if vectors is not None:
            v = vectors[hist]
            u = vectors[idx]
            return (v @ u) / (np.linalg.norm(v, axis=1) * np.linalg.norm(u) + 1e-12)
        if self._seen_csc is None:
            self._seen_csc = self.model.seen.tocsc()
        seen = self._seen_csc
        if idx >= seen.shape[1]:
            return np.zeros(len(hist), dtype=np.float64)
        hist_t = hist[hist < seen.shape[1]]
        co = np.asarray((seen[:, hist_t].T @ seen[:, idx]).toarray()).ravel()
        counts = np.diff(seen.indptr)
        out = np.zeros(len(hist), dtype=np.float64)
        out[hist < seen.shape[1]] = co / (np.sqrt(counts[hist_t] * counts[idx]) + 1e-12)
        return out

    # ------------------------------------------------------------------ users
    def user_history(self, user_id: str, limit: int = 50) -> dict[str, Any]:
        with self.lock:
            user = self._trained_user(user_id)
            online = self.users.get(user_id)
            trained = self._train_items(user)
            events = list(reversed(online.events))[:limit] if online else []
            return {
                "user_id": user_id,
                "known": user is not None or online is not None,
                "trained_items": [
                    {
                        "item_id": self.catalog.ids[i],
                        "title": self.catalog.title(self.catalog.ids[i]),
                    }
                    for i in trained[:limit]
                ],
                "n_trained_items": len(trained),
                "events": [
                    {
                        "id": eid,
                        "item_id": self.catalog.ids[item],
                        "title": self.catalog.title(self.catalog.ids[item]),
                        "type": kind,
                        "value": value,
                        "timestamp": ts,
                    }
                    for eid, item, kind, value, ts in events
                ],
            }

    def list_users(self, prefix: str = "", limit: int = 50) -> list[str]:
        with self.lock:
            out: list[str] = []
            for user in self.users:
                if user.startswith(prefix):
                    out.append(user)
                    if len(out) >= limit:
                        return out
            for user in self.model.user_map.ids():
                if user.startswith(prefix) and user not in self.users:
                    if self._trained_user(user) is None:
                        continue
                    out.append(user)
                    if len(out) >= limit:
                        break
            return out

    # ------------------------------------------------------------------ events
    def validate_events(self, rows: Sequence[Mapping[str, Any]], batch: bool) -> None:
        """Every event must name an item the model scores."""
        for i, row in enumerate(rows):
            if self._item_index(str(row["item_id"])) is None:
                where = f"events[{i}].item_id" if batch else "item_id"
                raise InvalidError(f"unknown item {row['item_id']!r}", where)

    def store_events(self, rows: Sequence[Mapping[str, Any]]) -> list[Event]:
        """Commit events to the store (blocking); returns them as stored."""
        ids = self.store.add_events(self.dataset, rows)
        now = time.time()
        return [
            Event(
                i,
                r["user_id"],
                r["item_id"],
                r["type"],
                None if r.get("value") is None else float(r["value"]),
                now if r.get("timestamp") is None else float(r["timestamp"]),
                now,
            )
            for i, r in zip(ids, rows, strict=True)
        ]

    def apply_events(self, events: Iterable[Event], count: bool = True) -> None:
        """Fold stored events into the online state; the next recommendation reflects them."""
        maxlen = self.config.recent_events
        with self.lock:
            for ev in events:
                idx = self._item_index(ev.item_id)
                if idx is None:
                    continue
                online = self.users.get(ev.user_id)
                if online is None:
                    online = self.users[ev.user_id] = OnlineUser(deque(maxlen=maxlen))
                online.add(ev.id, idx, ev.type, ev.value, ev.timestamp)
                self.cache.drop_user(ev.user_id)
                if count:
                    self.metrics.events.labels(ev.type).inc()
            self.metrics.online_users.set(len(self.users))

    # ------------------------------------------------------------------ erasure
    def store_erasure(self, user_id: str) -> dict[str, int]:
        return persist.erase_user(self.store, self.dataset, user_id)

    def apply_erasure(self, user_id: str) -> None:
        with self.lock:
            self.users.pop(user_id, None)
            self.erased.add(persist.user_hash(user_id))
            self.cache.drop_user(user_id)
            self.metrics.online_users.set(len(self.users))

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

    def _refresh_retrieval_row(self, idx: int) -> None:
        """Rebuild the retrieval index if the model changed the row of an item it had."""
        if idx < self.retrieval.size:
            row = self.scorer.retrieval_rows(idx)[0]
            if not np.array_equal(self.retrieval.row(idx), row):
                self.retrieval.rebuild(self.scorer.retrieval_rows())

    def _sync_index(self) -> None:
        """Append new items' vectors to the indexes and give them neighbour rows."""
        vectors = self.scorer.item_vectors
        n = len(self.catalog)
        if self.retrieval is not None and self.retrieval.size < self.scorer.n_items:
            self.retrieval.add(self.scorer.retrieval_rows(self.retrieval.size))
        if vectors is None:
            return
        if self.index is not None and self.index.size < len(vectors):
            self.index.add(self.scorer.index_vectors()[self.index.size :])
        if self.cos_index is not None and self.cos_index.size < len(vectors):
            self.cos_index.add(vectors[self.cos_index.size :])
        if len(self.nb_ids) < n and self.cos_index is not None:
            start = len(self.nb_ids)
            ids, sims = self.cos_index.search_many(vectors[start:n], self.config.neighbours + 1)
            new_ids, new_sims = _drop_self(ids, sims, self.config.neighbours, start)
            self.nb_ids = np.vstack([self.nb_ids, new_ids])
            self.nb_sims = np.vstack([self.nb_sims, new_sims])

    def store_retire(self, item_id: str) -> None:
        with self.lock:
            if self._item_index(item_id) is None and item_id not in self.catalog.info:
                raise NotFoundError(f"unknown item {item_id!r}")
        persist.put_artifact(
            self.store, persist.retired_namespace(self.dataset), item_id, b"{}", "application/json"
        )

    def apply_retire(self, item_id: str) -> None:
        with self.lock:
            self.retired_stored.add(item_id)
            idx = self._item_index(item_id)
            if idx is not None:
                self.catalog.retire(idx)
            self.cache.clear()
            self._update_gauges()

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
        }


def _unit_scale(scores: np.ndarray) -> np.ndarray:
    """Positive scores divided by the largest; the rest 0 (for blending views)."""
    s = np.where(np.isfinite(scores) & (scores > 0), scores, 0.0)
    top = s.max(initial=0.0)
    return s / top if top > 0 else s


def _drop_self(
    ids: np.ndarray, sims: np.ndarray, m: int, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour rows (item ``start + r`` for row ``r``) without the item itself, ``m`` wide."""
    out_ids = np.full((len(ids), m), -1, dtype=np.int64)
    out_sims = np.zeros((len(ids), m), dtype=np.float32)
    for r in range(len(ids)):
        keep = (ids[r] != start + r) & (ids[r] >= 0)
        row_ids, row_sims = ids[r][keep][:m], sims[r][keep][:m]
        out_ids[r, : len(row_ids)] = row_ids
        out_sims[r, : len(row_sims)] = row_sims
    return out_ids, out_sims
