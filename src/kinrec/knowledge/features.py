"""Item content as model inputs: frozen text embeddings and knowledge-graph incidence.

:func:`build_item_content` turns a dataset's side information into two matrices aligned with a
model's item vocabulary:

* ``text``: the language-model embedding of each item's text (L2-normalised; zero rows and
  ``has_text = False`` for items without text);
* ``entities``: a sparse item x entity incidence over the item's 1-hop knowledge-graph
  neighbours (attribute entities such as genres and years, plus imported triples), weighted by
  IDF and L2-normalised per row, so the transfer model can aggregate entity embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from kinrec.data.dataset import Dataset, IdMap

TextEmbedder = Callable[[list[str]], np.ndarray]
"""Maps item texts to an ``(n, d)`` float32 array."""


@dataclass
class ItemContent:
    """Content views of a catalogue, rows in the model's item order."""

    text: np.ndarray
    has_text: np.ndarray
    entities: sp.csr_matrix
    entity_ids: list[str]
    entity_idf: np.ndarray

    @property
    def n_items(self) -> int:
        return self.text.shape[0]


def item_texts(dataset: Dataset, item_ids: Sequence[str]) -> list[str]:
    """Rendered text of each item (empty string when unknown), via the dataset's template."""
    from kinrec.knowledge.text import render_item_texts

    rendered = dict(render_item_texts(dataset))
    return [rendered.get(str(i), "") for i in item_ids]


def default_text_embedder(
    model_path: str | None = None, adapter_path: str | None = None
) -> TextEmbedder:
    """The bundled MiniLM (or a local sentence-transformers folder), optionally with a LoRA
    adapter; vectors are cached in the store named by ``KINREC_DB`` when set."""
    import os

    from kinrec.knowledge.encoder import EncoderConfig, StoreEmbeddingCache, TextEncoder

    options: dict[str, object] = {}
    if model_path is not None:
        options["model_path"] = model_path
    if adapter_path is not None:
        options["adapter_path"] = adapter_path
    cache = StoreEmbeddingCache(os.environ["KINREC_DB"]) if os.environ.get("KINREC_DB") else None
    encoder = TextEncoder(EncoderConfig(**options), cache=cache)
    return lambda texts: encoder.encode(list(texts))


def model_text_embedder(model: Any) -> TextEmbedder:
    """The text encoder named by ``model.config`` (``encoder_path``, ``adapter_path``), loaded
    once per model object and kept on it (new items reuse it)."""
    if getattr(model, "_text_embedder", None) is None:
        model._text_embedder = default_text_embedder(
            model.config.encoder_path, model.config.adapter_path
        )
    return model._text_embedder


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def build_item_content(
    dataset: Dataset,
    item_map: IdMap,
    embed: TextEmbedder | None = None,
    min_entity_items: int = 2,
    use_triples: bool = True,
) -> ItemContent:
    """Text embeddings and entity incidence for every item of ``item_map``.

    Entities touching fewer than ``min_entity_items`` items carry no transferable signal and
    are dropped.
    """
    from kinrec.knowledge.graph import build_graph

    ids = item_map.ids()
    texts = item_texts(dataset, ids)
    has_text = np.array([bool(t.strip()) for t in texts])
    text = np.zeros((len(ids), 0), dtype=np.float32)
    if has_text.any():
        embed = embed or default_text_embedder()
        vectors = np.asarray(embed([t for t, h in zip(texts, has_text, strict=True) if h]))
        text = np.zeros((len(ids), vectors.shape[1]), dtype=np.float32)
        text[has_text] = _normalise_rows(vectors)

    graph = build_graph(dataset, include_triples=use_triples)
    incidence = graph.item_entity_matrix()  # graph item order -> remap to the model's
    graph_rows = {item_id: row for row, item_id in enumerate(graph.item_ids)}
    rows = np.array([graph_rows.get(str(i), -1) for i in ids])
    present = rows >= 0
    if present.any():
        picked = incidence[np.where(present, rows, 0)]
        picked = sp.diags(present.astype(np.float64)) @ picked
    else:  # no item in the graph (or no graph at all)
        picked = sp.csr_matrix((len(ids), incidence.shape[1]), dtype=np.float64)
    df = np.asarray((picked > 0).sum(axis=0)).ravel()
    keep = np.flatnonzero(df >= min_entity_items)
    picked = picked[:, keep].tocsr()
    idf = np.log(len(ids) / df[keep]).astype(np.float32)
    entities = _weight_rows(picked, idf)
    names = graph.entities.ids(keep)
    return ItemContent(text, has_text, entities, names, idf)


def _weight_rows(incidence: sp.spmatrix, idf: np.ndarray) -> sp.csr_matrix:
    """IDF-weighted, row-L2-normalised incidence (float32 CSR)."""
    weighted = sp.csr_matrix(incidence, dtype=np.float64) @ sp.diags(idf.astype(np.float64))
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    weighted = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ weighted
    return sp.csr_matrix(weighted, dtype=np.float32)


def content_for_new_items(
    dataset: Dataset,
    item_ids: Sequence[str],
    entity_ids: Sequence[str],
    entity_idf: np.ndarray,
    embed: TextEmbedder,
) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Text embeddings, has-text mask and incidence for new items over a fixed entity vocabulary.

    Entities the model has never seen are ignored (their embeddings do not exist).
    """
    from kinrec.knowledge.graph import build_graph

    texts = item_texts(dataset, item_ids)
    has_text = np.array([bool(t.strip()) for t in texts])
    vectors = embed(texts) if has_text.any() else np.zeros((len(texts), 1))
    text = _normalise_rows(np.asarray(vectors, dtype=np.float32))
    text[~has_text] = 0.0
    graph = build_graph(dataset)
    vocab = IdMap(entity_ids)
    rows, cols = [], []
    incidence = graph.item_entity_matrix().tocsr()
    for r, item_id in enumerate(item_ids):
        try:
            node = graph.item_index(str(item_id))
        except KeyError:
            continue
        known = [vocab.index(n) for n in graph.entities.ids(incidence[node].indices) if n in vocab]
        rows.extend([r] * len(known))
        cols.extend(known)
    binary = sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(item_ids), len(entity_ids))
    )
    return text, has_text, _weight_rows(binary, entity_idf)
