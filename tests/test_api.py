"""The Python API (``kinrec.load_dataset`` ... ``kinrec.register_model``) on small data.

Two fixtures: the themed catalogue of ``test_transfer`` (space films and cooking shows, with
text, a ``genre`` attribute and a knowledge graph), and a synthetic split folder
(``kinrec.data.synth``) with enough users for choices on validation to mean something."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_loaders import atomic_fixture, ml1m_fixture, unisrec_fixture
from test_transfer import _dataset, _new_space_item

import kinrec
from kinrec.data.dataset import Dataset, Split
from kinrec.data.synth import generate
from kinrec.evaluation.benchmark import fit_with_validation, run_one
from kinrec.evaluation.history_prior import STRENGTHS
from kinrec.models import registry
from kinrec.models.base import ModelConfig, Recommender, Scored
from kinrec.models.prior import PRIOR_GRID
from kinrec.models.registry import create_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def themes() -> tuple[Dataset, Split]:
    return _dataset()


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Split:
    folder = tmp_path_factory.mktemp("synth")
    generate(folder, users=300, items=200, interactions=8000, seed=1)
    return kinrec.load_split(folder)


@pytest.fixture(scope="module")
def ease(synth: Split) -> Recommender:
    return kinrec.fit("ease", synth)


def _ids(recs: list[Scored]) -> list[str]:
    return [s.item_id for s in recs]


def _ranked(model: Recommender, scores: np.ndarray, masked, k: int) -> list[Scored]:
    """The top ``k`` of ``scores`` with the items ``masked`` (indices) left out, by hand."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[np.asarray(masked, dtype=np.int64)] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    return [Scored(model.item_map.ids([i])[0], float(scores[i])) for i in top]


def _same(got: list[Scored], want: list[Scored]) -> None:
    assert _ids(got) == _ids(want)
    np.testing.assert_allclose([s.score for s in got], [s.score for s in want], rtol=1e-5)


# ------------------------------------------------------------------------------ loading
def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _frame(dataset: Dataset) -> list[tuple[str, str]]:
    inter = dataset.interactions
    return list(zip(inter["user_id"], inter["item_id"], strict=True))


def test_load_dataset_reads_every_format_the_cli_takes(tmp_path: Path, monkeypatch) -> None:
    from kinrec.cli import _load_for_ingest

    def cli(source: Path | str, fmt: str = "recbole") -> Dataset:
        return _load_for_ingest(str(source), fmt, None, None, None, None, None, None)

    atomic = atomic_fixture(_folder(tmp_path / "atomic"))
    toy = kinrec.load_dataset(atomic)
    assert toy.name == "toy" and _frame(toy) == _frame(cli(atomic))
    assert _frame(toy) == [("1", "i1"), ("1", "i2"), ("2", "i1"), ("2", "i3")]
    assert "class" in toy.attribute_fields and len(toy.triples) == 2
    assert _frame(kinrec.load_dataset(str(atomic))) == _frame(toy)  # str or Path

    ml1m = ml1m_fixture(_folder(tmp_path / "ml1m"))
    movies = kinrec.load_dataset(ml1m, "ml-1m")
    assert _frame(movies) == _frame(cli(ml1m, "ml-1m")) == [("1", "10"), ("1", "20"), ("2", "10")]

    unisrec = unisrec_fixture(_folder(tmp_path / "unisrec"))
    sequences = kinrec.load_dataset(unisrec, format="unisrec")
    assert _frame(sequences) == _frame(cli(unisrec, "unisrec")) and len(sequences.interactions)

    (tmp_path / "events.csv").write_text("user_id,item_id\nu1,a\nu2,b\nu2,a\n")
    (tmp_path / "items.csv").write_text("item_id,title\na,Apple\nb,Bread\n")
    toml = tmp_path / "shop.toml"
    toml.write_text(
        'name = "shop"\n[interactions]\npath = "events.csv"\n'
        '[items]\npath = "items.csv"\ntext = ["title"]\n'
    )
    shop = kinrec.load_dataset(toml)  # a .toml file is a table mapping
    assert shop.name == "shop" and _frame(shop) == [("u1", "a"), ("u2", "b"), ("u2", "a")]
    assert shop.text_fields == ["title"]

    # a registered name: the registry's sources, here its local folder
    atomic_fixture(_folder(tmp_path / "data" / "ml-100k"), name="ml-100k")
    monkeypatch.setenv("KINREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KINREC_CACHE_DIR", str(tmp_path / "cache"))
    named = kinrec.load_dataset("ml-100k")
    assert named.name == "ml-100k" and _frame(named) == _frame(toy)

    renamed = kinrec.load_dataset(atomic, name="mine", text_template="{movie_title}[ ({class})]")
    assert renamed.name == "mine" and renamed.text_template == "{movie_title}[ ({class})]"
    with pytest.raises(ValueError, match="nosuch"):
        kinrec.load_dataset(atomic, text_template="{nosuch}")
    with pytest.raises(KeyError, match=r"'ml-10k' is neither a registered dataset.*ml-100k"):
        kinrec.load_dataset("ml-10k")
    with pytest.raises(FileNotFoundError, match="missing"):
        kinrec.load_dataset(tmp_path / "missing", format="ml-1m")


