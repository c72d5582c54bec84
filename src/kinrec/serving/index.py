"""A faiss index over item vectors: exact inner product for small catalogues, HNSW above.

Row ``i`` of the index is item index ``i``; new items are appended in order. Retired items
are not removed (HNSW cannot remove): callers filter results with their own mask.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

log = logging.getLogger(__name__)

faiss.omp_set_num_threads(1)  # one query at a time: threads only add latency

IndexKind = Literal["flat", "hnsw"]


class ItemIndex:
    """Maximum inner product search over item vectors (``cosine=True``: over unit vectors)."""

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        hnsw_threshold: int = 50_000,
        hnsw_m: int = 32,
        ef_search: int = 128,
        cosine: bool = False,
        cache_dir: Path | None = None,
        name: str = "items",
    ) -> None:
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.cosine = cosine
        self.cache_path: Path | None = None  # the file this index was read from or written to
        if cache_dir is not None and len(vectors) > hnsw_threshold:
            self._load_or_build(vectors, Path(cache_dir), name)
        else:
            self.rebuild(vectors)

    def _load_or_build(self, vectors: np.ndarray, cache_dir: Path, name: str) -> None:
        """An HNSW graph takes minutes to build on a million items: the one built for these
        exact vectors and settings is read back from ``cache_dir`` (``<name>-<digest>.faiss``),
        else built and written there, replacing the files of earlier vectors of ``name``. A
        directory that cannot be written only costs the build."""
        x = self._prepare(vectors)
        digest = hashlib.sha256(x.tobytes())
        digest.update(f"{x.shape}|{self.hnsw_m}|{self.cosine}|{faiss.__version__}".encode())
        path = cache_dir / f"{name}-{digest.hexdigest()[:24]}.faiss"
        if path.exists():
            try:
                index = faiss.read_index(str(path))
                index.hnsw.efSearch = self.ef_search
                self.index, self.dim, self.kind = index, x.shape[1], "hnsw"
                self.cache_path = path
                log.info("index %s read from %s", name, path)
                return
            except RuntimeError as exc:  # a damaged file: build again
                log.warning("index %s: cannot read %s (%s); building it", name, path, exc)
        self.rebuild(vectors)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
            os.close(fd)
            faiss.write_index(self.index, tmp)
            os.chmod(tmp, 0o644)  # as any file the model directory holds
            os.replace(tmp, path)  # readers never see half a file
            self.cache_path = path
            for old in cache_dir.glob(f"{name}-*"):  # earlier vectors' index and tables
                if not old.name.startswith(path.stem):
                    old.unlink(missing_ok=True)
        except (OSError, RuntimeError) as exc:
            log.warning("index %s: not cached in %s (%s)", name, cache_dir, exc)

    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.cosine:
            x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
        return x

    def rebuild(self, vectors: np.ndarray) -> None:
        """Index ``vectors`` from scratch (after vectors of existing items changed)."""
        x = self._prepare(vectors)
        dim = x.shape[1]
        self.kind: IndexKind = "hnsw" if len(x) > self.hnsw_threshold else "flat"
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(40, self.hnsw_m * 2)
            index.hnsw.efSearch = self.ef_search
        else:
            index = faiss.IndexFlatIP(dim)
        index.add(x)
        self.index = index
        self.dim = dim

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows (items ``size .. size + len(vectors) - 1``)."""
        self.index.add(self._prepare(vectors))

    def row(self, i: int) -> np.ndarray:
        """The stored vector of item ``i`` (as indexed: unit length for a cosine index)."""
        return self.index.reconstruct(int(i))

    def search(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Item indices and scores of the ``n`` best items for one query vector."""
        n = max(1, min(n, self.size))
        q = self._prepare(np.asarray(query, dtype=np.float32).reshape(1, -1))
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, n)
        scores, ids = self.index.search(q, n)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]

    def nearest_to_each(self, vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search_many` of the indexed ``vectors`` themselves (each item's best
        ``n``, itself included): a minute or two at a million items, so kept beside a cached
        index (``<index file>.top<n>.npz``) and read back for the same index."""
        path = None
        if self.cache_path is not None:
            path = self.cache_path.with_name(f"{self.cache_path.stem}.top{n}.npz")
            if path.exists():
                try:
                    with np.load(path) as data:
                        ids, sims = data["ids"], data["sims"]
                    if ids.shape == (self.size, min(n, self.size)):
                        return ids, sims
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("neighbour table %s unreadable (%s): searching again", path, exc)
        ids, sims = self.search_many(vectors, n)
        if path is not None:
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, ids=ids, sims=sims)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except OSError as exc:
                log.warning("neighbour table not cached in %s (%s)", path.parent, exc)
        return ids, sims

    def search_many(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch search (start-up work such as neighbour lists)."""
        n = max(1, min(n, self.size))
        faiss.omp_set_num_threads(2)
        try:
            scores, ids = self.index.search(self._prepare(queries), n)
        finally:
            faiss.omp_set_num_threads(1)
        return ids, scores
