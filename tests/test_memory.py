"""The memory a dense step may use, and what each model does when its dense step would take
more: refuse before allocating, with an error naming the sizes and the memory (EASE,
Mult-VAE, kinformer's add_items), or take another path that needs less (item kNN and KG kNN
in blocks, kinformer without its linear head, the evaluation in smaller batches).

A tiny ``KINREC_MEMORY_LIMIT`` stands for a catalogue too large for the machine."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kinrec.data.dataset import Dataset, Split
from kinrec.evaluation import protocol
from kinrec.evaluation.protocol import evaluate, ndcg_validator
from kinrec.models import memory
from kinrec.models.memory import MemoryLimitError
from kinrec.models.registry import create_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GIB = 1024**3
SPACE = ["Star voyage", "Galaxy rescue", "Mars colony", "Rocket pilots", "Alien moon", "Orbit"]
FOOD = ["Pasta kitchen", "Baking bread", "Sushi chef", "Soup secrets", "Grill master", "Cake"]


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Split]:
    """24 items in two themes (in their titles, genres and knowledge-graph links); 40 users
    who each like one theme; per user 6 train, 1 valid and 1 test row, in time order."""
    items = []
    for theme, titles in (("space", SPACE), ("food", FOOD)):
        for n, title in enumerate(titles):
            for part in ("I", "II"):
                items.append(
                    {
                        "item_id": f"{theme}{n}{part}",
                        "title": f"{title} {part}: a {theme} story",
                        "genre": ("SciFi",) if theme == "space" else ("Cooking",),
                    }
                )
    ids = [i["item_id"] for i in items]
    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        pool = [i for i in ids if i.startswith("space" if u % 2 else "food")]
        for i in rng.choice(pool, size=8, replace=False):
            rows.append({"user_id": f"u{u}", "item_id": str(i), "timestamp": float(len(rows))})
    inter = pd.DataFrame(rows)
    ds = Dataset(
        "themes",
        inter,
        items=pd.DataFrame(items),
        triples=pd.DataFrame(
            {
                "head": [f"e_{i}" for i in ids],
                "relation": ["made_by"] * len(ids),
                "tail": ["studio_space" if i.startswith("space") else "studio_food" for i in ids],
            }
        ),
        links=pd.DataFrame({"item_id": ids, "entity_id": [f"e_{i}" for i in ids]}),
        text_fields=["title"],
        attribute_fields=["genre"],
    )
    position = inter.groupby("user_id").cumcount()
    train, valid, test = inter[position < 6], inter[position == 6], inter[position == 7]
    return ds, Split.from_frames(train, valid, test, item_ids=ids, dataset=ds)


def limit(monkeypatch: pytest.MonkeyPatch, size: str) -> None:
    monkeypatch.setenv(memory.ENV, size)


@contextlib.contextmanager
def warnings_of(name: str):
    """Warning records of one logger, whatever its propagation (the service turns it off)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def fit(name: str, split: Split, **params):
    model = create_model(name, params)
    validator = ndcg_validator(split.train, split.valid)
    return model.fit(split.train, split.valid, validator=validator, side=split.dataset)


def recommends(model, split: Split) -> None:
    top = model.recommend(split.train.user_map.ids()[1], k=3)
    assert len(top) == 3 and all(np.isfinite(s.score) for s in top)


# ------------------------------------------------------------------------ the allowance
@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("6GiB", 6 * GIB),
        ("500MB", 500_000_000),
        ("1.5G", 1_500_000_000),
        (" 2 kib ", 2048),
        ("2e9", 2_000_000_000),
        ("1048576", 1 << 20),
        (4096, 4096),
    ],
)
def test_sizes_parse(text, size) -> None:
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "6 GB of it", "-1GB", "0", "5XB"])
def test_bad_sizes_are_refused(text) -> None:
    with pytest.raises(ValueError, match="memory size"):
        memory.parse_size(text)