def test_load_split_reads_a_split_folder(synth: Split, tmp_path: Path) -> None:
    assert len(synth.train) > 5 * len(synth.valid) > 0 and len(synth.test) > 0
    assert synth.dataset is not None and synth.dataset.text_fields == ["title"]
    assert synth.valid.item_map is synth.train.item_map  # one vocabulary for the three parts
    with pytest.raises(FileNotFoundError, match="not a folder"):
        kinrec.load_split(tmp_path / "nothing")


def test_split_methods_and_options(themes) -> None:
    dataset, _ = themes
    rows = len(dataset.interactions)
    half = kinrec.split(dataset, ratios=(0.5, 0.25, 0.25), seed=1)
    assert len(half.train) + len(half.valid) + len(half.test) == rows
    assert abs(len(half.train) - rows / 2) <= dataset.interactions["user_id"].nunique()
    again = kinrec.split(dataset, ratios=(0.5, 0.25, 0.25), seed=1)
    other = kinrec.split(dataset, ratios=(0.5, 0.25, 0.25), seed=2)
    assert np.array_equal(half.train.items, again.train.items)
    assert not np.array_equal(half.train.items, other.train.items)
    assert half.dataset is dataset  # the side information travels with the split

    last = kinrec.split(dataset, "leave-one-out")
    assert np.bincount(last.test.users).max() == 1
    stamps = dataset.interactions.groupby("user_id")["timestamp"].max()
    test_stamps = last.test.timestamps
    users = last.test.user_map.ids(last.test.users)
    assert all(stamps[u] == t for u, t in zip(users, test_stamps, strict=True))

    timed = kinrec.split(dataset, "temporal")
    assert timed.train.timestamps.max() <= timed.test.timestamps.min()

    cold = kinrec.split(dataset, "cold-item", cold_fraction=0.25)
    eligible = int((dataset.interactions["item_id"].value_counts() >= 5).sum())
    new = set(cold.dataset.new_items)
    assert len(new) == round(0.25 * eligible) > 0
    assert not new & set(cold.train.item_map.ids(cold.train.items))  # held out of train
    assert new <= set(cold.test.item_map.ids(cold.test.items))

    with pytest.raises(ValueError, match="load_split"):
        kinrec.split(dataset, "predefined")
    with pytest.raises(ValueError, match="sum to 1"):
        kinrec.split(dataset, ratios=(0.5, 0.5, 0.5))
    with pytest.raises(TypeError, match="Dataset"):
        kinrec.split(_dataset()[1])


