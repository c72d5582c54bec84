"""kinrec's Python API: a few functions over the objects the rest of kinrec already has.

::

    import kinrec

    data = kinrec.load_dataset("ml-100k")
    split = kinrec.split(data)
    model = kinrec.fit("ease", split)
    kinrec.evaluate(model, split).metrics["ndcg@10"]
    kinrec.recommend(model, user="1", k=10)
    kinrec.recommend(model, history=["50", "172"], k=10)

What you hold is what kinrec already has: a :class:`~kinrec.data.dataset.Dataset`, a
:class:`~kinrec.data.dataset.Split`, a fitted :class:`~kinrec.models.base.Recommender`, and
lists of :class:`~kinrec.models.base.Scored` items. The verbs are module-level functions that
take the model first, as LensKit's ``recommend(pipeline, user, n)`` does, rather than methods
as in implicit (``model.recommend(...)``). Why functions:

* Each verb is one small function over code that exists once: :func:`fit` is
  :func:`~kinrec.evaluation.benchmark.fit_with_validation` (the benchmark's and ``kinrec
  train``'s fit), :func:`recommend` scores as the service does
  (:class:`~kinrec.serving.foldin.ModelScorer`, :func:`~kinrec.serving.ranking.top_k`,
  the catalogue's category filter), :func:`evaluate` is ``kinrec benchmark``'s protocol.
  These live above the model layer (evaluation, serving), which models must not import, so
  they cannot be model methods without turning the dependency around.
* A model author implements the hooks of :class:`~kinrec.models.base.Recommender` (``_fit``,
  ``score``, ``score_history``...); the user calls these functions. The model's own
  ``recommend``/``similar_items``/``save``/``load`` methods are that lower layer (what the
  functions and the service call); the API is the functions, documented in docs/python.md.

Ids are the data's external ids (strings) everywhere; an unknown one is a ``KeyError``
naming it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from kinrec.data.dataset import Dataset, Interactions, Split
from kinrec.models.base import ProgressCallback, Recommender, Scored
from kinrec.models.registry import register_model

if TYPE_CHECKING:
    from kinrec.evaluation.protocol import EvaluationResult
    from kinrec.serving.catalog import Catalog
    from kinrec.serving.foldin import ModelScorer

__all__ = [
    "add_items",
    "evaluate",
    "fit",
    "load",
    "load_dataset",
    "load_split",
    "recommend",
    "register_model",
    "save",
    "similar_items",
    "split",
]

Format = Literal["recbole", "ml-1m", "unisrec", "table"]
SplitMethod = Literal["random", "temporal", "leave-one-out", "cold-item"]


# ---------------------------------------------------------------------------------- data
def load_dataset(
    source: str | os.PathLike[str],
    format: Format | None = None,
    *,
    name: str | None = None,
    text_template: str | None = None,
) -> Dataset:
    """A dataset from a registered name or a path, as ``kinrec ingest`` reads it.

    ``source`` is a registered name (``kinrec data list``: ``"ml-100k"``...; fetched into the
    cache when needed) unless it is an existing path: a folder of RecBole atomic files
    (``format="recbole"``, the default for a folder), a MovieLens-1M folder (``"ml-1m"``), a
    UniSRec folder (``"unisrec"``), or a table mapping TOML (``"table"``, the default for a
    ``.toml`` file; docs/data.md). ``name`` renames the dataset; ``text_template`` (e.g.
    ``"{title}. {description}"``) replaces its item-text template. Predefined split files
    are read by :func:`load_split`.
    """
    from kinrec.config import DataConfig
    from kinrec.data.registry import list_datasets
    from kinrec.pipeline import load_source

    path = Path(source)
    if format is None and isinstance(source, str) and not path.exists():
        known = [spec.name for spec in list_datasets()]
        if source not in known:
            raise KeyError(
                f"{source!r} is neither a registered dataset ({', '.join(known)}) nor an "
                "existing path"
            )
        dataset = load_source(DataConfig(dataset=source, text_template=text_template))
        if name:
            dataset.name = name
        return dataset
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if format is None:
        format = "table" if path.is_file() and path.suffix.lower() == ".toml" else "recbole"
    config = DataConfig(dataset=name, path=path, format=format, text_template=text_template)
    return load_source(config)


def load_split(path: str | os.PathLike[str]) -> Split:
    """A folder of predefined split files: RecBole benchmark files (``NAME.train.inter``,
    ``NAME.valid.inter``, ``NAME.test.inter``, with ``NAME.item``... beside them) or UniSRec
    leave-one-out files; what ``kinrec benchmark`` reads."""
    from kinrec.pipeline import load_split_folder

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a folder of split files")
    return load_split_folder(path)


def split(
    dataset: Dataset,
    method: SplitMethod = "random",
    *,
    ratios: Sequence[float] | None = None,
    seed: int | None = None,
    cold_fraction: float | None = None,
) -> Split:
    """Train, validation and test parts of ``dataset`` (``[split]`` of a pipeline config).

    ``method``: ``"random"`` (per user, seeded), ``"temporal"`` (by timestamp),
    ``"leave-one-out"`` (each user's last row to test, the one before to valid) or
    ``"cold-item"`` (``cold_fraction`` of the items held out into test, the rest random).
    Unset options take :class:`~kinrec.config.SplitConfig`'s defaults: ``ratios`` (0.8, 0.1,
    0.1), ``seed`` 2026, ``cold_fraction`` 0.15. Predefined split files: :func:`load_split`.
    """
    from kinrec.config import SplitConfig
    from kinrec.pipeline import make_split

    if method == "predefined":
        raise ValueError("predefined split files are read by kinrec.load_split(path)")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"split needs a Dataset, got {type(dataset).__name__}")
    options = {"ratios": ratios, "seed": seed, "cold_fraction": cold_fraction}
    config = SplitConfig(method=method, **{k: v for k, v in options.items() if v is not None})
    return make_split(dataset, config)


# ---------------------------------------------------------------------------------- fitting
def fit(
    model: str | Recommender,
    data: Split | Interactions,
    valid: Interactions | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    side: Dataset | None = None,
    progress: ProgressCallback | bool = False,
) -> Recommender:
    """Fit a model, using the validation part whenever there is one; returns the model.

    ``model`` is a registered name (``kinrec models``; ``params`` its configuration, checked
    against its ``Config``) or an unfitted instance. ``data`` is a :class:`Split` (its train
    part is learnt, its validation part early-stops and chooses every weight chosen on
    validation, including the new-user popularity prior; its dataset is the side information)
    or train :class:`Interactions`, with ``valid`` interactions over the same vocabularies and
    the dataset as ``side`` when the model needs item text or a graph. Both forms fit exactly
    as ``kinrec train`` and ``kinrec benchmark`` do
    (:func:`~kinrec.evaluation.benchmark.fit_with_validation`).

    ``progress``: ``True`` shows a progress bar of iterative models' epochs (on stderr), or
    a callback ``(phase, step, total, values)``.
    """
    from kinrec.evaluation.benchmark import fit_with_validation
    from kinrec.models.registry import create_model

    if isinstance(model, str):
        model = create_model(model, dict(params or {}))
    elif not isinstance(model, Recommender):
        raise TypeError(
            f"model must be a registered name or a Recommender, got {type(model).__name__}"
        )
    elif params is not None:
        raise ValueError("params configure a model given by name; this model is configured")
    if isinstance(data, Split):
        if valid is not None or side is not None:
            raise ValueError("a Split carries its validation part and dataset: give no valid/side")
        parts = data
    elif isinstance(data, Interactions):
        none = data.subset(np.zeros(len(data), dtype=bool))
        if valid is None:
            valid = none
        elif not isinstance(valid, Interactions):
            raise TypeError(f"valid must be Interactions, got {type(valid).__name__}")
        elif not _same_ids(valid.user_map, data.user_map) or not _same_ids(
            valid.item_map, data.item_map
        ):
            raise ValueError("train and valid must share their user and item vocabularies")
        parts = Split(data, valid, none, side)
    else:
        raise TypeError(f"data must be a Split or train Interactions, got {type(data).__name__}")
    with _progress(progress) as callback:
        return fit_with_validation(model, parts, callback)


@contextlib.contextmanager
def _progress(progress: ProgressCallback | bool) -> Iterator[ProgressCallback | None]:
    if progress is True:
        from kinrec.cli.common import EpochProgress

        with EpochProgress() as bar:
            yield bar
    else:
        yield progress or None


def _same_ids(a: Any, b: Any) -> bool:
    return a is b or a.ids() == b.ids()


# ---------------------------------------------------------------------------------- inference
def recommend(
    model: Recommender,
    user: str | None = None,
    *,
    history: Sequence[str] | Mapping[str, float] | None = None,
    k: int = 10,
    exclude_seen: bool = True,
    allow: Iterable[str] | None = None,
    deny: Iterable[str] = (),
    category: str | None = None,
    catalog: Dataset | None = None,
) -> list[Scored]:
    """The ``k`` best items, best first, for a known ``user`` or for a ``history``.

    ``user``: an id the model was trained on; its scores are the model's ``score``.
    ``history``: item ids of someone the model has not seen (a new user, or one outside the
    service), or a mapping item id -> weight (default 1; a repeated item counts once, at its
    largest weight). Scored as the service scores a new user: the model's fold-in, shrunk
    towards popularity as much as the validation-chosen prior says for the history's length;
    an empty history gets the most popular items. Give one of ``user`` and ``history``.

    ``exclude_seen`` leaves out the user's training items, or the history's. Filters, all
    optional and combined: ``allow`` (only these item ids), ``deny`` (never these), and
    ``category``, the service's filter (``?category=``): items with an attribute token
    ``"Comedy"`` in any attribute field, or ``"genre:Comedy"`` in one (case-insensitive),
    read from ``catalog`` (default: the dataset the model was fitted with; a loaded model
    does not keep it, so pass the dataset). Fewer than ``k`` items come back when fewer pass.
    """
    from kinrec.serving.ranking import top_k

    _check_k(k)
    model._require_fitted()
    if (user is None) == (history is None):
        raise ValueError(
            "give either user= (an id the model was trained on) or history= (item ids of "
            "someone it was not)" + (", not both" if user is not None else "")
        )
    scorer = _scorer(model)
    n_items = scorer.n_items
    allowed = np.ones(n_items, dtype=bool)
    if user is not None:
        if not isinstance(user, str):
            raise TypeError(f"user must be an id (str), got {type(user).__name__}")
        if user not in model.user_map:
            raise KeyError(
                f"unknown user id {user!r}: the model was not trained on it; pass "
                "history=[item ids] for someone it has not seen"
            )
        index = model.user_map.index(user)
        seen = model.seen
        masked = seen.indices[seen.indptr[index] : seen.indptr[index + 1]]
        scores = scorer.known_scores(index)
    else:
        items, weights = _history(model, history)
        masked = items
        if len(items):
            scores = scorer.history_scores(None, np.zeros(0, np.int64), items, weights)
            if scores is None:
                raise ValueError(f"{model.name} cannot score a history (it cannot fold in)")
        else:
            scores = scorer.popularity
    if exclude_seen:
        allowed[masked] = False
    if allow is not None:
        only = np.zeros(n_items, dtype=bool)
        only[_items(model, allow, "allow")] = True
        allowed &= only
    allowed[_items(model, deny, "deny")] = False
    if category:
        allowed &= _catalog(model, catalog).category_mask(category)
    candidates = np.flatnonzero(allowed)
    values = np.asarray(scores, dtype=np.float64)[candidates]
    finite = np.isfinite(values)
    candidates, values = candidates[finite], values[finite]
    top = top_k(values, k)
    ids = model.item_map.ids(candidates[top])
    return [Scored(i, float(s)) for i, s in zip(ids, values[top], strict=True)]


def similar_items(model: Recommender, item_id: str, k: int = 10) -> list[Scored]:
    """The ``k`` items most similar to ``item_id``, most similar first: cosine of the model's
    item vectors, or of co-occurrence in its training data for models without vectors."""
    _check_k(k)
    model._require_fitted()
    _items(model, [item_id], "item_id")
    return model.similar_items(item_id, k)


def add_items(model: Recommender, items: Dataset, ids: Iterable[str] | None = None) -> list[str]:
    """Make new items recommendable without retraining, from their description in
    ``items`` (item table: text and attributes; links to knowledge-graph entities and the
    triples about them), as ``POST /v1/items`` does. ``ids``: which of the described items to
    add (default: all that the model does not know). Returns the ids added.

    Only models with content views can (``model.supports_new_items``: lm-knn, kg-knn,
    kinformer). To filter them by ``category``, pass a ``catalog`` to :func:`recommend` that
    describes them.
    """
    model._require_fitted()
    if not model.supports_new_items:
        raise ValueError(f"{model.name} cannot score items it was not trained on")
    described = [str(i) for i in items.items["item_id"]] if len(items.items) else []
    described += items.link_item_ids()
    if ids is None:
        wanted = [i for i in dict.fromkeys(described) if i not in model.item_map]
    else:
        wanted = [i for i in dict.fromkeys(_ids(ids, "ids")) if i not in model.item_map]
        missing = sorted(set(wanted) - set(described))
        if missing:
            raise KeyError(f"item ids not described in the dataset's items or links: {missing}")
    if wanted:
        model.add_items(wanted, items)
    return wanted


def evaluate(
    model: Recommender,
    split: Split,
    ks: Sequence[int] = (5, 10, 20, 50),
    *,
    users: int | None = None,
) -> EvaluationResult:
    """Full-ranking metrics on the test part of ``split`` (the one the model was fitted on),
    with each user's train and validation items masked, as ``kinrec benchmark`` reports them:
    ``result.metrics`` (``"ndcg@10"``, ``"recall@10"``...), ``result.segments`` (cold/warm
    items, user activity groups). ``users``: a seeded sample of that many test users."""
    from kinrec.evaluation.protocol import evaluate as evaluate_protocol
    from kinrec.evaluation.protocol import sample_users

    model._require_fitted()
    if any(int(k) < 1 for k in ks) or not len(ks):
        raise ValueError(f"ks must be positive cut-offs, got {list(ks)}")
    if not _same_ids(model.user_map, split.train.user_map) or not _same_ids(
        model.item_map, split.train.item_map
    ):
        raise ValueError(
            "the model was not fitted on this split: its users or items differ (evaluate "
            "on the split it was fitted on, before add_items)"
        )
    truth = sample_users(split.test, users)
    return evaluate_protocol(
        model, truth, exclude=[split.train, split.valid], ks=ks, train=split.train
    )


# ---------------------------------------------------------------------------------- storage
def save(model: Recommender, path: str | os.PathLike[str]) -> Path:
    """Write a fitted model to the folder ``path`` (replaced atomically); what ``kinrec
    serve`` and :func:`load` read. Returns the path."""
    return model.save(Path(path))


def load(path: str | os.PathLike[str]) -> Recommender:
    """A model saved by :func:`save` (or ``kinrec train -o``), of whichever registered class
    it was."""
    return Recommender.load(Path(path))


# ---------------------------------------------------------------------------------- helpers
def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _ids(ids: Iterable[str], what: str) -> list[str]:
    if isinstance(ids, str):
        raise TypeError(f"{what} must be a list of item ids, not one string ({ids!r})")
    return list(ids)


def _items(model: Recommender, ids: Iterable[str], what: str) -> np.ndarray:
    """Indices of item ids; ``KeyError`` naming the first the model does not know."""
    ids = _ids(ids, what)
    for item in ids:
        if item not in model.item_map:
            raise KeyError(f"unknown item id {item!r} ({what})")
    return model.item_map.indices(ids)


def _history(
    model: Recommender, history: Sequence[str] | Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Item indices and weights of a history."""
    if isinstance(history, Mapping):
        ids, weights = list(history), np.asarray(list(history.values()), dtype=np.float32)
        if not np.isfinite(weights).all() or (weights <= 0).any():
            raise ValueError("history weights must be positive numbers")
    else:
        ids = _ids(history, "history")
        weights = np.ones(len(ids), dtype=np.float32)
    return _items(model, ids, "history"), weights