def test_the_allowance_is_the_smallest_bound(monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GIB)
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: None)
    monkeypatch.delenv(memory.ENV, raising=False)
    room = memory.allowance()
    assert room.bytes == 8 * GIB and "MemAvailable" in room.source
    limit(monkeypatch, "6GiB")
    room = memory.allowance()
    assert room.bytes == 6 * GIB and room.source == "KINREC_MEMORY_LIMIT=6GiB"
    assert "raise KINREC_MEMORY_LIMIT" in room.remedy
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: 2 * GIB)
    room = memory.allowance()
    assert room.bytes == 2 * GIB and "cgroup" in room.source
    limit(monkeypatch, "plenty")
    with pytest.raises(ValueError, match="KINREC_MEMORY_LIMIT"):
        memory.allowance()


def test_cgroup_headroom_counts_reclaimable_cache_as_free(monkeypatch, tmp_path) -> None:
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir()
    v1.mkdir()
    (v2 / "memory.max").write_text(f"{4 * GIB}\n")
    (v2 / "memory.current").write_text(f"{3 * GIB}\n")
    (v2 / "memory.stat").write_text(f"anon 1\ninactive_file {GIB}\n")
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    dirs = [(v2, "v2"), (v1, "v1")]
    monkeypatch.setattr(memory, "_cgroup_dirs", lambda: dirs)
    assert memory.cgroup_headroom() == 2 * GIB
    (v2 / "memory.max").write_text("max\n")
    assert memory.cgroup_headroom() is None


def test_the_refusal_names_the_step_the_sizes_and_the_memory(monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * GIB)
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: None)
    limit(monkeypatch, "4GiB")
    gram = memory.Dense("the Gram matrix", (24_915, 24_915), np.float64)
    assert memory.fits(memory.Dense("small", (1000, 1000)))
    assert not memory.fits(gram)
    with pytest.raises(MemoryLimitError) as info:
        memory.require("ease (fit on 24,915 items)", gram, hint="use another model")
    message = str(info.value)
    assert isinstance(info.value, MemoryError)
    assert message.startswith("ease (fit on 24,915 items) needs 4.63 GiB of memory")
    assert "the Gram matrix (24,915 x 24,915 float64)" in message
    assert "may use 4.00 GiB (KINREC_MEMORY_LIMIT=4GiB)" in message
    assert "raise KINREC_MEMORY_LIMIT" in message and message.endswith("use another model")
    assert "\n" not in message


def test_rows_that_fit_shrink_batches_to_the_allowance(monkeypatch) -> None:
    limit(monkeypatch, "100KB")
    assert memory.rows_that_fit(1000, 1024) == 50  # half of the allowance
    assert memory.rows_that_fit(10**9, 1024) == 1
    assert memory.rows_that_fit(10, 8) == 8


# ------------------------------------------------------------------------ the models
def test_ease_refuses_before_allocating(data, monkeypatch) -> None:
    _, split = data
    limit(monkeypatch, "6KB")  # the 24 x 24 Gram matrix and weights need 6,912 bytes
    model = create_model("ease", {"solver": "dense"})
    with pytest.raises(MemoryLimitError) as info:
        model.fit(split.train)
    message = str(info.value)
    assert "ease (fit on 24 items)" in message
    assert "(24 x 24 float64)" in message and "(24 x 24 float32)" in message
    assert "needs 6,912 bytes of memory" in message and "KINREC_MEMORY_LIMIT=6KB" in message
    assert model.weights is None
    # "auto" tries the sparse solver instead, which needs 8,832 bytes with 23 neighbours
    with pytest.raises(MemoryLimitError, match=r"ease, sparse \(24 items\) needs 8,832"):
        create_model("ease").fit(split.train)
    sparse = create_model("ease", {"neighbours": 5}).fit(split.train)
    assert sparse.fit_info["solver"] == "sparse"
    limit(monkeypatch, "1MB")
    fitted = create_model("ease").fit(split.train)
    monkeypatch.delenv(memory.ENV)
    unlimited = create_model("ease").fit(split.train)
    np.testing.assert_array_equal(fitted.weights, unlimited.weights)


def test_multvae_refuses_before_allocating(data, monkeypatch) -> None:
    _, split = data
    limit(monkeypatch, "100KB")
    with pytest.raises(MemoryLimitError, match=r"multvae \(fit on 24 items\)") as info:
        create_model("multvae", {"max_epochs": 1}).fit(split.train)
    assert "(24 x 600 float32, 12 at once)" in str(info.value)
    assert "lower batch_size or hidden_size" in str(info.value)


