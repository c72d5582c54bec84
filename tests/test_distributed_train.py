"""Training on a Ray cluster: data-parallel Ray Train workers for models trained in epochs,
the sparse solver's item blocks as Ray tasks; against the single-process fit.

The cluster is real: a head and two worker nodes (each its own raylet and object store) on
127.0.0.1 only (:func:`kinrec.distributed.cluster.local_cluster`), stopped afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import kinrec
from kinrec.cli import app
from kinrec.data.dataset import Split
from kinrec.data.synth import generate
from kinrec.distributed import blocks, data_parallel
from kinrec.distributed.cluster import local_cluster, nodes_alive
from kinrec.distributed.train import fit_distributed, fit_on_ray
from kinrec.evaluation.benchmark import fit_with_validation
from kinrec.models.registry import create_model
from kinrec.models.sparse_linear import GramParts, neighbourhood_weights

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Split:
    folder = tmp_path_factory.mktemp("synth")
    generate(folder, users=300, items=200, interactions=8000, seed=1)
    return kinrec.load_split(folder)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(workers=2) as address:
        yield address


def _single(name: str, params: dict, split: Split):
    model = create_model(name, params)
    fit_with_validation(model, split)
    return model


def test_bpr_on_two_worker_nodes_is_the_single_process_fit(cluster, split) -> None:
    """Each worker takes every other row of each batch; the combined gradient is the full
    batch's, so the trained vectors are the single-process ones up to float order."""
    params = {"max_epochs": 4, "seed": 3, "batch_size": 512}
    events = []
    dist = fit_on_ray(
        create_model("bpr", params), split, workers=2, progress=lambda *e: events.append(e)
    )
    single = _single("bpr", params, split)
    assert dist.fit_info["ray"] == {"training_workers": 2, "worker_nodes": 2}
    np.testing.assert_allclose(dist.item_factors, single.item_factors, atol=1e-5)
    np.testing.assert_allclose(dist.user_factors, single.user_factors, atol=1e-5)
    assert dist.fit_info["best_valid_ndcg@10"] == pytest.approx(
        single.fit_info["best_valid_ndcg@10"], abs=1e-6
    )
    # the leader's per-epoch progress reached this process, one event per epoch
    assert [e[1] for e in events] == [1, 2, 3, 4]
    assert all("valid_ndcg@10" in e[3] for e in events)


def test_multvae_on_two_workers_is_the_single_process_fit(cluster, split) -> None:
    """The input dropout and the code's noise are drawn for the whole batch before each
    worker takes its share, so the workers see the draws one process does."""
    params = {"max_epochs": 3, "seed": 4, "batch_size": 64}
    dist = fit_on_ray(create_model("multvae", params), split, workers=2)
    single = _single("multvae", params, split)
    assert dist.weights.keys() == single.weights.keys()
    for name, weights in single.weights.items():
        np.testing.assert_allclose(dist.weights[name], weights, atol=1e-4, err_msg=name)


def test_one_worker_alone_is_the_single_process_fit(cluster, split) -> None:
    params = {"max_epochs": 3, "seed": 5, "batch_size": 256}
    dist = fit_on_ray(create_model("bpr", params), split, workers=1)
    single = _single("bpr", params, split)
    np.testing.assert_allclose(dist.item_factors, single.item_factors, atol=1e-6)


def test_kinformer_on_two_workers_is_the_single_process_fit(cluster, split) -> None:
    """Each worker takes its share of the batch's rows and of the anchors of its in-batch
    terms (alignment and layer contrast, both on here), each anchor against the whole
    batch's; the shares add up to the batch's loss, so the trained arrays are the
    single-process ones up to float order."""
    params = {"max_epochs": 3, "seed": 2, "batch_size": 1024, "patience": 3, "cl_weight": 0.1}
    dist = fit_distributed(create_model("kinformer", params), split, workers=2)
    single = _single("kinformer", params, split)
    assert dist.fit_info["ray"]["training_workers"] == 2
    assert dist.fit_info["epochs_run"] == single.fit_info["epochs_run"]
    assert dist.fit_info["last_loss"] == pytest.approx(single.fit_info["last_loss"], rel=1e-4)
    np.testing.assert_allclose(dist.item_final, single.item_final, atol=1e-4)
    np.testing.assert_allclose(dist.user_final, single.user_final, atol=1e-4)
    a, b = dist.fit_info["best_valid_ndcg@10"], single.fit_info["best_valid_ndcg@10"]
    assert a == pytest.approx(b, abs=1e-4)
    # the whole fit ran on the leader: head, prior and the model's scores
    users = np.arange(20)
    np.testing.assert_allclose(dist.score(users), single.score(users), atol=1e-3)


def test_sparse_solver_item_blocks_as_ray_tasks_give_the_same_weights(cluster) -> None:
    rows = sp.random(400, 300, density=0.05, random_state=1, format="csr")
    rows.data[:] = 1.0
    gram = GramParts(rows)
    local = neighbourhood_weights(gram, [10.0, 100.0], 25, batch=40)
    with blocks.on_ray():
        remote = neighbourhood_weights(gram, [10.0, 100.0], 25, batch=40)
    for a, b in zip(local, remote, strict=True):
        assert a.nnz > 0
        assert (a != b).nnz == 0


def test_sparse_ease_fitted_through_the_cluster_equals_the_local_fit(cluster, split) -> None:
    params = {"solver": "sparse", "neighbours": 20}
    dist = fit_distributed(create_model("ease", params), split)
    single = _single("ease", params, split)
    assert dist.fit_info["ray"]["item_blocks"] == "ray tasks"
    assert nodes_alive() == 3
    assert (dist.weights != single.weights).nnz == 0


def test_followers_stop_after_the_epochs() -> None:
    follower, leader = data_parallel.Replicas(1, 2), data_parallel.Replicas(0, 2)
    leader.finish_epochs()
    with pytest.raises(data_parallel.FollowerDone):
        follower.finish_epochs()
    rows = np.arange(7)
    assert follower.shard(rows).tolist() == [1, 3, 5]
    assert leader.shard(rows).tolist() == [0, 2, 4, 6]
    assert leader.share(7) + follower.share(7) == 7


def test_train_cli_on_the_cluster(cluster, split, tmp_path) -> None:
    folder = tmp_path / "split"
    generate(folder, users=150, items=80, interactions=2000, seed=4)
    config = tmp_path / "c.toml"
    config.write_text('[model]\nname = "bpr"\n[model.params]\nmax_epochs = 2\n')
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        ["train", "-c", str(config), "--split-dir", str(folder), "--out", str(out),
         "--ray", cluster, "--ray-workers", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 data-parallel Ray Train workers on 2 node(s)" in result.output
    model = kinrec.load(out)
    assert model.fit_info["ray"]["training_workers"] == 2


def test_no_cluster_at_the_address_is_a_clear_error(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[model]\nname = "pop"\n')
    folder = tmp_path / "split"
    generate(folder, users=100, items=60, interactions=800, seed=4)
    result = CliRunner().invoke(
        app,
        ["train", "-c", str(config), "--split-dir", str(folder), "--out", str(tmp_path / "m"),
         "--ray", "127.0.0.1:1"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "no Ray cluster at 127.0.0.1:1" in result.output
