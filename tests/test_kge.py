"""TransE / RotatE: training lowers the loss, beats random link prediction, is seeded, saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kinrec.data.dataset import INTERACTION_COLUMNS, Dataset, empty_frame
from kinrec.knowledge.graph import KnowledgeGraph, build_graph
from kinrec.knowledge.kge import KGEConfig, KGEmbedding, split_triples

N_ITEMS, N_DIRECTORS, N_GENRES = 120, 12, 4


@pytest.fixture(scope="module")
def graph() -> KnowledgeGraph:
    """Films directed by one of 12 directors; a film's genre is its director's genre."""
    films = [f"f{i}" for i in range(N_ITEMS)]
    triples = []
    for i, film in enumerate(films):
        director = i % N_DIRECTORS
        triples.append((film, "directed_by", f"d{director}"))
        triples.append((film, "has_genre", f"g{director % N_GENRES}"))
    triples += [(f"d{d}", "works_in", f"g{d % N_GENRES}") for d in range(N_DIRECTORS)]
    dataset = Dataset(
        name="films",
        interactions=empty_frame(INTERACTION_COLUMNS),
        items=pd.DataFrame({"item_id": [str(i) for i in range(N_ITEMS)]}),
        triples=pd.DataFrame(triples, columns=["head", "relation", "tail"]),
        links=pd.DataFrame({"item_id": [str(i) for i in range(N_ITEMS)], "entity_id": films}),
    )
    return build_graph(dataset)


def small(model: str, **kw: object) -> KGEConfig:
    params = dict(
        dim=16, gamma=4.0, negatives=16, negative_chunk=16, batch_size=64, epochs=40, lr=0.02
    )
    return KGEConfig(model=model, **{**params, **kw})


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_split_keeps_test_entities_in_train_and_drops_mirrors() -> None:
    triples = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 2], [2, 0, 3], [3, 1, 2], [1, 0, 3]] * 1)
    triples = np.concatenate([triples, np.array([[i, 0, i + 1] for i in range(4, 40)])])
    train, test = split_triples(triples, fraction=0.3, seed=1)
    assert len(test) > 0
    assert len(train) + len(test) <= len(triples)
    train_entities = set(train[:, 0]) | set(train[:, 2])
    assert set(test[:, 0]) <= train_entities and set(test[:, 2]) <= train_entities
    test_pairs = {(h, t) for h, _, t in test.tolist()}
    assert not any((t, h) in test_pairs for h, _, t in train.tolist())
    assert not {tuple(x) for x in test.tolist()} & {tuple(x) for x in train.tolist()}


@pytest.mark.parametrize("model", ["transe", "rotate"])
def test_training_lowers_loss_and_beats_random(graph: KnowledgeGraph, model: str) -> None:
    train, test = split_triples(graph.triples, fraction=0.15, seed=0)
    calls: list[tuple[str, int, int]] = []
    kge = KGEmbedding(small(model)).fit(
        graph, train, progress=lambda phase, step, total, _: calls.append((phase, step, total))
    )
    losses = kge.fit_info["losses"]
    assert calls == [("kge", e + 1, 40) for e in range(40)]
    assert losses[-1] < 0.6 * losses[0]
    result = kge.evaluate(test, known=graph.triples)
    assert result["queries"] == 2 * len(test)
    assert result["mrr"] > 3 * result["random_mrr"]
    assert result["hits@10"] > result["random_hits@10"]
    emb = kge.item_embeddings()
    assert emb.shape == (N_ITEMS, 16 if model == "transe" else 32)
    # Films of the same director end up closer than films of different directors.
    same = np.mean([np.abs(emb[i] - emb[i + N_DIRECTORS]).sum() for i in range(N_DIRECTORS)])
    other = np.mean([np.abs(emb[i] - emb[i + 1]).sum() for i in range(N_DIRECTORS)])
    assert same < other


def test_margin_loss_trains(graph: KnowledgeGraph) -> None:
    kge = KGEmbedding(small("transe", loss="margin", epochs=15)).fit(graph)
    assert kge.fit_info["losses"][-1] < 0.6 * kge.fit_info["losses"][0]


def test_seeded_and_deterministic(graph: KnowledgeGraph) -> None:
    a = KGEmbedding(small("rotate", epochs=3)).fit(graph)
    b = KGEmbedding(small("rotate", epochs=3)).fit(graph)
    c = KGEmbedding(small("rotate", epochs=3, seed=7)).fit(graph)
    assert np.array_equal(a.entity_embeddings(), b.entity_embeddings())
    assert a.fit_info["losses"] == b.fit_info["losses"]
    assert not np.array_equal(a.entity_embeddings(), c.entity_embeddings())


def test_random_baseline_is_the_exact_expectation(graph: KnowledgeGraph) -> None:
    kge = KGEmbedding(small("transe", epochs=1)).fit(graph)
    test = graph.triples[:5]
    result = kge.evaluate(test, known=test)  # nothing else to filter: all entities compete
    n = graph.n_entities
    assert result["random_mrr"] == pytest.approx(sum(1 / k for k in range(1, n + 1)) / n)
    assert result["random_hits@10"] == pytest.approx(10 / n)


def test_filtering_removes_other_true_answers(graph: KnowledgeGraph) -> None:
    kge = KGEmbedding(small("transe", epochs=1)).fit(graph)
    # (f0, has_genre, g0): tail query filters nothing else; head query (?, has_genre, g0)
    # filters the other 29 films of genre 0.
    idx = graph.entities.index
    triple = np.array([[idx("item:0"), graph.relations.index("has_genre"), idx("g0")]])
    result = kge.evaluate(triple, known=graph.triples)
    n = graph.n_entities
    expected = (sum(1 / k for k in range(1, n + 1)) / n) / 2 + (
        sum(1 / k for k in range(1, n - 28)) / (n - 29)
    ) / 2
    assert result["random_mrr"] == pytest.approx(expected)


def test_save_load_round_trip(tmp_path: Path, graph: KnowledgeGraph) -> None:
    kge = KGEmbedding(small("rotate", epochs=2)).fit(graph)
    kge.save(tmp_path / "kge")
    loaded = KGEmbedding.load(tmp_path / "kge")
    assert loaded.config == kge.config
    assert loaded.entities.ids() == graph.entities.ids()
    assert np.array_equal(loaded.item_embeddings(), kge.item_embeddings())
    assert np.array_equal(loaded.trained, kge.trained)
    h, r, t = graph.triples[:10].T
    assert np.array_equal(loaded.score(h, r, t), kge.score(h, r, t))
    assert loaded.evaluate(graph.triples[:10], graph.triples) == kge.evaluate(
        graph.triples[:10], graph.triples
    )
    assert loaded.fit_info["losses"] == kge.fit_info["losses"]


def test_items_without_training_triples_get_zero_vectors(graph: KnowledgeGraph) -> None:
    film0 = graph.item_index("0")
    keep = (graph.triples[:, 0] != film0) & (graph.triples[:, 2] != film0)
    kge = KGEmbedding(small("transe", epochs=1)).fit(graph, graph.triples[keep])
    emb = kge.item_embeddings()
    assert not emb[film0].any() and emb[1].any()
    assert kge.item_embeddings(zero_untrained=False)[film0].any()


def test_unfitted_model_refuses_and_empty_test_is_an_error(graph: KnowledgeGraph) -> None:
    with pytest.raises(RuntimeError, match="fit"):
        KGEmbedding().item_embeddings()
    kge = KGEmbedding(small("transe", epochs=1)).fit(graph)
    with pytest.raises(ValueError, match="no test triples"):
        kge.evaluate(graph.triples[:0], graph.triples)
