"""The engine's item indexes and neighbour lists: built at start-up from the model's vectors
(or, for a model without them, from item-item cosine over the training matrix, cached in the
store), and extended as items are added (:class:`Neighbours`)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from kinrec.serving.index import ItemIndex

NEIGHBOURS_NAMESPACE = "kinrec.serving/neighbours"  # key: model manifest digest, width


class Neighbours:
    """Indexes and neighbour lists, mixed into :class:`~kinrec.serving.engine.Engine`.

    ``index``: the recommendation index of a dot-product model or a vector fold-in (None:
    recommendations are scored otherwise); ``cos_index``: cosine neighbours over the item
    vectors (None: the model has none); ``retrieval``: the candidate-retrieval index of a
    model that declares retrieval, above the HNSW threshold; ``nb_ids`` / ``nb_sims``: every
    item's nearest items (-1: none) and their similarities, for the reasons.
    """

    index: ItemIndex | None
    cos_index: ItemIndex | None
    retrieval: ItemIndex | None
    nb_ids: np.ndarray
    nb_sims: np.ndarray

    # ------------------------------------------------------------------ start-up
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
        forgotten = self.model.forgotten  # users erased from the training rows since
        if len(forgotten):
            gone = hashlib.sha256(forgotten.tobytes()).hexdigest()[:16]
            return f"{digest}:{m}:forgotten-{gone}"
        return f"{digest}:{m}"

    # ------------------------------------------------------------------ items added
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
