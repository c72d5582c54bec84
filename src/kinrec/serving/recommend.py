"""Recommendations: which items may be recommended, their candidates and scores (the
recommendation index, candidate retrieval with exact rescoring, or every item), the top
``k`` with reserved new-item slots (:mod:`kinrec.serving.ranking`), the response cache and
one reason per item (:class:`Recommending`)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kinrec.models.base import untrained
from kinrec.serving.errors import InvalidError
from kinrec.serving.foldin import Covered
from kinrec.serving.ranking import top_k, top_with_reserved
from kinrec.serving.users import OnlineUser

VERBS = {"view": "viewed", "click": "clicked", "like": "liked", "rating": "rated"}
VERBS["purchase"] = "bought"


class Recommending:
    """Recommendations and their reasons, mixed into :class:`~kinrec.serving.engine.Engine`.

    ``_alive`` / ``_alive_version``: the recommendable items, as of a catalogue version.
    """

    _alive: np.ndarray
    _alive_version: int

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
            n_allowed = int(np.count_nonzero(allowed))
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
        items for the user's tower query, the model's head candidates, the best items with a
        zero vector (:meth:`~kinrec.serving.foldin.ModelScorer.blank`) and ``include``, the
        allowed ones; None where the exact path must score (no history, or as many items as
        there are).

        A new user's scores are blended with popularity: the index is searched for the blend
        and also for the model's own score, whose best items without a train count are the
        ones the blend ranks highest among those (it keeps their order) and whose best
        counted items say where they land; with the most popular items, these lists
        (:class:`~kinrec.serving.foldin.Covered`) bound what any item left out can score."""
        scorer = self.scorer
        request = scorer.retrieval_request(user, train, items, weights)
        if request is None:
            return None
        n_allowed = int(np.count_nonzero(allowed))
        want = self.config.rescore_candidates + k + len(train) + len(items)
        if n_allowed < len(allowed):
            want = int(want * len(allowed) / max(n_allowed, 1))
        if want >= len(allowed):
            return None
        found, _ = self.retrieval.search(scorer.retrieval_query(request), want)
        head = scorer.head_candidates(request, want)
        parts = [found, head, scorer.blank(want)]
        covered = None
        if request.blend_events is not None:
            tower, _ = self.retrieval.search(scorer.tower_query(request), want)
            covered = Covered(tower, head, scorer.popular(want), want, self.retrieval.size)
            parts += [tower, covered.popular]
        if request.lifted is not None:
            parts.append(request.lifted[0])  # a new user's graph lift: only these are lifted
        if include is not None:
            parts.append(include)
        cand = np.unique(np.concatenate(parts))
        cand = cand[cand < len(allowed)]
        cand = cand[allowed[cand]]
        if len(cand) < min(k, n_allowed):
            return None
        return cand, scorer.rescore(request, cand, covered), "index"

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
        model's training data (added after training, or declared but never used), as
        :func:`~kinrec.models.base.untrained` defines it from the trained counts."""
        if idx is None:
            idx = np.arange(len(self.catalog))
        return untrained(self.scorer.popularity, idx)

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
        history = np.union1d(train, items)
        best = np.full(len(top), -1, dtype=np.int64)
        inside = top < len(self.nb_ids)
        if inside.any():
            nb, sims = self.nb_ids[top[inside]], self.nb_sims[top[inside]]
            ok = (nb >= 0) & np.isin(nb, history)
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