_CACHE = "_kinrec_api_cache"


def _cached(model: Recommender, kind: str, key: tuple[Any, ...], build: Any) -> Any:
    """What ``build()`` made for this model in its current state (``key`` holds the objects
    that state is made of, compared by identity, and sizes); built again when it changed.
    Kept on the model, so that it goes when the model goes."""
    cache: dict[str, tuple[tuple[Any, ...], Any]] = model.__dict__.setdefault(_CACHE, {})
    held = cache.get(kind)
    if held is not None and _same_state(held[0], key):
        return held[1]
    value = build()
    cache[kind] = (key, value)
    return value


def _same_state(old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    if len(old) != len(new):
        return False
    return all(a == b if isinstance(a, int) else a is b for a, b in zip(old, new, strict=True))


def _scorer(model: Recommender) -> ModelScorer:
    """The service's scorer of this model (it probes the model once: kept until the model
    is refitted or grows)."""
    from kinrec.serving.foldin import ModelScorer

    key = (model.seen, model.item_map, len(model.item_map))
    return _cached(model, "scorer", key, lambda: ModelScorer(model))


def _catalog(model: Recommender, dataset: Dataset | None) -> Catalog:
    """The service's catalogue of the model's items over ``dataset``'s item attributes."""
    from kinrec.serving.catalog import Catalog
    from kinrec.serving.persist import StoredCatalog

    dataset = dataset if dataset is not None else model.side
    if dataset is None or not dataset.attribute_fields or not len(dataset.items):
        raise ValueError(
            "category needs item attributes: pass catalog=<the Dataset> (a loaded model does "
            "not keep its data; this one has no attribute fields)"
        )
    key = (dataset, model.item_map, len(model.item_map))
    return _cached(
        model,
        "catalog",
        key,
        lambda: Catalog(model.item_map.ids(), StoredCatalog.from_dataset(dataset), dataset.name),
    )
