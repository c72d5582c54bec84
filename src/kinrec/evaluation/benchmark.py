"""Train-and-evaluate runs on a fixed split: the engine behind ``kinrec benchmark``."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kinrec.data.dataset import Split
from kinrec.evaluation.history_prior import choose_history_prior
from kinrec.evaluation.protocol import DEFAULT_KS, evaluate, ndcg_validator, sample_users
from kinrec.models.base import ProgressCallback, Recommender
from kinrec.models.registry import create_model


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def fit_with_validation(
    model: Recommender, split: Split, progress: ProgressCallback | None = None
) -> Recommender:
    """Fit on ``split.train``, early-stopping on validation NDCG@10 when valid rows exist;
    then choose the fold-in's popularity prior for short histories on validation (models
    that fold in and whose config asks for it: ``history_prior``). ``fit_info``'s
    ``train_seconds`` counts both. A differentially private model (``dp_epsilon`` set)
    gets no choice on validation: its hyper-parameters are fixed in advance, so the prior
    and the graph lift stay off (:mod:`kinrec.privacy.dp`)."""
    validator = ndcg_validator(split.train, split.valid) if len(split.valid) else None
    model.fit(split.train, split.valid, validator=validator, progress=progress, side=split.dataset)
    private = getattr(model.config, "dp_epsilon", None) is not None
    if getattr(model.config, "history_prior", False) and not private:
        start = time.perf_counter()
        choose_history_prior(model, split.train, split.valid)
        seconds = time.perf_counter() - start
        model.fit_info["train_seconds"] = model.fit_info.get("train_seconds", 0.0) + seconds
    return model


def run_one(
    model_name: str,
    split: Split,
    seed: int,
    params: dict[str, Any] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    progress: ProgressCallback | None = None,
    eval_users: int | None = None,
) -> dict[str, Any]:
    """Train one model with one seed and evaluate on test (train+valid masked).

    Returns a flat record: ``model``, ``seed``, every metric (``"ndcg@10"``...), ``segments``
    (``cold``/``warm`` items when the test part has cold items, user activity groups),
    with ``eval_users`` a seeded sample of that many test users instead of all of them,
    ``train_seconds``, ``eval_seconds``, ``peak_rss_mb`` and the model's ``fit_info``.
    """
    model = create_model(model_name, {**(params or {}), "seed": seed})
    fit_with_validation(model, split, progress)
    start = time.perf_counter()
    truth = sample_users(split.test, eval_users)
    result = evaluate(model, truth, exclude=[split.train, split.valid], ks=ks, train=split.train)
    eval_seconds = time.perf_counter() - start
    return {
        "model": model_name,
        "seed": seed,
        **{k: round(v, 6) for k, v in result.metrics.items()},
        "segments": {
            name: {k: round(v, 6) for k, v in seg.items()} for name, seg in result.segments.items()
        },
        "segment_users": result.segment_users,
        "n_users": result.n_users,
        "train_seconds": round(model.fit_info["train_seconds"], 3),
        "eval_seconds": round(eval_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "fit_info": {k: v for k, v in model.fit_info.items() if k != "train_seconds"},
    }


def run_benchmark(
    split: Split,
    models: Sequence[str],
    seeds: Sequence[int],
    params: dict[str, dict[str, Any]] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    progress: ProgressCallback | None = None,
    eval_users: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one record per (model, seed), in order."""
    for name in models:
        for seed in seeds:
            yield run_one(name, split, seed, (params or {}).get(name), ks, progress, eval_users)
