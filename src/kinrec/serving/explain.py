"""Similar items (collaborative, text, knowledge-graph or a blend of them), explanations of a
recommendation and an item's knowledge-graph neighbourhood (:class:`Explaining`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kinrec.serving.errors import InvalidError, NotFoundError
from kinrec.serving.ranking import top_k

SIMILAR_VIEWS = ("cf", "text", "kg", "blend")


class Explaining:
    """Similar items and explanations, mixed into :class:`~kinrec.serving.engine.Engine`.

    ``_seen_csc``: the training matrix by item, for the co-occurrence similarity of a model
    without item vectors (built on first use).
    """

    _seen_csc: Any

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


def _unit_scale(scores: np.ndarray) -> np.ndarray:
    """Positive scores divided by the largest; the rest 0 (for blending views)."""
    s = np.where(np.isfinite(scores) & (scores > 0), scores, 0.0)
    top = s.max(initial=0.0)
    return s / top if top > 0 else s