def test_itemknn_takes_smaller_blocks_with_the_same_weights(data, monkeypatch) -> None:
    _, split = data
    monkeypatch.delenv(memory.ENV, raising=False)
    whole = create_model("itemknn", {"k": 5}).fit(split.train)
    limit(monkeypatch, "4KB")  # a column of the block takes 24 x 8 x 4 bytes
    blocked = create_model("itemknn", {"k": 5}).fit(split.train)
    assert blocked.fit_info["block_size"].startswith("2 instead of 512: needs")
    assert "block_size" not in whole.fit_info
    assert (blocked.weights != whole.weights).nnz == 0
    recommends(blocked, split)


def test_kg_knn_builds_its_similarity_in_blocks(data, monkeypatch) -> None:
    _, split = data
    monkeypatch.delenv(memory.ENV, raising=False)
    whole = fit("kg-knn", split, neighbours=5)
    limit(monkeypatch, "6KB")  # each item shares its genre and studio with 11 others
    blocked = fit("kg-knn", split, neighbours=5)
    assert re.match(r"\d+ blocks of rows: the whole needs", blocked.fit_info["similarity_blocks"])
    assert "similarity_blocks" not in whole.fit_info
    np.testing.assert_array_equal(
        (blocked.similarity > 0).sum(axis=1), (whole.similarity > 0).sum(axis=1)
    )
    np.testing.assert_allclose(
        np.sort(blocked.similarity.toarray(), axis=1), np.sort(whole.similarity.toarray(), axis=1)
    )
    recommends(blocked, split)


def test_evaluation_takes_smaller_batches_with_the_same_metrics(data, monkeypatch) -> None:
    _, split = data
    monkeypatch.delenv(memory.ENV, raising=False)
    monkeypatch.setattr(protocol, "_WARNED", set())
    model = create_model("ease").fit(split.train)
    ks = (1, 5)
    whole = evaluate(model, split.test, [split.train, split.valid], ks, train=split.train)
    limit(monkeypatch, "2KB")  # a user's rows take 24 x 25 bytes
    with warnings_of("kinrec.evaluation.protocol") as records:
        batched = evaluate(model, split.test, [split.train, split.valid], ks, train=split.train)
    assert batched.metrics == whole.metrics and batched.segments == whole.segments
    assert any("1 users per batch instead of 1024" in r.getMessage() for r in records)


KINFORMER = {"max_epochs": 4, "batch_size": 64, "dim": 16}


def test_kinformer_skips_its_linear_head_and_keeps_the_two_tower(data, monkeypatch) -> None:
    _, split = data
    limit(monkeypatch, "12KB")  # the head's search needs 2 x 24 x 24 x (8 + 4) bytes
    with warnings_of("kinrec.models.transfer.model") as records:
        model = fit("kinformer", split, **KINFORMER, linear_solver="dense")
    assert model.fit_info["linear_head"] == (
        "skipped: needs 13,824 bytes, may use 12,000 bytes (KINREC_MEMORY_LIMIT=12KB)"
    )
    assert model.linear is None and model.linear_weight == 0.0
    assert any("linear head skipped" in r.getMessage() for r in records)
    recommends(model, split)
    res = evaluate(model, split.test, [split.train, split.valid], (5,), train=split.train)
    assert res.metrics["ndcg@5"] > 0.2  # the themes are learnt without the head


def test_kinformer_head_fits_where_memory_allows(data, monkeypatch) -> None:
    _, split = data
    limit(monkeypatch, "1MB")
    model = fit("kinformer", split, **KINFORMER)
    assert model.fit_info["linear_head"].startswith("fitted, dense: needs")
    assert isinstance(model.linear, np.ndarray) and model.linear.shape == (24, 24)


def test_kinformer_head_goes_sparse_where_the_dense_one_does_not_fit(data, monkeypatch) -> None:
    _, split = data
    limit(monkeypatch, "12KB")  # the dense search: 13,824 bytes; the sparse one: 3,840
    model = fit("kinformer", split, **KINFORMER, linear_neighbours=2)
    assert model.fit_info["linear_head"] == (
        "fitted, sparse: needs 3,840 bytes, may use 12,000 bytes (KINREC_MEMORY_LIMIT=12KB)"
    )
    assert sp.issparse(model.linear) and model.linear.getnnz(axis=0).max() <= 2
    recommends(model, split)
    limit(monkeypatch, "3KB")
    skipped = fit("kinformer", split, **KINFORMER, linear_neighbours=2)
    assert skipped.fit_info["linear_head"].startswith("skipped: needs 3,840 bytes")


