"""Shared fixtures of the serving tests: a small catalogue with text, genres and a knowledge
graph, models trained on it through the real pipeline, and a content model that can fold in
events and add items (what a transfer model with content views does)."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from kinrec.config import DataConfig, ModelSection, PipelineConfig, SplitConfig, StoreConfig
from kinrec.data.dataset import Dataset, Interactions
from kinrec.models.base import (
    ModelConfig,
    ProgressCallback,
    Recommender,
    Requirement,
    Validator,
)
from kinrec.pipeline import train_and_evaluate
from kinrec.serving.keys import create_key
from kinrec.store import Store

DATASET = "toyflix"
WORDS = {
    "Comedy": ["laugh", "party", "wedding", "holiday", "prank"],
    "Drama": ["war", "river", "letters", "winter", "trial"],
}


def make_dataset() -> Dataset:
    """40 items (1-20 Comedy, 21-40 Drama) with titles, years, a director graph; 40 users,
    odd users watch comedies and even users dramas."""
    rng = np.random.default_rng(7)
    items, links, triples = [], [], []
    for i in range(1, 41):
        genre = "Comedy" if i <= 20 else "Drama"
        word = WORDS[genre][i % 5]
        items.append(
            {
                "item_id": str(i),
                "title": f"The {word} story {i}",
                "genre": (genre,),
                "year": (str(1990 + i % 7),),
            }
        )
        links.append({"item_id": str(i), "entity_id": f"m.{i}"})
        triples.append({"head": f"m.{i}", "relation": "directed_by", "tail": f"d.{i % 6}"})
    rows = []
    for u in range(1, 41):
        pool = np.arange(1, 21) if u % 2 else np.arange(21, 41)
        for pos, i in enumerate(rng.permutation(pool)[:10]):
            rows.append((str(u), str(i), float(1 + pos % 5), float(1_000 + u * 100 + pos)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    inter["user_id"] = inter["user_id"].astype(object)
    inter["item_id"] = inter["item_id"].astype(object)
    items_frame = pd.DataFrame(items)
    for col in items_frame.columns:
        items_frame[col] = items_frame[col].astype(object)
    return Dataset(
        name=DATASET,
        interactions=inter,
        items=items_frame,
        triples=pd.DataFrame(triples).astype(object),
        links=pd.DataFrame(links).astype(object),
        text_fields=["title"],
        attribute_fields=["genre", "year"],
    )


def make_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'serving.db'}"
    with Store(url) as store:
        store.ingest(make_dataset())
    return url


def fresh_store(world: dict, tmp_path: Path) -> str:
    """A private copy of ``world["url"]``'s SQLite store (tests that write must not disturb
    each other)."""
    target = tmp_path / "copy.db"
    source = sqlite3.connect(world["url"].removeprefix("sqlite:///"))
    with sqlite3.connect(target) as copy:
        source.backup(copy)
    source.close()
    return f"sqlite:///{target}"


def train(tmp_path: Path, url: str, model: str = "ease", params: dict | None = None) -> Path:
    """Train through the pipeline (random split from the store); returns the model dir."""
    config = PipelineConfig(
        data=DataConfig(dataset=DATASET),
        store=StoreConfig(url=url),
        split=SplitConfig(method="random", seed=1),
        model=ModelSection(name=model, params=params or {}),
    )
    with Store(url) as store:
        dataset = store.load_dataset(DATASET)
    out = tmp_path / f"model-{model}"
    train_and_evaluate(config, dataset, out)
    return out


def admin_key(url: str, role: str = "admin") -> str:
    with Store(url) as store:
        return create_key(store, f"test-{role}", role)[1]  # type: ignore[arg-type]


# ------------------------------------------------------------------------ a content model
def _token_vector(token: str, dim: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(token.encode("utf-8")))
    return rng.standard_normal(dim).astype(np.float32)


class ToyContentConfig(ModelConfig):
    dim: int = 32


class ToyContent(Recommender):
    """Items are hashed bags of their title words and attribute tokens; a user is the mean of
    their items' vectors. It folds in histories and vectorises new items from their content."""

    name = "toy-content"
    Config = ToyContentConfig
    requires = (Requirement(("text", "attributes")),)

    def _encode(self, side: Dataset, item_ids: list[str]) -> np.ndarray:
        rows = side.items.set_index("item_id")
        out = np.zeros((len(item_ids), self.config.dim), dtype=np.float32)
        for r, item in enumerate(item_ids):
            if item not in rows.index:
                continue
            row = rows.loc[item]
            tokens = [w.lower() for f in side.text_fields for w in str(row.get(f) or "").split()]
            tokens += [f"{f}:{t}" for f in side.attribute_fields for t in (row.get(f) or ())]
            for t in tokens:
                out[r] += _token_vector(t, self.config.dim)
            out[r] /= np.linalg.norm(out[r]) + 1e-9
        return out

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        self.vectors = self._encode(self.side, self.item_map.ids())

    def _profile(self, items: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        w = np.ones(len(items), np.float32) if weights is None else weights
        return (self.vectors[items] * w[:, None]).sum(axis=0) / max(float(w.sum()), 1e-9)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        n = self.seen.shape[1]
        out = []
        for u in np.asarray(users):
            row = self.seen[int(u)]
            out.append(self.vectors @ self._profile(row.indices[row.indices < n], None))
        scores = np.vstack(out)
        return scores if items is None else scores[:, np.asarray(items)]

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return self.vectors @ self._profile(np.asarray(items), weights)

    def add_items(self, item_ids: list[str], side: Dataset) -> None:
        vectors = self._encode(side, item_ids)
        for item, vector in zip(item_ids, vectors, strict=True):
            if item in self.item_map:
                self.vectors[self.item_map.index(item)] = vector
            else:
                self.item_map.add(item)
                self.vectors = np.vstack([self.vectors, vector[None, :]])

    def item_vectors(self) -> np.ndarray | None:
        return self.vectors

    def _state(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.vectors = arrays["vectors"].astype(np.float32)


def train_content(tmp_path: Path, url: str) -> Path:
    with Store(url) as store:
        dataset = store.load_dataset(DATASET)
    from kinrec.data.splits import random_split

    split = random_split(dataset, seed=1)
    model = ToyContent().fit(split.train, side=dataset)
    out = tmp_path / "model-content"
    model.save(out, extra_files={"split.json": json.dumps({"dataset": DATASET})})
    return out
