"""Batch recommendations for every user (``kinrec recommend --all-users``) and item-text
encoding (``kinrec encode``), in one process and on a real two-worker-node Ray cluster bound
to 127.0.0.1: the same results either way, written where asked, clean errors."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

os.environ["HF_HUB_OFFLINE"] = "1"

import kinrec
from kinrec.cli import app
from kinrec.data.synth import generate
from kinrec.distributed.batch import (
    TABLE,
    output_kind,
    recommend_all,
    worker_plan,
)
from kinrec.models.base import Recommender

runner = CliRunner()
K = 5


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EASE on a seeded synthetic split of 300 users and 200 items (about a second)."""
    root = tmp_path_factory.mktemp("batch")
    generate(root / "synth", users=300, items=200, interactions=6000, kg=False, text=False)
    model = kinrec.fit("ease", kinrec.load_split(root / "synth"))
    return kinrec.save(model, root / "ease")


@pytest.fixture(scope="module")
def local_parquet(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The batch of every user computed in this process (64 users a block)."""
    out = tmp_path_factory.mktemp("local") / "top.parquet"
    result = recommend_all(model_dir, K, out, batch_users=64)
    assert (result.users, result.blocks, result.workers, result.nodes) == (300, 5, 0, [])
    return out


@pytest.fixture(scope="module")
def cluster() -> str:
    pytest.importorskip("ray")
    from kinrec.distributed.cluster import local_cluster

    with local_cluster(2) as address:
        yield address


@pytest.fixture(scope="module")
def toy_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding a 40-item catalogue with distinct titles (dataset ``toy``)."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float\n"]
    for u in range(1, 21):
        for pos, i in enumerate(rng.permutation(40)[:8] + 1):
            rows.append(f"{u}\t{i}\t{1 + pos % 5}\t{1000 + u * 100 + pos}\n")
    (root / "toy.inter").write_text("".join(rows))
    words = ["space", "love", "war", "crime", "river", "robot", "castle", "winter"]
    lines = ["item_id:token\tmovie_title:token_seq\tclass:token_seq\n"]
    for i in range(1, 41):
        lines.append(f"{i}\tThe {words[i % 8]} of {words[(i // 8) % 8]} {i}\tDrama\n")
    (root / "toy.item").write_text("".join(lines))
    db = f"sqlite:///{root / 'k.db'}"
    res = runner.invoke(app, ["ingest", str(root), "--format", "recbole", "--name", "toy",
                              "--db", db])  # fmt: skip
    assert res.exit_code == 0, res.output
    return db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also written as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _assert_matches_recommend(
    frame: pd.DataFrame, model: Recommender, users: list[str], exclude_seen: bool = True
) -> None:
    """Every user's rows are Recommender.recommend's items, in its order, with its scores."""
    groups = dict(tuple(frame.groupby("user", sort=False)))
    for user in users:
        expected = model.recommend(user, k=K, exclude_seen=exclude_seen)
        got = groups[user].sort_values("rank")
        assert list(got["rank"]) == list(range(1, len(expected) + 1)), user
        assert list(got["item"]) == [s.item_id for s in expected], user
        np.testing.assert_allclose(got["score"], [s.score for s in expected], rtol=1e-12)


# ------------------------------------------------------------------------------ one process
def test_every_user_equals_recommend(model_dir: Path, local_parquet: Path) -> None:
    frame = pd.read_parquet(local_parquet)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    assert frame["rank"].dtype == np.int32 and frame["score"].dtype == np.float64
    model = Recommender.load(model_dir)
    users = model.user_map.ids()
    assert list(dict.fromkeys(frame["user"])) == users  # every user, in the model's order
    assert len(frame) == K * len(users)
    _assert_matches_recommend(frame, model, users)
    seen = {(u, i) for n, u in enumerate(users) for i in model.item_map.ids(model.seen[n].indices)}
    assert not any((u, i) in seen for u, i in zip(frame["user"], frame["item"], strict=True))


def test_cli_include_seen_and_single_user_unchanged(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "seen.parquet"
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--all-users",
                              "--out", str(out), "-k", str(K), "--include-seen",
                              "--batch-users", "100"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "300 users, 1,500 rows in 3 blocks, in this process" in res.output
    model = Recommender.load(model_dir)
    frame = pd.read_parquet(out)
    sample = model.user_map.ids()[::37]
    _assert_matches_recommend(frame, model, sample, exclude_seen=False)
    # training items come back with --include-seen (EASE ranks them high)
    u0 = model.user_map.index("u0")
    assert set(model.item_map.ids(model.seen[u0].indices)) & set(frame[frame.user == "u0"].item)
    single = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--user", "u0",
                                 "-k", "3"])  # fmt: skip
    assert single.exit_code == 0, single.output
    assert "recommendations for user u0" in single.output
    for s in model.recommend("u0", k=3):
        assert s.item_id in single.output


def test_store_output_replaces_the_models_rows(model_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert recommend_all(model_dir, K, url, batch_users=128).rows == 1500
    result = recommend_all(model_dir, 3, url, batch_users=128)  # a second run replaces
    assert (result.users, result.rows, result.model) == (300, 900, "ease")
    with sqlite3.connect(tmp_path / "store.db") as conn:
        rows = conn.execute(
            f"SELECT model, user, rank, item, score, created FROM {TABLE} ORDER BY user, rank"
        ).fetchall()
    assert len(rows) == 900 and {r[0] for r in rows} == {"ease"}  # no staged rows left
    frame = pd.DataFrame(rows, columns=["model", "user", "rank", "item", "score", "created"])
    model = Recommender.load(model_dir)
    groups = dict(tuple(frame.groupby("user")))
    for user in model.user_map.ids()[::29]:
        expected = model.recommend(user, k=3)
        assert list(groups[user]["item"]) == [s.item_id for s in expected]
        np.testing.assert_allclose(groups[user]["score"], [s.score for s in expected])
    assert frame["created"].nunique() == 1


def test_erasing_a_user_deletes_their_batch_lists(model_dir: Path, tmp_path: Path) -> None:
    from kinrec.data.dataset import Dataset
    from kinrec.serving import persist
    from kinrec.store import Store

    url = f"sqlite:///{tmp_path / 'store.db'}"
    frame = pd.DataFrame({"user_id": ["u7", "u8"], "item_id": ["i1", "i2"]}, dtype=object)
    with Store(url) as store:
        store.ingest(Dataset(name="shop", interactions=frame))
    recommend_all(model_dir, K, url)
    with Store(url) as store:
        deleted = persist.erase_user(store, "shop", "u7")
    assert deleted["batch_recommendations"] == K and deleted["interactions"] == 1
    with sqlite3.connect(tmp_path / "store.db") as conn:
        users = [u for (u,) in conn.execute(f"SELECT user FROM {TABLE}")]
    assert "u7" not in users and users.count("u8") == K and len(users) == 299 * K


def test_store_output_on_postgresql(model_dir: Path, postgres_url: str) -> None:
    from sqlalchemy import create_engine, text

    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--all-users",
                              "--out", postgres_url, "-k", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "table batch_recommendations (model 'ease')" in res.output
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(f'SELECT "user", rank, item, score FROM {TABLE} WHERE model = :m'),
                {"m": "ease"},
            ).fetchall()
    finally:
        engine.dispose()
    model = Recommender.load(model_dir)
    assert len(rows) == 2 * len(model.user_map)
    got = [(item, score) for user, _, item, score in sorted(rows) if user == "u10"]
    expected = model.recommend("u10", k=2)
    assert [i for i, _ in got] == [s.item_id for s in expected]
    np.testing.assert_allclose([x for _, x in got], [s.score for s in expected])


def test_forgotten_users_are_left_out(model_dir: Path, tmp_path: Path) -> None:
    model = Recommender.load(model_dir)
    model.forget([model.user_map.index("u3")])
    model.save(tmp_path / "forgot")
    out = tmp_path / "forgot.parquet"
    assert recommend_all(tmp_path / "forgot", K, out).users == 299
    users = set(pd.read_parquet(out)["user"])
    assert "u3" not in users and len(users) == 299
    assert not any(u.startswith("\x00") for u in users)


def test_clear_errors(model_dir: Path, tmp_path: Path) -> None:
    base = ["recommend", "--model-dir", str(model_dir)]
    cases = [
        (["--all-users"], "--all-users needs --out"),
        (["--all-users", "--out", str(tmp_path / "top.csv")], "top.csv"),
        (["--all-users", "--user", "u0", "--out", str(tmp_path / "a.parquet")], "not both"),
        (["--user", "u0", "--out", str(tmp_path / "a.parquet")], "give --all-users"),
        ([], "give --user"),
    ]
    for extra, message in cases:
        res = runner.invoke(app, base + extra)
        assert res.exit_code == 2, (extra, res.output)
        assert message in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "top.csv").exists()
    with pytest.raises(ValueError, match=r"not a \.parquet file nor a store URL"):
        output_kind("out.json")
    assert output_kind("postgresql+psycopg://u@/db?host=/tmp") == "store"


def test_no_cluster_at_the_address_is_one_line(model_dir: Path, toy_db: str, tmp_path: Path):
    address = f"127.0.0.1:{_free_port()}"
    for args in (
        ["recommend", "--model-dir", str(model_dir), "--all-users", "--ray", address,
         "--out", str(tmp_path / "x.parquet")],
        ["encode", "-d", "toy", "--db", toy_db, "--ray", address],
    ):  # fmt: skip
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert re.search(f"no Ray cluster at '?{address}", res.output), res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "x.parquet").exists()


def test_worker_plan() -> None:
    class FakeRay:
        def __init__(self, nodes):
            self._nodes = nodes

        def nodes(self):
            return self._nodes

    cpu = {"Alive": True, "Resources": {"CPU": 8.0}}
    small = {"Alive": True, "Resources": {"CPU": 4.0}}
    head = {"Alive": True, "Resources": {}}
    dead = {"Alive": False, "Resources": {"CPU": 64.0}}
    gpu = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}
    plan = worker_plan(FakeRay([head, cpu, small, dead]))
    assert (plan.workers, plan.cpus, plan.gpus) == (2, 4.0, 0.0)
    assert worker_plan(FakeRay([cpu, gpu]), use_gpus=True).gpus == 1.0
    assert worker_plan(FakeRay([cpu, gpu]), use_gpus=True).workers == 2
    assert worker_plan(FakeRay([cpu, gpu])).gpus == 0.0  # scoring needs no GPU
    assert worker_plan(FakeRay([cpu]), workers=5).workers == 5
    with pytest.raises(LookupError, match="no alive node with a CPU"):
        worker_plan(FakeRay([head, dead]))


def test_written_ahead_writes_each_vector_once() -> None:
    from kinrec.distributed.encode import WrittenAhead
    from kinrec.knowledge.encoder import MemoryEmbeddingCache

    class Counting(MemoryEmbeddingCache):
        def __init__(self) -> None:
            super().__init__()
            self.puts: list[str] = []

        def put_many(self, items) -> None:
            self.puts.extend(key[2] for key in items)
            super().put_many(items)

    inner = Counting()
    cache = WrittenAhead(inner)
    one, two = ("m", "", "a"), ("m", "", "b")
    cache.put_many({one: np.ones(2)})  # a batch as it arrives
    cache.put_many({one: np.ones(2), two: np.zeros(2)})  # encode()'s write of everything
    assert inner.puts == ["a", "b"]
    assert set(cache.get_many([one, two])) == {one, two}


# ------------------------------------------------------------------------------ on Ray
def test_every_user_on_ray_equals_one_process(
    cluster: str, model_dir: Path, local_parquet: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray.parquet"
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--all-users",
                              "--out", str(out), "-k", str(K), "--batch-users", "64",
                              "--ray", cluster])  # fmt: skip
    assert res.exit_code == 0, res.output
    # 5 blocks computed by 2 actors, one on each worker node (the head has no CPU)
    assert "300 users, 1,500 rows in 5 blocks, on 2 Ray workers (2 nodes)" in res.output
    frame = pd.read_parquet(out)
    pd.testing.assert_frame_equal(frame, pd.read_parquet(local_parquet))
    model = Recommender.load(model_dir)
    _assert_matches_recommend(frame, model, model.user_map.ids()[::7])


def test_encode_on_ray_equals_one_process(
    cluster: str, toy_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kinrec.distributed.encode import _EncodeActor, _OnDevice, _worker_options
    from kinrec.knowledge.encoder import EncoderConfig, StoreEmbeddingCache, TextEncoder
    from kinrec.knowledge.text import render_item_texts
    from kinrec.store import Store

    writes: list[int] = []
    put_many = StoreEmbeddingCache.put_many

    def counted(self, items) -> None:
        writes.append(len(items))
        put_many(self, items)

    with monkeypatch.context() as patch:
        patch.setattr(StoreEmbeddingCache, "put_many", counted)
        res = runner.invoke(app, ["encode", "-d", "toy", "--db", toy_db, "--ray", cluster])
    assert res.exit_code == 0, res.output
    assert re.search(r"encoded now\s*│\s*40\b", res.output), res.output
    assert re.search(r"ray workers \(nodes used\)\s*│\s*2 \(2\)", res.output), res.output
    assert writes == [20, 20]  # each Ray batch written as it came, nothing twice
    texts = [t for _, t in render_item_texts(Store(toy_db).load_dataset("toy"))]
    assert len(set(texts)) == 40
    # the vectors the Ray run cached are the single-process ones
    reference = TextEncoder(EncoderConfig(num_threads=1))
    fresh = reference.encode(texts)
    assert reference.stats.encoded == 40
    reference.cache, reference.stats = StoreEmbeddingCache(toy_db), type(reference.stats)()
    from_cache = reference.encode(texts)
    assert (reference.stats.encoded, reference.stats.cache_hits) == (0, 40)
    np.testing.assert_allclose(from_cache, fresh, atol=1e-5)
    assert not np.allclose(from_cache[0], from_cache[1], atol=1e-3)  # distinct texts
    # a second run, with Ray or without, encodes nothing
    for extra in ([], ["--ray", cluster]):
        again = runner.invoke(app, ["encode", "-d", "toy", "--db", toy_db, *extra])
        assert again.exit_code == 0, again.output
        assert re.search(r"encoded now\s*│\s*0\b", again.output), again.output
        assert re.search(r"cache hits\s*│\s*40\b", again.output), again.output
    # an actor whose text model is not the driver's refuses to encode
    options = _worker_options(reference.config, explicit_model=False)
    assert "model_path" not in options  # each node's own bundled MiniLM
    with pytest.raises(RuntimeError, match="the driver's is 'other@0'"):
        _EncodeActor(options, "other@0", "", 1)
    # what a GPU actor runs, on the CPU here: the same vectors
    reference.model = _OnDevice(reference.model, "cpu")
    np.testing.assert_allclose(reference.encode_uncached(texts), fresh, atol=1e-6)


def test_cluster_listens_on_loopback_only(cluster: str) -> None:
    psutil = pytest.importorskip("psutil")
    import ray

    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    assert len(pids) > 3  # GCS, raylets, workers
    listening = [
        c
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    ports = {c.laddr.port for c in listening}
    assert int(cluster.rsplit(":", 1)[1]) in ports  # the GCS is among them
    assert len(ports) >= 5, ports
    outward = [c for c in listening if not _loopback(c.laddr.ip)]
    assert not outward, [(c.pid, psutil.Process(c.pid).name(), c.laddr) for c in outward]
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