def test_kinformer_searches_in_one_pass_choose_what_value_by_value_passes_do(data, monkeypatch):
    """The validator's one-pass grid (every value scored per batch of users, the tower and
    head reused) gives the searches of a plain callable validator scored value by value."""
    _, split = data
    monkeypatch.delenv(memory.ENV, raising=False)
    one_pass = fit("kinformer", split, **KINFORMER)
    validator = ndcg_validator(split.train, split.valid)
    model = create_model("kinformer", KINFORMER)
    by_value = model.fit(
        split.train, split.valid, validator=lambda m: validator(m), side=split.dataset
    )
    assert one_pass.linear is not None and one_pass.fit_info["linear_weight"] > 0
    for key in ("linear_search", "prior_weight_search", "cold_search"):
        assert one_pass.fit_info[key] == by_value.fit_info[key], key
    users = np.arange(split.n_users)
    np.testing.assert_array_equal(one_pass.score(users), by_value.score(users))
    # inside the reuse context, scores equal those outside it, whatever the weights
    weights = (0.0, 3.0, 0.5)
    outside = []
    for weight in weights:
        one_pass.linear_weight = weight
        outside.append(one_pass.score(users[:7]))
    with one_pass.reusing_score_parts():
        for weight, want in zip(weights, outside, strict=True):
            one_pass.linear_weight = weight
            np.testing.assert_allclose(one_pass.score(users[:7]), want, rtol=1e-6)
            assert "tower" in one_pass._score_parts
        other = one_pass.score(users[3:9])  # other users: computed afresh
        np.testing.assert_allclose(other[:4], outside[-1][3:], rtol=1e-6)


def test_kinformer_add_items_refuses_before_changing_anything(data, monkeypatch) -> None:
    _, split = data
    monkeypatch.delenv(memory.ENV, raising=False)
    model = fit("kinformer", split, **KINFORMER)
    assert model.linear is not None
    new = Dataset(
        "new",
        pd.DataFrame(columns=["user_id", "item_id", "timestamp"]),
        items=pd.DataFrame([{"item_id": "space9", "title": "Comet", "genre": ("SciFi",)}]),
        text_fields=["title"],
        attribute_fields=["genre"],
    )
    before = (len(model.item_map), model.linear.shape, model.item_final.shape)
    items = np.arange(len(model.content.text))
    whole = model._neighbour_weights(items)
    limit(monkeypatch, "2KB")
    # a new item's nearest warm items come in blocks of rows where memory is short
    blocked = model._neighbour_weights(items)
    np.testing.assert_allclose(blocked.toarray(), whole.toarray(), rtol=1e-6)
    with pytest.raises(MemoryLimitError, match=r"the widened linear head \(25 x 25 float32\)"):
        model.add_items(["space9"], new)
    assert (len(model.item_map), model.linear.shape, model.item_final.shape) == before


# ------------------------------------------------------------------------ the command line
def test_the_cli_prints_one_clear_line_and_exits_non_zero(tmp_path: Path) -> None:
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    parts = {"train": [], "valid": [], "test": []}
    for u in range(20):  # 30 items in all
        for pos in range(8):
            part = "train" if pos < 6 else ("valid" if pos == 6 else "test")
            parts[part].append(f"u{u}\ti{(u + 3 * pos) % 30}\t{u * 100 + pos}\n")
    for part, rows in parts.items():
        (tmp_path / f"toy.{part}.inter").write_text(header + "".join(rows))
    env = {**os.environ, memory.ENV: "4KB", "COLUMNS": "60"}
    command = [sys.executable, "-m", "kinrec.cli", "benchmark", "--split-dir", str(tmp_path)]
    res = subprocess.run(
        [*command, "--models", "pop,ease", "--json"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    # the dense solver does not fit (30 x 30), so "auto" tried the sparse one, which neither
    assert "ease, sparse (30 items) needs" in errors[0]
    assert "(30 x 29 int64)" in errors[0] and "KINREC_MEMORY_LIMIT=4KB" in errors[0]
    records = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 1 and '"model": "pop"' in records[0]  # pop ran before