# ------------------------------------------------------------------------------ fitting
def test_fit_uses_the_validation_part_as_fit_with_validation_does(synth: Split) -> None:
    by_name = kinrec.fit("itemknn", synth)
    reference = fit_with_validation(create_model("itemknn"), synth)
    by_parts = kinrec.fit("itemknn", synth.train, synth.valid, side=synth.dataset)
    instance = kinrec.fit(create_model("itemknn"), synth)
    users = np.arange(synth.n_users)
    for model in (by_name, by_parts, instance):
        np.testing.assert_array_equal(model.score(users), reference.score(users))
        assert model.history_prior_strength == reference.history_prior_strength
        assert (
            model.fit_info["history_prior"]["search"]
            == (reference.fit_info["history_prior"]["search"])
        )
        assert model.fit_info["best_valid_ndcg@10"] == reference.fit_info["best_valid_ndcg@10"]
    # the new-user prior was chosen on validation: every strength tried, the best kept, and
    # on this data it is not the default (no prior)
    search = by_name.fit_info["history_prior"]["search"]
    assert list(search) == [f"{c:g}" for c in STRENGTHS]
    assert by_name.history_prior_strength == float(max(search, key=search.get))
    assert by_name.history_prior_strength > 0
    # without a validation part nothing is chosen
    alone = kinrec.fit("itemknn", synth.train, side=synth.dataset)
    assert "history_prior" not in alone.fit_info and "best_valid_ndcg@10" not in alone.fit_info
    assert alone.history_prior_strength == 0.0

    configured = kinrec.fit("itemknn", synth, params={"k": 5})
    assert configured.config.k == 5
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        kinrec.fit("itemknn", synth, params={"k": 0})
    with pytest.raises(ValueError, match="params configure a model given by name"):
        kinrec.fit(create_model("itemknn"), synth, params={"k": 5})
    with pytest.raises(ValueError, match="carries its validation part"):
        kinrec.fit("itemknn", synth, synth.valid)
    other = _dataset()[1]
    with pytest.raises(ValueError, match="vocabularies"):
        kinrec.fit("itemknn", synth.train, other.valid)
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        kinrec.fit("nope", synth)


def test_kinformer_chooses_its_weights_on_validation(themes, tmp_path: Path) -> None:
    """The one kinformer fit of this file (about ten seconds on two cores)."""
    _, split = themes
    epochs: list[int] = []
    model = kinrec.fit(
        "kinformer",
        split,
        params={"max_epochs": 3, "batch_size": 64, "dim": 16},
        progress=lambda phase, step, total, values: epochs.append(step),
    )
    info = model.fit_info
    assert epochs and info["epochs_run"] == 3 and "best_valid_ndcg@10" in info
    prior = info["prior_weight_search"]
    assert list(prior) == [str(w) for w in PRIOR_GRID]
    assert model.prior_weight == float(max(prior, key=prior.get))
    assert info["linear_search"] and model.linear_weight in model.LINEAR_GRID
    assert info["history_prior"]["search"]
    # chosen, not left at the grids' first values (what fitting without validation keeps)
    assert (model.prior_weight, model.linear_weight) != (PRIOR_GRID[0], model.LINEAR_GRID[0])

    # a history through the model's own fold-in, lifted through the graph and blended with
    # popularity as chosen on validation
    history = {"space0I": 1.0, "space1I": 0.5, "space2II": 1.0}
    items = model.item_map.indices(history)
    weights = np.array(list(history.values()), dtype=np.float32)
    order = np.argsort(items)
    want = _ranked(model, model.score_new_user(items[order], weights[order]), items, 5)
    _same(kinrec.recommend(model, history=history, k=5), want)
    kinrec.save(model, tmp_path / "kinformer")
    loaded = kinrec.load(tmp_path / "kinformer")
    _same(kinrec.recommend(loaded, history=history, k=5), want)
    _same(kinrec.recommend(loaded, user="u3", k=5), model.recommend("u3", k=5))


# ------------------------------------------------------------------------------ recommending
def test_recommend_for_a_user_is_the_models_ranking(ease: Recommender, synth: Split) -> None:
    user = synth.train.user_map.ids([7])[0]
    seen = ease.seen[7].indices
    _same(kinrec.recommend(ease, user, k=10), ease.recommend(user, k=10))
    _same(kinrec.recommend(ease, user=user, k=10), _ranked(ease, ease.score([7])[0], seen, 10))
    everything = kinrec.recommend(ease, user=user, k=10, exclude_seen=False)
    _same(everything, _ranked(ease, ease.score([7])[0], [], 10))
    assert set(_ids(everything)) & set(ease.item_map.ids(seen))
    assert len(kinrec.recommend(ease, user=user, k=10_000)) == synth.n_items - len(seen)


