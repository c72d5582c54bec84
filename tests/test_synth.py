"""Synthetic datasets (``kinrec.data.synth``, ``kinrec data synth``): seeded, the sizes asked
for, readable as a split folder, and every view (interactions, text, knowledge graph) carries
the latent structure it was drawn from."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from kinrec.cli import app
from kinrec.data.loaders import load_split_dir
from kinrec.data.synth import check_sizes, generate

runner = CliRunner()
USERS, ITEMS, INTERACTIONS = 300, 200, 6000
TOLERANCE = 0.03  # the documented "within a few percent"


def _read(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", dtype=str)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def _index(ids: pd.Series) -> np.ndarray:
    """``i17`` -> 17 (items), ``u3`` -> 3 (users), ``e5`` -> 5 (item entities)."""
    return ids.str[1:].astype(np.int64).to_numpy()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("synth")
    return generate(folder, users=USERS, items=ITEMS, interactions=INTERACTIONS, seed=7)


@pytest.fixture(scope="module")
def synth_new(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("synth-new")
    return generate(
        folder, users=USERS, items=ITEMS, interactions=INTERACTIONS, seed=7, new_items=0.1
    )


def _train_matrix(folder: Path, name: str = "synth") -> sp.csr_matrix:
    train = _read(folder / f"{name}.train.inter")
    rows, cols = _index(train["user_id"]), _index(train["item_id"])
    return sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(rows.max() + 1, ITEMS), dtype=np.float64
    )


def _cosine(folder: Path) -> np.ndarray:
    """Item-item cosine of the train rows (co-occurrence beyond popularity), zero diagonal."""
    x = _train_matrix(folder)
    co = (x.T @ x).toarray()
    counts = np.diag(co).copy()
    np.fill_diagonal(co, 0)
    return co / np.sqrt(np.outer(counts, counts))


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    sizes = {"users": 120, "items": 100, "interactions": 2400}
    a = generate(tmp_path / "a", seed=3, new_items=0.1, **sizes)
    b = generate(tmp_path / "b", seed=3, new_items=0.1, **sizes)
    c = generate(tmp_path / "c", seed=4, new_items=0.1, **sizes)
    assert [p.name for p in a.files] == [p.name for p in b.files] == [p.name for p in c.files]
    for pa, pb in zip(a.files, b.files, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    differing = [
        pa.name
        for pa, pc in zip(a.files, c.files, strict=True)
        if pa.read_bytes() != pc.read_bytes()
    ]
    assert {"synth.train.inter", "synth.item", "synth.kg"} <= set(differing)


@pytest.mark.parametrize(
    ("users", "items", "interactions"),
    [(300, 200, 6000), (100, 200, 4000), (1000, 500, 40000), (500, 2000, 12000)],
)
def test_sizes_as_asked(tmp_path: Path, users: int, items: int, interactions: int) -> None:
    result = generate(tmp_path, users=users, items=items, interactions=interactions)
    assert abs(result.interactions - interactions) <= TOLERANCE * interactions
    assert result.rows["users"] == users
    assert result.rows["items"] == items
    parts = {p: _read(tmp_path / f"synth.{p}.inter") for p in ("train", "valid", "test")}
    assert sum(len(f) for f in parts.values()) == result.interactions
    # every item of the catalogue has train rows; no user holds an item twice
    assert parts["train"]["item_id"].nunique() == items
    every = pd.concat(parts.values())
    assert not every.duplicated(["user_id", "item_id"]).any()
    assert every.groupby("user_id").size().min() >= 3


def test_time_ordered_80_10_10_per_user(synth) -> None:
    frames = []
    for label in ("train", "valid", "test"):
        frame = _read(synth.folder / f"synth.{label}.inter")
        frame["part"], frame["t"] = label, frame["timestamp"].astype(np.int64)
        frames.append(frame)
    rows = pd.concat(frames)
    for _, user in rows.groupby("user_id"):
        t = {p: user.loc[user["part"] == p, "t"] for p in ("train", "valid", "test")}
        assert t["train"].max() < t["valid"].min() <= t["valid"].max() < t["test"].min()
        n = len(user)
        held = max(1, int(np.floor(n * 0.1 + 0.5)))
        assert len(t["test"]) == held and len(t["valid"]) == held


def test_the_split_loader_reads_every_file(synth) -> None:
    split = load_split_dir(synth.folder)
    ds = split.dataset
    assert len(ds.all_item_ids()) == ITEMS
    assert ds.text_fields == ["title"]
    assert len(ds.links) == ITEMS
    assert set(ds.triples["relation"]) == {"has_genre", "created_by", "released_in", "tagged"}
    assert ds.new_items == []
    n_rows = sum(len(part.users) for part in (split.train, split.valid, split.test))
    assert n_rows == synth.interactions


def _gini(counts: np.ndarray) -> float:
    c = np.sort(counts)
    n = len(c)
    return float((2 * np.arange(1, n + 1) - n - 1) @ c / (n * c.sum()))


def test_popularity_is_skewed(synth) -> None:
    counts = np.asarray(_train_matrix(synth.folder).sum(axis=0)).ravel()
    # the same number of events spread uniformly over the catalogue, for comparison
    uniform = np.bincount(
        np.random.default_rng(0).integers(0, ITEMS, int(counts.sum())), minlength=ITEMS
    )
    assert _gini(counts) > 3 * _gini(uniform)
    top_tenth = np.sort(counts)[::-1][: ITEMS // 10].sum() / counts.sum()
    assert top_tenth > 2 * 0.1


def test_cooccurrences_carry_the_topics(synth) -> None:
    co = _cosine(synth.folder)
    topic = synth.item_topic
    same = topic[:, None] == topic[None, :]
    np.fill_diagonal(same, False)
    off = ~same
    np.fill_diagonal(off, False)
    assert co[same].mean() > 1.5 * co[off].mean()


def _title_tokens(folder: Path) -> list[set[str]]:
    items = _read(folder / "synth.item")
    assert (_index(items["item_id"]) == np.arange(ITEMS)).all()
    words = items["title"].str.split().str.len()
    assert words.between(4, 7).all()
    return [set(title.lower().split()) for title in items["title"]]


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def test_item_text_carries_the_topic(synth) -> None:
    tokens = _title_tokens(synth.folder)
    topic = synth.item_topic
    same, other = [], []
    for i, j in combinations(range(ITEMS), 2):
        (same if topic[i] == topic[j] else other).append(_jaccard(tokens[i], tokens[j]))
    assert np.mean(same) > 3 * np.mean(other)


def test_items_used_together_read_alike(synth) -> None:
    """Without the truth: items that share users (beyond their popularity) have more similar
    titles than others."""
    tokens = _title_tokens(synth.folder)
    co = _cosine(synth.folder)
    threshold = np.quantile(co[np.triu_indices(ITEMS, 1)], 0.9)
    close, rest = [], []
    for i, j in combinations(range(ITEMS), 2):
        (close if co[i, j] >= threshold else rest).append(_jaccard(tokens[i], tokens[j]))
    assert np.mean(close) > 2 * np.mean(rest)


def _sharing_pairs(triples: pd.DataFrame, relation: str) -> tuple[np.ndarray, np.ndarray]:
    """Item pairs (i < j) that share a tail entity of ``relation``."""
    rel = triples[triples["relation_id"] == relation]
    heads = _index(rel["head_id"])
    left, right = [], []
    for _, group in pd.Series(heads).groupby(rel["tail_id"].to_numpy()):
        members = np.sort(group.to_numpy())
        for i, j in combinations(members, 2):
            left.append(i)
            right.append(j)
    return np.array(left, dtype=np.int64), np.array(right, dtype=np.int64)


def test_knowledge_graph_carries_the_topic_and_its_noise_does_not(synth) -> None:
    triples = _read(synth.folder / "synth.kg")
    links = _read(synth.folder / "synth.link")
    assert (_index(links["item_id"]) == _index(links["entity_id"])).all()
    co = _cosine(synth.folder)
    upper = co[np.triu_indices(ITEMS, 1)].mean()  # any two items

    def lift(relation: str) -> float:
        left, right = _sharing_pairs(triples, relation)
        assert len(left) > 0, relation
        return co[left, right].mean() / upper

    creator, genre, year, tag = (
        lift(r) for r in ("created_by", "has_genre", "released_in", "tagged")
    )
    # items sharing a creator (a small group of one topic) or a genre co-occur more than
    # any two items; items sharing a year or a tag (noise) about as often as any two
    assert creator > 2 and genre > 1.4
    assert 0.8 < year < 1.2 and 0.8 < tag < 1.2
    # genres follow the topic with some noise; creators never cross a topic
    rel = triples[triples["relation_id"] == "has_genre"]
    genre_topic = rel["tail_id"].str.extract(r"genre(\d+)_")[0].astype(int).to_numpy()
    agree = (genre_topic == synth.item_topic[_index(rel["head_id"])]).mean()
    assert 0.75 < agree < 0.98
    left, right = _sharing_pairs(triples, "created_by")
    assert (synth.item_topic[left] == synth.item_topic[right]).all()


def test_new_items_have_no_train_rows_and_are_listed(synth_new) -> None:
    folder = synth_new.folder
    cold = (folder / "synth.cold_items.txt").read_text().split()
    assert len(cold) == round(0.1 * ITEMS) == len(synth_new.new_items)
    parts = {p: _read(folder / f"synth.{p}.inter") for p in ("train", "valid", "test")}
    assert not parts["train"]["item_id"].isin(cold).any()
    assert not parts["valid"]["item_id"].isin(cold).any()
    assert parts["test"]["item_id"].isin(cold).sum() > 0.05 * len(parts["test"])
    # every other item is trained on, every user has train rows, the catalogue is complete
    warm = set(_read(folder / "synth.item")["item_id"]) - set(cold)
    assert set(parts["train"]["item_id"]) == warm
    assert set(parts["test"]["user_id"]) <= set(parts["train"]["user_id"])
    split = load_split_dir(folder)
    assert sorted(split.dataset.new_items) == sorted(cold)
    assert len(split.dataset.all_item_ids()) == ITEMS
    # a user's new-item events come after all their other events
    test = parts["test"].assign(t=parts["test"]["timestamp"].astype(np.int64))
    last_train = parts["train"].assign(t=parts["train"]["timestamp"].astype(np.int64))
    last = last_train.groupby("user_id")["t"].max()
    new_rows = test[test["item_id"].isin(cold)]
    assert (new_rows["t"].to_numpy() > last.loc[new_rows["user_id"]].to_numpy()).all()


def test_cli_writes_a_split_that_benchmarks(tmp_path: Path) -> None:
    out = tmp_path / "split"
    args = ["data", "synth", "--users", "300", "--items", "200", "--interactions", "6000"]
    res = runner.invoke(app, [*args, "--out", str(out), "--seed", "5", "--name", "toy"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "toy.item",
        "toy.kg",
        "toy.link",
        "toy.test.inter",
        "toy.train.inter",
        "toy.valid.inter",
    ]
    res = runner.invoke(
        app, ["benchmark", "--split-dir", str(out), "--models", "pop,itemknn", "--json"]
    )
    assert res.exit_code == 0, res.output
    records = {r["model"]: r for r in map(json.loads, res.stdout.splitlines())}
    # co-occurrences carry the users' topics: item-item beats popularity
    assert records["itemknn"]["ndcg@10"] > records["pop"]["ndcg@10"]


def test_cli_new_items_and_no_side_files(tmp_path: Path) -> None:
    out = tmp_path / "split"
    sizes = ["--users", "300", "--items", "200", "--interactions", "6000", "--out", str(out)]
    res = runner.invoke(app, ["data", "synth", *sizes, "--new-items", "0.2"])
    assert res.exit_code == 0, res.output
    assert len((out / "synth.cold_items.txt").read_text().split()) == 40
    # a second run into the same folder without new items leaves no stale list behind
    res = runner.invoke(app, ["data", "synth", *sizes, "--no-text", "--no-kg"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "synth.test.inter",
        "synth.train.inter",
        "synth.valid.inter",
    ]


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        (["--users", "10", "--items", "40", "--interactions", "500"], "cannot fit"),
        (["--users", "10", "--items", "40", "--interactions", "200"], "too dense"),
        (["--users", "10", "--items", "40", "--interactions", "0"], "positive"),
        (["--users", "0", "--items", "40", "--interactions", "50"], "positive"),
        (["--users", "100", "--items", "400", "--interactions", "300"], "at least 500"),
        (["--users", "10", "--items", "8", "--interactions", "60"], "at least 20"),
        (["--users", "10", "--items", "40", "--interactions", "60", "--new-items", "1"], "[0, 1)"),
    ],
)
def test_cli_impossible_sizes_are_clear_errors(
    tmp_path: Path, sizes: list[str], message: str
) -> None:
    out = tmp_path / "split"
    res = runner.invoke(app, ["data", "synth", *sizes, "--out", str(out)])
    assert res.exit_code == 2
    assert res.output.startswith("error:") and message in res.output, res.output
    assert not out.exists() or not any(out.iterdir())


def test_cli_refuses_a_folder_holding_another_split(tmp_path: Path) -> None:
    sizes = ["--users", "30", "--items", "40", "--interactions", "300", "--out", str(tmp_path)]
    assert runner.invoke(app, ["data", "synth", *sizes, "--name", "one"]).exit_code == 0
    res = runner.invoke(app, ["data", "synth", *sizes, "--name", "two"])
    assert res.exit_code == 2 and "already holds the split 'one'" in res.output


def test_check_sizes_accepts_the_edges() -> None:
    check_sizes(users=10, items=40, interactions=50)  # five each
    check_sizes(users=10, items=40, interactions=100)  # a quarter of the catalogue each
    with pytest.raises(ValueError, match="too few"):
        check_sizes(users=10, items=40, interactions=49)


def test_train_rows_aims_the_train_part(tmp_path: Path) -> None:
    """The recipe of benchmarks/large_catalogue.py: the train part is aimed at (duplicates
    are not drawn again, so it lands a few percent below), interactions only."""
    result = generate(
        tmp_path, users=7000, items=2500, interactions=77500, train_rows=62000, text=False, kg=False
    )
    assert 0.94 * 62000 <= result.rows["train"] <= 62000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synth.test.inter",
        "synth.train.inter",
        "synth.valid.inter",
    ]
