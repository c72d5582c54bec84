"""Training a model on a Ray cluster: Ray Train data-parallel workers for the models trained
in epochs (kinformer, bpr, lightgcn, multvae).

Each of ``workers`` Ray Train workers (a ``torch.distributed`` gloo group set up by Ray Train)
runs the same seeded fit on the same split; within each step a worker computes its share of
the batch and the gradients are combined (:mod:`kinrec.distributed.data_parallel`), so the
model is the single-process one up to floating-point order. The leader (rank 0) validates,
finishes the fit (the one-pass parts and the choices made on validation) and saves the model
folder as the run's checkpoint, which this process loads. Per-epoch progress reaches the
caller's callback through a small Ray actor.

The split travels once through Ray's object store. ``storage`` is where Ray Train keeps the
checkpoint: any local folder on a one-machine cluster; a path every node can write (NFS,
``s3://...``) on a real one.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kinrec.data.dataset import Split
from kinrec.models.base import ProgressCallback, Recommender


def trained_in_epochs(model: Recommender) -> bool:
    """Whether ``model`` is trained by gradient epochs (what data-parallel workers speed up)."""
    from kinrec.training.loop import IterativeConfig

    return isinstance(model.config, IterativeConfig) or hasattr(model.config, "max_epochs")


class _Relay:
    """The leader's per-epoch progress, read by the driver (a Ray actor)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def push(self, event: tuple) -> None:
        self.events.append(event)

    def take(self) -> list[tuple]:
        out, self.events = self.events, []
        return out


def _worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import torch.distributed as dist
    from ray.train import Checkpoint

    from kinrec.distributed import data_parallel
    from kinrec.evaluation.benchmark import fit_with_validation
    from kinrec.models.registry import create_model

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    nodes: list[str | None] = [None] * world
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    split: Split = ray.get(config["split"])[0]
    model = create_model(config["name"], config["config"])
    relay = config["relay"]

    def progress(phase, step, total, values) -> None:
        relay.push.remote((phase, step, total, dict(values)))

    with data_parallel.replicas(rank, world):
        try:
            fit_with_validation(model, split, progress if rank == 0 else None)
        except data_parallel.FollowerDone:
            ray.train.report({"rank": rank})
            return
    model.fit_info["ray"] = {"training_workers": world, "worker_nodes": len(set(nodes))}
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model")
        ray.train.report({"rank": rank}, checkpoint=Checkpoint.from_directory(tmp))


def fit_on_ray(
    model: Recommender,
    split: Split,
    workers: int = 2,
    progress: ProgressCallback | None = None,
    storage: str | Path | None = None,
    cpus_per_worker: float = 1,
) -> Recommender:
    """``model`` (not yet fitted: its name and config are used) fitted with validation on
    ``split`` by ``workers`` Ray Train workers of the connected cluster; returns the leader's
    fitted model (a new object). Models not trained in epochs raise ``ValueError``."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not trained_in_epochs(model):
        raise ValueError(
            f"{model.name} is not trained in epochs: data-parallel workers have nothing to "
            "share (train it without --ray workers, or use the sparse solver's item blocks)"
        )
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    relay = ray.remote(num_cpus=0)(_Relay).remote()
    stop = threading.Event()

    def forward() -> None:
        while not stop.is_set():
            for event in ray.get(relay.take.remote()):
                if progress is not None:
                    progress(*event)
            stop.wait(0.5)

    poller = threading.Thread(target=forward, daemon=True)
    poller.start()
    storage = Path(storage) if storage is not None else Path(tempfile.mkdtemp(prefix="kinrec-ray-"))
    config = {
        "name": model.name,
        "config": model.config,
        "split": [ray.put(split)],  # in a list: Ray Train passes it on as a reference
        "relay": relay,
    }
    trainer = TorchTrainer(
        _worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(
            name=f"kinrec-{model.name}-{int(time.time())}", storage_path=str(storage.resolve())
        ),
    )
    try:
        result = trainer.fit()
    finally:
        stop.set()
        poller.join()
        for event in ray.get(relay.take.remote()):
            if progress is not None:
                progress(*event)
        ray.kill(relay)
    if result.checkpoint is None:
        raise RuntimeError(f"the Ray Train run left no model (error: {result.error})")
    with result.checkpoint.as_directory() as folder:
        return type(model).load(Path(folder) / "model")


def fit_distributed(
    model: Recommender,
    split: Split,
    workers: int = 2,
    progress: ProgressCallback | None = None,
    storage: str | Path | None = None,
) -> Recommender:
    """Fit ``model`` on ``split`` using the connected Ray cluster: models trained in epochs
    by ``workers`` data-parallel Ray Train workers (:func:`fit_on_ray`); the others in this
    process with their sparse solver's item blocks as Ray tasks
    (:mod:`kinrec.distributed.blocks`; a dense solve stays here: it is chosen only where
    the matrix fits this machine). Returns the fitted model, whose ``fit_info["ray"]`` says
    which."""
    from kinrec.distributed import blocks
    from kinrec.distributed.cluster import nodes_alive
    from kinrec.evaluation.benchmark import fit_with_validation

    nodes = nodes_alive()
    if trained_in_epochs(model):
        fitted = fit_on_ray(model, split, workers, progress, storage)
        fitted.fit_info["ray"] = {"nodes": nodes, **fitted.fit_info.get("ray", {})}
        return fitted
    with blocks.on_ray():
        fit_with_validation(model, split, progress)
    model.fit_info["ray"] = {"nodes": nodes, "item_blocks": "ray tasks"}
    return model