def test_recommend_for_a_history_scores_as_the_service_does(ease: Recommender) -> None:
    ids = ["i3", "i17", "i40"]
    items = ease.item_map.indices(ids)
    kept = ease.history_prior_strength, ease.profile_graph_lift
    ease.profile_graph_lift = 0.0  # the prior alone here (the graph's lift: test_kg_profiles)
    try:
        wanted = []
        for strength in (0.0, 4.0):  # without and with the popularity prior
            ease.history_prior_strength = strength
            blended = ease.blend_history_prior(ease.score_history(np.sort(items)), len(items))
            wanted.append(want := _ranked(ease, blended, items, 10))
            _same(kinrec.recommend(ease, history=ids, k=10), want)
            _same(kinrec.recommend(ease, history=[*ids, "i3"], k=10), want)  # once each
        assert _ids(wanted[0]) != _ids(wanted[1])  # the prior moves this history's list
        ease.history_prior_strength = 0.0
        weights = {"i3": 1.0, "i17": 0.25, "i40": 2.0}
        order = np.argsort(items)
        raw = ease.score_history(items[order], np.array([1.0, 0.25, 2.0])[order])
        _same(kinrec.recommend(ease, history=weights, k=10), _ranked(ease, raw, items, 10))
        assert _ids(kinrec.recommend(ease, history=weights, k=10)) != _ids(
            kinrec.recommend(ease, history=ids, k=10)
        )
    finally:
        ease.history_prior_strength, ease.profile_graph_lift = kept
    with_seen = kinrec.recommend(ease, history=ids, k=200, exclude_seen=False)
    assert set(ids) <= set(_ids(with_seen))
    # no history at all: the most popular items
    counts = np.asarray(ease.seen.sum(axis=0)).ravel()
    assert [s.score for s in kinrec.recommend(ease, history=[], k=5)] == sorted(counts)[::-1][:5]


def test_recommend_filters(themes) -> None:
    dataset, split = themes
    model = kinrec.fit("itemknn", split.train, side=dataset)
    full = kinrec.recommend(model, user="u1", k=30)
    allow = [full[4].item_id, full[1].item_id, "food0I"]
    allowed = kinrec.recommend(model, user="u1", k=30, allow=allow)
    assert _ids(allowed) == [s.item_id for s in full if s.item_id in allow]
    denied = kinrec.recommend(model, user="u1", k=5, deny=_ids(full[:2]))
    assert _ids(denied) == _ids(full[2:7])

    genre = dict(zip(dataset.items["item_id"], dataset.items["genre"], strict=True))
    space = kinrec.recommend(model, history=["space0I"], k=30, category="genre:SciFi")
    assert space and {genre[s.item_id] for s in space} == {("SciFi",)}
    cooking = kinrec.recommend(model, user="u1", k=30, category="cooking")  # any field, case
    assert cooking and {genre[s.item_id] for s in cooking} == {("Cooking",)}
    both = kinrec.recommend(model, user="u1", k=30, category="Cooking", deny=["food0I"])
    assert _ids(both) == [s.item_id for s in cooking if s.item_id != "food0I"]
    assert kinrec.recommend(model, user="u1", category="Horror") == []

    # attribute fields named like a Python keyword (ml-100k's ``class``) filter too
    classed = dataset.items.rename(columns={"genre": "class"})
    renamed = Dataset("classes", dataset.interactions, items=classed, attribute_fields=["class"])
    got = kinrec.recommend(model, user="u1", k=30, category="class:SciFi", catalog=renamed)
    assert got and _ids(got) == _ids(kinrec.recommend(model, user="u1", k=30, category="SciFi"))


