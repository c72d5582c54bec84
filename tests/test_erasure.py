"""Erasure that reaches the model: EASE forgets users exactly (its weights equal a fit
without them), the service applies it on ``DELETE /v1/users/{id}`` and again after a
restart, models that cannot forget exactly list the erasure as pending in ``/v1/info``, and
``kinrec retrain`` trains them again without the erased users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_serving_support import DATASET, fresh_store, make_store, train
from typer.testing import CliRunner

from kinrec.cli import app as cli
from kinrec.data.dataset import IdMap, Interactions
from kinrec.models.base import ERASED_PREFIX, Recommender
from kinrec.models.bpr import BPRMF
from kinrec.models.ease import EASE
from kinrec.serving import audit, persist
from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine
from kinrec.store import Store

RTOL, ATOL = 1e-5, 1e-6
BPR = {"max_epochs": 5, "embedding_size": 8, "learning_rate": 0.05}


# ------------------------------------------------------------------------ the model alone
def _frame(n_users: int = 120, n_items: int = 60, per_user: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = [
        (f"u{u}", f"i{i}")
        for u in range(n_users)
        for i in rng.choice(n_items, per_user, replace=False)
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def _interactions(frame: pd.DataFrame, n_items: int = 60) -> Interactions:
    """Indexed over the same fixed catalogue (a refit must not lose an item's column)."""
    return Interactions.from_frame(frame, IdMap(), IdMap([f"i{i}" for i in range(n_items)]))


def _assert_same_scores(model: Recommender, refit: Recommender) -> float:
    """Every user of ``refit`` scores the same in both models; the largest difference."""
    users = refit.user_map.ids()
    got = model.score(model.user_map.indices(users))
    want = refit.score(refit.user_map.indices(users))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return float(np.abs(got - want).max())


@pytest.mark.parametrize("solver", ["dense", "sparse"])
def test_ease_forgets_users_as_a_fit_without_them(solver: str) -> None:
    frame = _frame()
    config = {"solver": solver, "neighbours": 15, "reg_weight": 20.0}
    at_once = EASE(config).fit(_interactions(frame))
    one_by_one = EASE(config).fit(_interactions(frame))
    before = at_once.score(at_once.user_map.indices(["u5"]))
    gone = ["u3", "u17", "u90"]
    result = at_once.forget(at_once.user_map.indices(gone))
    assert result.users == 3 and result.exact == ("item-item weights",) and not result.stale
    for user in gone:  # the same, one erasure after another
        one_by_one.forget([one_by_one.user_map.index(user)])
    refit = EASE(config).fit(_interactions(frame[~frame["user_id"].isin(gone)]))
    assert _assert_same_scores(at_once, refit) <= ATOL
    _assert_same_scores(one_by_one, refit)
    assert not np.allclose(before, at_once.score(at_once.user_map.indices(["u5"])))
    # new users: fold-in and the popularity prior read the data without them
    at_once.history_prior_strength = refit.history_prior_strength = 2.0
    history = refit.item_map.indices(["i1", "i7", "i30"])
    np.testing.assert_allclose(
        at_once.score_new_user(history), refit.score_new_user(history), rtol=RTOL, atol=ATOL
    )
    # the forgotten ids are gone from the model: tombstones, no training row
    ids = at_once.user_map.ids()
    assert not set(gone) & set(ids)
    assert sum(i.startswith(ERASED_PREFIX) for i in ids) == 3
    assert at_once.seen[at_once.forgotten].nnz == 0
    assert sorted(at_once.forgotten) == sorted(one_by_one.forgotten)


def test_forgotten_ease_saves_and_loads_without_the_users(tmp_path: Path) -> None:
    frame = _frame()
    model = EASE({"reg_weight": 20.0}).fit(_interactions(frame))
    model.forget([model.user_map.index("u4")])
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert "u4" not in json.loads((tmp_path / "m" / "users.json").read_text())
    assert list(loaded.forgotten) == [model.user_map.ids().index(loaded.user_map.ids()[4])]
    refit = EASE({"reg_weight": 20.0}).fit(_interactions(frame[frame["user_id"] != "u4"]))
    _assert_same_scores(loaded, refit)


def test_a_model_trained_by_gradient_forgets_nothing_exactly() -> None:
    model = BPRMF(BPR).fit(_interactions(_frame()))
    scores = model.score(np.arange(5))
    result = model.forget([2])
    assert result.exact == () and result.stale == ("user and item vectors",)
    np.testing.assert_array_equal(model.score(np.arange(5)), scores)
    assert "u2" in model.user_map and not len(model.forgotten)
    with pytest.raises(IndexError):
        model.forget([10_000])


# ------------------------------------------------------------------------ the service
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("erasure")
    url = make_store(root)
    return {
        "root": root,
        "url": url,
        "ease": train(root, url, "ease"),
        "bpr": train(root, url, "bpr", BPR),
    }


def _client(model_dir: Path, url: str) -> tuple[Engine, TestClient]:
    engine = Engine.open(ServingConfig(model_dir=model_dir, db=url))
    return engine, TestClient(create_app(engine=engine, keyring=None))


def _refit_without(model_dir: Path, user: str) -> EASE:
    """EASE fitted, with the served model's configuration, on its training rows less
    ``user``'s."""
    trained = Recommender.load(model_dir)
    coo = trained.seen.tocoo()
    ids = np.array(trained.user_map.ids(), dtype=object)
    frame = pd.DataFrame(
        {
            "user_id": ids[coo.row],
            "item_id": np.array(trained.item_map.ids(), dtype=object)[coo.col],
        }
    )
    frame = frame[frame["user_id"] != user]
    train = Interactions.from_frame(frame, IdMap(), trained.item_map.copy())
    return EASE(trained.config).fit(train)


def test_delete_updates_the_served_ease_exactly_and_survives_a_restart(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    engine, client = _client(world["ease"], url)
    assert client.get("/v1/users/3/recommendations?k=5").status_code == 200  # cached now
    r = client.delete("/v1/users/1")
    assert r.status_code == 200, r.text
    model = r.json()["model"]
    assert model["trained"] and model["exact"] == ["item-item weights"] and not model["pending"]
    refit = _refit_without(world["ease"], "1")
    _assert_same_scores(engine.model, refit)
    # what the API serves comes from the updated model, not from the cache
    body = client.get("/v1/users/3/recommendations?k=5").json()
    want = refit.score(np.array([refit.user_map.index("3")]))[0]
    got = {x["item_id"]: x["score"] for x in body["items"]}
    for item, score in got.items():
        assert score == pytest.approx(want[refit.item_map.index(item)], rel=1e-4, abs=1e-5)
    info = client.get("/v1/info").json()["erasure"]
    assert info["n_forgotten"] == 1 and info["n_pending"] == 0 and info["stale_parts"] == []
    entry = audit.entries(Store(url), action="user.erase")[-1]
    assert entry.target == audit.user_digest("1")  # the digest, never the id
    assert entry.detail["model"]["exact"] == ["item-item weights"]
    # a new process on the same (unchanged) model directory forgets the user again
    again, client2 = _client(world["ease"], url)
    _assert_same_scores(again.model, refit)
    assert client2.get("/v1/info").json()["erasure"]["n_forgotten"] == 1
    assert client2.get("/v1/users/1/recommendations").json()["cold_start"]
    assert "1" not in client2.get("/v1/users?limit=1000").json()["users"]


def test_pending_erasures_of_a_gradient_model_and_retrain(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    _, client = _client(world["bpr"], url)
    assert client.get("/v1/info").json()["erasure"]["n_pending"] == 0
    r = client.delete("/v1/users/2")
    assert r.status_code == 200, r.text
    assert r.json()["model"]["exact"] == [] and r.json()["model"]["pending"] == [
        "user and item vectors"
    ]
    client.delete("/v1/users/never-trained")  # nothing of theirs in the model
    info = client.get("/v1/info").json()["erasure"]
    digest = audit.user_digest("2")
    assert info["n_pending"] == 1 and info["pending"] == [digest]
    assert info["stale_parts"] == ["user and item vectors"]
    _, restarted = _client(world["bpr"], url)  # pending survives a restart
    assert restarted.get("/v1/info").json()["erasure"]["pending"] == [digest]

    out = tmp_path / "retrained"
    result = CliRunner().invoke(
        cli, ["retrain", "--model-dir", str(world["bpr"]), "--out", str(out), "--db", url]
    )
    assert result.exit_code == 0, result.output
    assert "1 in" in result.output and "0 in" in result.output
    assert "2" not in json.loads((out / "users.json").read_text())
    assert "2" in json.loads((world["bpr"] / "users.json").read_text())  # --out: kept
    _, fresh = _client(out, url)
    info = fresh.get("/v1/info").json()["erasure"]
    assert info["n_pending"] == 0 and info["pending"] == []
    entry = audit.entries(Store(url), action="model.retrain")[-1]
    assert entry.actor == "cli" and entry.target == str(out)
    assert entry.detail["erased_users_dropped"] == 1
    erased = persist.artifacts(Store(url), persist.erased_namespace(DATASET))
    assert persist.user_hash("2") in erased


def test_retrain_help_teaches() -> None:
    result = CliRunner().invoke(cli, ["retrain", "--help"])
    assert result.exit_code == 0
    assert "erased" in result.output and "--model-dir" in result.output
    assert "/v1/info" in result.output
