"""The one epoch loop of every iterative model: seeding, early stopping, progress, fit_info.

A model supplies ``run_epoch(epoch) -> mean loss`` and, for early stopping, ``validate() ->
score`` plus ``snapshot()``/``restore(state)``; :func:`train_epochs` runs up to ``max_epochs``
epochs, validates every ``eval_every`` epochs (and after the last one), stops after
``patience`` validations without improvement and restores the best snapshot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field

from kinrec.distributed import data_parallel
from kinrec.models.base import ModelConfig, ProgressCallback

VALID_KEY = "valid_ndcg@10"


class IterativeConfig(ModelConfig):
    """Settings shared by models trained with :func:`train_epochs`."""

    max_epochs: int = Field(300, ge=1)
    patience: int = Field(10, ge=1, description="validations without improvement before stopping")
    eval_every: int = Field(1, ge=1, description="validate every this many epochs")
    max_train_seconds: float | None = Field(
        None,
        gt=0,
        description=(
            "time budget of the training epochs: no epoch is started that would, at the "
            "mean epoch time so far (validation included), end past it; the best validated "
            "state is kept as with early stopping (None: epochs and patience only)"
        ),
    )
    batch_size: int = Field(2048, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    threads: int | None = Field(
        1,
        ge=1,
        description=(
            "torch intra-op threads while fitting (restored afterwards; None keeps the process "
            "setting). Small embedding batches run fastest on one thread, stay fast on a busy "
            "machine, and give the same numbers whatever the caller's thread setting."
        ),
    )


@contextmanager
def seeded(seed: int) -> Iterator[np.random.Generator]:
    """Seed torch's CPU generator inside the block (restored afterwards); yield a numpy one.

    Everything random in a fit (initialisation, sampling, dropout) should run inside this block
    and draw from the yielded generator or torch's, so seeded fits are repeatable and do not
    disturb the caller's random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield np.random.default_rng(seed)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: leave the setting alone)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class EarlyStopping:
    """Tracks the best validation score; ``should_stop`` after ``patience`` non-improvements."""

    patience: int
    min_delta: float = 0.0
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_evaluations: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record ``score`` at (1-based) ``epoch``; True when it is a new best."""
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self.bad_evaluations = score, epoch, 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience


@dataclass
class TrainingResult:
    """What happened in :func:`train_epochs`; epochs are 1-based counts."""

    epochs_run: int = 0
    best_epoch: int | None = None
    best_score: float | None = None
    stopped_early: bool = False
    stopped_by_budget: bool = False
    last_loss: float | None = None
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def fit_info(self) -> dict[str, Any]:
        """The summary models store in ``fit_info`` (JSON-able)."""
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_valid_ndcg@10": self.best_score,
            "stopped_early": self.stopped_early,
            "stopped_by_budget": self.stopped_by_budget,
            "epochs_seconds": round(self.seconds, 2),
            "last_loss": self.last_loss,
            "evaluations": sum(VALID_KEY in h for h in self.history),
            # per epoch: the mean loss and, on validated epochs, the validation score (the
            # training curve of ``kinrec train``'s training.png and the console)
            "history": [
                {k: int(v) if k == "epoch" else v for k, v in h.items()} for h in self.history
            ],
        }


def train_epochs(
    run_epoch: Callable[[int], float],
    max_epochs: int,
    *,
    validate: Callable[[], float] | None = None,
    snapshot: Callable[[], Any] | None = None,
    restore: Callable[[Any], None] | None = None,
    patience: int = 10,
    eval_every: int = 1,
    progress: ProgressCallback | None = None,
    phase: str = "train",
    max_seconds: float | None = None,
) -> TrainingResult:
    """Run up to ``max_epochs`` epochs with early stopping on ``validate`` (higher is better).

    ``run_epoch`` gets the 1-based epoch number and returns the epoch's mean loss. Without
    ``validate`` every epoch runs and the final state is kept. With it, ``snapshot`` is taken at
    each new best and ``restore`` puts the best one back at the end. ``progress`` is called after
    every epoch with ``(phase, epoch, max_epochs, {"loss": ..., "valid_ndcg@10": ...})`` (the
    validation value only on epochs that were validated).

    ``max_seconds``: no epoch is started that would end past this budget at the mean epoch
    time so far (validations included; at least one epoch runs). An epoch that was not
    validated when the budget stops training is validated then, so the best state is chosen
    among every state trained.
    """
    if (snapshot is None) != (restore is None):
        raise ValueError("give both snapshot and restore, or neither")
    start = time.perf_counter()
    dp = data_parallel.current()
    result = TrainingResult()
    stopper = EarlyStopping(patience)
    best_state: Any = None
    for epoch in range(1, max_epochs + 1):
        loss = float(run_epoch(epoch))
        if not math.isfinite(loss):
            raise FloatingPointError(f"{phase}: loss became {loss} at epoch {epoch}")
        values: dict[str, float] = {"loss": loss}
        result.epochs_run, result.last_loss = epoch, loss
        elapsed = time.perf_counter() - start
        # would one more epoch (validation included) end past the budget?
        out_of_time = (
            max_seconds is not None
            and epoch < max_epochs
            and elapsed * (epoch + 1) > max_seconds * epoch
        )
        if dp is not None and max_seconds is not None:  # one clock decides for all workers
            out_of_time = dp.agree(float(out_of_time)) > 0
        due = epoch % eval_every == 0 or epoch == max_epochs or out_of_time
        if validate is not None and due:
            # in a data-parallel job the leader validates and the others take its score
            score = float(validate()) if dp is None or dp.leader else math.nan
            if dp is not None:
                score = dp.agree(score)
            values[VALID_KEY] = score
            if stopper.update(score, epoch) and snapshot is not None:
                best_state = snapshot()
        result.history.append({"epoch": float(epoch), **values})
        if progress is not None:
            progress(phase, epoch, max_epochs, values)
        if validate is not None and stopper.should_stop:
            result.stopped_early = True
            break
        if out_of_time:
            result.stopped_by_budget = True
            break
    if dp is not None:
        dp.finish_epochs()  # the leader goes on; the other workers stop here
    if validate is not None and stopper.best_epoch:
        result.best_epoch, result.best_score = stopper.best_epoch, stopper.best_score
        if restore is not None and best_state is not None and stopper.best_epoch != epoch:
            restore(best_state)
    result.seconds = time.perf_counter() - start
    return result


def train_module(
    model: Any,
    module: torch.nn.Module,
    run_epoch: Callable[[int], float],
    sync: Callable[[], None],
    validator: Callable[[Any], float] | None,
    config: IterativeConfig,
    progress: ProgressCallback | None,
) -> TrainingResult:
    """:func:`train_epochs` for a model backed by one torch ``module``.

    Before each validation ``sync()`` exports the module's weights into ``model`` (which
    ``validator(model)`` then scores); the best module state is restored at the end and
    synced once more.
    """

    def validate() -> float:
        sync()
        return validator(model)

    result = train_epochs(
        run_epoch,
        config.max_epochs,
        validate=validate if validator is not None else None,
        snapshot=lambda: module_snapshot(module),
        restore=module.load_state_dict,
        patience=config.patience,
        max_seconds=config.max_train_seconds,
        eval_every=config.eval_every,
        progress=progress,
        phase=model.name,
    )
    sync()
    return result


def module_snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's parameters and buffers."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def optimize_epoch(
    batches: Iterable[Any],
    loss_fn: Callable[[Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
) -> float:
    """One pass of gradient steps; returns the mean loss weighted by batch length.

    In a data-parallel job (:mod:`kinrec.distributed.data_parallel`) each worker takes its
    share of every batch and the gradients are combined before the step."""
    dp = data_parallel.current()
    total, count = 0.0, 0
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        n = len(batch)
        part = batch if dp is None else dp.shard(batch)
        local = len(part)
        if local:
            loss = loss_fn(part)
            loss.backward()
            total += float(loss.detach()) * local
        if dp is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            dp.reduce_gradients(params, local, n)
        optimizer.step()
        count += local
    if dp is not None:
        total, count = dp.sum(total, count)
    return total / max(count, 1)


def validate_one_pass(
    model: Any, validator: Callable[[Any], float] | None, fit_start: float
) -> None:
    """For one-pass models: record ``train_seconds`` (fit only), then the validation score.

    The validation pass is timed separately (``validate_seconds``) so that ``train_seconds``
    stays comparable with other libraries' fit times.
    """
    model.fit_info["train_seconds"] = time.perf_counter() - fit_start
    if validator is not None:
        start = time.perf_counter()
        model.fit_info["best_valid_ndcg@10"] = float(validator(model))
        model.fit_info["validate_seconds"] = time.perf_counter() - start


def choose_on_validation(
    model: Any,
    attribute: str,
    grid: Iterable[float],
    validator: Callable[[Any], float] | None,
) -> None:
    """Set ``model.<attribute>`` to the grid value with the best validation score (the first
    one without validation data); the search goes to ``fit_info["<attribute>_search"]``."""
    grid = tuple(grid)
    if validator is None:
        setattr(model, attribute, grid[0])
        return
    if hasattr(validator, "grid"):  # every value in one pass over the validation users
        scores = dict(validator.grid(model, attribute, grid))
    else:
        scores = {}
        for value in grid:
            setattr(model, attribute, value)
            scores[value] = validator(model)
    setattr(model, attribute, max(scores, key=scores.get))
    model.fit_info[f"{attribute}_search"] = {str(k): round(v, 5) for k, v in scores.items()}
    model.fit_info[attribute] = getattr(model, attribute)