def test_recommend_after_load_needs_the_catalog_for_categories(themes, tmp_path: Path) -> None:
    dataset, split = themes
    model = kinrec.fit("itemknn", split.train, side=dataset)
    path = kinrec.save(model, tmp_path / "itemknn")
    loaded = kinrec.load(path)
    assert type(loaded) is type(model)
    assert kinrec.recommend(loaded, user="u2") == kinrec.recommend(model, user="u2")
    assert kinrec.recommend(loaded, history=["food1I"]) == kinrec.recommend(
        model, history=["food1I"]
    )
    with pytest.raises(ValueError, match="pass catalog="):
        kinrec.recommend(loaded, user="u2", category="SciFi")
    assert kinrec.recommend(loaded, user="u2", category="SciFi", catalog=dataset) == (
        kinrec.recommend(model, user="u2", category="SciFi")
    )


def test_recommend_rejects_bad_input(themes) -> None:
    _, split = themes
    model = kinrec.fit("pop", split.train)
    with pytest.raises(ValueError, match="not both"):
        kinrec.recommend(model, user="u1", history=["space0I"])
    with pytest.raises(ValueError, match="give either user="):
        kinrec.recommend(model)
    with pytest.raises(KeyError, match="unknown user id 'ghost'"):
        kinrec.recommend(model, user="ghost")
    with pytest.raises(KeyError, match="unknown item id 'nope' \\(history\\)"):
        kinrec.recommend(model, history=["space0I", "nope"])
    with pytest.raises(KeyError, match="unknown item id 'gone' \\(allow\\)"):
        kinrec.recommend(model, user="u1", allow=["gone"])
    with pytest.raises(KeyError, match="unknown item id 'gone' \\(deny\\)"):
        kinrec.recommend(model, user="u1", deny=["gone"])
    for k in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            kinrec.recommend(model, user="u1", k=k)
    with pytest.raises(TypeError, match="not one string"):
        kinrec.recommend(model, history="space0I")
    with pytest.raises(ValueError, match="weights must be positive"):
        kinrec.recommend(model, history={"space0I": -1.0})
    with pytest.raises(TypeError, match="user must be an id"):
        kinrec.recommend(model, user=3)
    with pytest.raises(RuntimeError, match="call fit"):
        kinrec.recommend(create_model("pop"), user="u1")


# ------------------------------------------------------------------------------ the rest
def test_similar_items_and_evaluate(ease: Recommender, synth: Split) -> None:
    assert kinrec.similar_items(ease, "i5", k=7) == ease.similar_items("i5", k=7)
    assert "i5" not in _ids(kinrec.similar_items(ease, "i5", k=50))
    with pytest.raises(KeyError, match="unknown item id 'zz'"):
        kinrec.similar_items(ease, "zz")
    with pytest.raises(ValueError, match="k must be"):
        kinrec.similar_items(ease, "i5", k=0)

    result = kinrec.evaluate(ease, synth, ks=(10,))
    record = run_one("ease", synth, seed=ease.config.seed, ks=(10,))
    assert round(result.metrics["ndcg@10"], 6) == record["ndcg@10"]  # as kinrec benchmark
    assert result.n_users == record["n_users"] and result.segments
    sampled = kinrec.evaluate(ease, synth, ks=(10,), users=50)
    assert sampled.n_users == 50
    with pytest.raises(ValueError, match="not fitted on this split"):
        kinrec.evaluate(ease, _dataset()[1])
    with pytest.raises(ValueError, match="positive cut-offs"):
        kinrec.evaluate(ease, synth, ks=(0,))


def test_add_items_makes_new_items_recommendable(themes) -> None:
    dataset, split = themes
    model = kinrec.fit("kg-knn", split.train, side=dataset)
    with pytest.raises(KeyError, match="space9"):
        kinrec.recommend(model, history=["space0I"], allow=["space9"])
    assert kinrec.add_items(model, _new_space_item()) == ["space9"]
    assert kinrec.add_items(model, _new_space_item()) == []  # known now
    got = kinrec.recommend(model, history=["space0I", "space1I"], k=40)
    assert "space9" in _ids(got)
    food = [s for s in got if s.item_id.startswith("food")]
    assert next(s.score for s in got if s.item_id == "space9") > max(s.score for s in food)
    with pytest.raises(KeyError, match=r"not described.*'space8'"):
        kinrec.add_items(model, _new_space_item(), ids=["space8"])
    with pytest.raises(ValueError, match="ease cannot score items"):
        kinrec.add_items(kinrec.fit("ease", split.train), _new_space_item())


# ------------------------------------------------------------------------------ registry
class Counts(Recommender):
    """Every item scored by its training interactions times ``scale``."""

    name = "test-counts"

    class Config(ModelConfig):
        scale: float = 1.0

    def _fit(self, train, valid, validator, progress) -> None:
        counts = np.bincount(train.items, minlength=train.n_items).astype(np.float32)
        self.counts = counts * np.float32(self.config.scale)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        counts = self.counts if items is None else self.counts[items]
        return np.tile(counts, (len(users), 1))

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = arrays["counts"]


@pytest.fixture
def fresh_registry(monkeypatch):
    """Registrations made by a test end with it."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))


@pytest.mark.parametrize("target", [Counts, f"{__name__}:Counts"], ids=["class", "path"])
def test_a_registered_model_is_one_class(target, themes, tmp_path, fresh_registry) -> None:
    _, split = themes
    assert kinrec.register_model is registry.register_model
    kinrec.register_model("test-counts", target)
    assert "test-counts" in registry.available_models()
    assert registry.get_model_class("Test-Counts") is Counts
    made = create_model("test-counts", {"scale": 2.0})
    assert isinstance(made, Counts) and made.config.scale == 2.0
    counts = np.bincount(split.train.items, minlength=split.n_items)
    for model in (kinrec.fit("test-counts", split, params={"scale": 2.0}), kinrec.fit(made, split)):
        top = kinrec.recommend(model, user="u1", k=3, exclude_seen=False)
        assert [s.score for s in top] == [2.0 * c for c in sorted(counts, reverse=True)[:3]]
        seen = set(model.item_map.ids(model.seen[model.user_map.index("u1")].indices))
        assert not seen & set(_ids(kinrec.recommend(model, user="u1", k=20)))
    loaded = kinrec.load(kinrec.save(model, tmp_path / "counts"))  # found again by its name
    assert isinstance(loaded, Counts) and loaded.config.scale == 2.0
    assert kinrec.recommend(loaded, user="u1", k=5) == kinrec.recommend(model, user="u1", k=5)

    with pytest.raises(ValueError, match=r"already registered.*replace=True"):
        kinrec.register_model("test-counts", Counts)
    kinrec.register_model("test-counts", f"{__name__}:Counts", replace=True)
    with pytest.raises(ValueError, match="already registered"):
        kinrec.register_model("ease", Counts)


def test_register_model_refuses_what_it_could_not_find_again(fresh_registry) -> None:
    with pytest.raises(ValueError, match="lower-case word"):
        kinrec.register_model("My Model", Counts)
    with pytest.raises(
        ValueError, match=re.escape("Counts.name is 'test-counts'; set name = 'other'")
    ):
        kinrec.register_model("other", Counts)
    with pytest.raises(TypeError, match="not a subclass"):
        kinrec.register_model("frame", pd.DataFrame)
    with pytest.raises(ValueError, match="not 'module:Class'"):
        kinrec.register_model("dotted", "kinrec.models.ease.EASE")
    kinrec.register_model("lost", f"{__name__}:Missing")  # checked when used
    with pytest.raises(ImportError, match="no 'Missing'"):
        create_model("lost")
    kinrec.register_model("misnamed", "kinrec.models.ease:EASE")
    with pytest.raises(ValueError, match=re.escape("EASE.name is 'ease'; set name = 'misnamed'")):
        create_model("misnamed")


def test_import_kinrec_stays_light() -> None:
    code = (
        "import sys, kinrec\n"
        "assert 'kinrec.api' not in sys.modules and 'torch' not in sys.modules\n"
        "assert {'fit', 'recommend', 'load_dataset'} <= set(dir(kinrec))\n"
        "kinrec.fit\n"
        "assert 'kinrec.api' in sys.modules and 'torch' not in sys.modules\n"
        "try:\n    kinrec.nothing\nexcept AttributeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "has no attribute 'nothing'" in out.stdout
