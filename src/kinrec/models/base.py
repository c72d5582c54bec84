"""One small interface for every model: fit, score, recommend, similar_items, save, load.

A model subclasses :class:`Recommender`, declares a pydantic ``Config`` and a registry ``name``,
and implements four hooks:

* ``_fit(train, valid, validator, progress)``: learn from indexed interactions.
* ``score(users, items=None)``: a dense ``len(users) x n_items`` (or ``x len(items)``) array.
* ``_state()`` / ``_load_state(arrays)``: the learned arrays (saved as safetensors).

Everything else (vocabularies, seen-item exclusion, artifact layout, atomic writes) lives here.
Iterative models get a ``validator`` callable (model -> validation NDCG@10) built by the caller
from :mod:`kinrec.evaluation`, so models never import the evaluation layer.

What side information a model needs is declared, not assumed: ``requires`` lists
:class:`Requirement` s (each met by any one of its capabilities, the names of
:meth:`kinrec.data.dataset.Dataset.capabilities`), checked at the start of ``fit`` before any
work; data that lacks one raises :class:`DataRequirementError`, saying what the model needs
and what the data holds. ``uses`` lists what a model takes when the data holds it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from safetensors.numpy import load_file, save_file

from kinrec.data.dataset import INTERACTION_COLUMNS, Dataset, IdMap, Interactions, empty_frame

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
FORMAT_VERSION = 1

Validator = Callable[["Recommender"], float]
"""Returns the validation metric (NDCG@10) of a model in its current state."""

ProgressCallback = Callable[[str, int, int, dict[str, float]], None]
"""``(phase, step, total, values)``: called by iterative models after each epoch."""

REFERENCE_ITEMS = 2048
"""Items (a seeded uniform sample) whose fold-in scores stand in for the whole catalogue's
where a new user's scores are blended with popularity over part of a large catalogue
(:meth:`Recommender.blend_history_prior_subset`): by the service's index path, and by the
validation choice of the blend's strength on large catalogues."""


def reference_items(n_items: int, size: int = REFERENCE_ITEMS) -> np.ndarray:
    """The seeded uniform sample of ``size`` items (sorted) that stands in for a catalogue of
    ``n_items`` (all of them when it is no larger): the same sample for the same size."""
    rng = np.random.default_rng(n_items)
    return np.sort(rng.choice(n_items, size=min(n_items, size), replace=False)).astype(np.int64)


def untrained(counts: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """Whether items had no interaction in the training data, from ``counts``, each item's
    training interaction count (item ``i``: ``counts[i]``): a count of 0, or none at all (an
    item past the end of ``counts``: added after training). ``idx``: the items (default:
    those of ``counts``).

    The one definition of an item without training interactions: the service labels them
    new (:mod:`kinrec.serving.recommend`); kinformer splits them into new items (declared
    new in the side data, or added later) and dormant ones
    (:mod:`kinrec.models.transfer.cold`)."""
    if idx is None:
        return np.asarray(counts) == 0
    known = idx < len(counts)
    out = np.ones(len(idx), dtype=bool)
    out[known] = counts[idx[known]] == 0
    return out


CAPABILITIES: dict[str, str] = {
    "text": "item text",
    "attributes": "item attributes",
    "knowledge_graph": "knowledge-graph triples with links to items",
    "user_attributes": "user attributes",
    "ratings": "ratings",
    "timestamps": "timestamps",
}
"""What a dataset can hold beyond user-item pairs (:meth:`Dataset.capabilities`), in words."""


@dataclass(frozen=True)
class Requirement:
    """Side information a model cannot fit without: any one of ``any_of`` (capability names of
    :data:`CAPABILITIES`). ``because`` names the setting that asks for it (empty: the model
    itself); ``hint`` says what to do instead."""

    any_of: tuple[str, ...]
    because: str = ""
    hint: str = ""

    def met_by(self, holds: Mapping[str, bool]) -> bool:
        return any(holds.get(c, False) for c in self.any_of)

    def describe(self) -> str:
        need = " or ".join(CAPABILITIES[c] for c in self.any_of)
        return f"{need} ({self.because})" if self.because else need


class DataRequirementError(ValueError):
    """The data lacks what a model needs (raised by :meth:`Recommender.fit` before any work)."""

    def __init__(
        self,
        model: str,
        requirement: Requirement,
        holds: Mapping[str, bool],
        side: bool = True,
        message: str | None = None,
    ) -> None:
        self.model, self.requirement, self.holds = model, requirement, dict(holds)
        if message is not None:
            super().__init__(message)
            return
        held = [CAPABILITIES[c] for c, on in holds.items() if on and c in CAPABILITIES]
        if not side:
            data = "no side information was given (only interactions)"
        elif held:
            data = "the data holds interactions with " + ", ".join(held)
        else:
            data = "the data holds interactions only"
        hint = requirement.hint or _default_hint(requirement)
        super().__init__(f"{model} needs {requirement.describe()}: {data}; {hint}")


def _default_hint(requirement: Requirement) -> str:
    from kinrec.models.registry import available_models, get_model_class

    free = [n for n in available_models() if not get_model_class(n).requires]
    imports = {
        "text": "an items table with a text field",
        "attributes": "item attributes",
        "knowledge_graph": "knowledge-graph triples and links",
        "user_attributes": "a users table",
        "ratings": "ratings",
        "timestamps": "timestamps",
    }
    wanted = " or ".join(imports[c] for c in requirement.any_of)
    models = ", ".join(free)
    return f"use a model that needs none ({models}), or add {wanted} to the data (docs/data.md)"


def data_capabilities(train: Interactions | None, side: Dataset | None) -> dict[str, bool]:
    """What ``side`` holds (all false without it); ratings and timestamps also from ``train``."""
    holds = side.capabilities() if side is not None else dict.fromkeys(CAPABILITIES, False)
    if train is not None:
        for name, values in (("ratings", train.ratings), ("timestamps", train.timestamps)):
            if values is not None and len(values) and not np.isnan(values).all():
                holds[name] = True
    return holds


class ModelConfig(BaseModel):
    """Base of every model config: typed, immutable, TOML-loadable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 2026
    history_prior: bool = Field(
        True,
        description="shrink fold-in scores of short histories towards popularity, "
        "strength chosen on validation (models that fold in)",
    )
    kg_profile_neighbours: int = Field(
        10,
        ge=0,
        description="a new user's history lifts each of its items' this many "
        "knowledge-graph neighbours (items sharing the most specific entities), by as much "
        "as validation says (0 where it does not help); 0: off (models that fold in, data "
        "with a graph or item attributes)",
    )


def neighbour_shares(
    graph: sp.csr_matrix, items: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The items of ``weights @ graph`` (sorted; rows of ``graph`` beyond its size: none)
    and their values relative to the highest (1): what
    :meth:`Recommender.graph_lift` scales by the model's lift."""
    items = np.asarray(items, dtype=np.int64)
    if not len(items):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if weights is None:
        weights = np.ones(len(items))
    inside = items < graph.shape[0]
    row = sp.csr_matrix(
        (
            np.asarray(weights, dtype=np.float64)[inside],
            (np.zeros(int(inside.sum()), dtype=np.int64), items[inside]),
        ),
        shape=(1, graph.shape[0]),
    )
    spread = (row @ graph).tocsr()
    spread.eliminate_zeros()
    spread.sort_indices()
    if not spread.nnz or spread.data.max() <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return spread.indices.astype(np.int64), spread.data / spread.data.max()


@dataclass(frozen=True)
class Scored:
    """One recommended or similar item."""

    item_id: str
    score: float


def _rank_map(source: np.ndarray, target: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Map ``values`` from the scale of ``source`` to that of ``target`` (paired scores of the
    same items) so that each lands at the rank it has among ``source``: a monotone,
    piecewise-linear map through the two sorted score lists; beyond their ends, the
    distance to the end carries over (scaled by the two lists' spreads)."""
    xs, ys = np.sort(source), np.sort(target)
    mapped = np.interp(values, xs, ys)
    spread = (ys[-1] - ys[0]) / (xs[-1] - xs[0]) if xs[-1] > xs[0] else 1.0
    above, below = values > xs[-1], values < xs[0]
    mapped[above] = ys[-1] + (values[above] - xs[-1]) * spread
    mapped[below] = ys[0] + (values[below] - xs[0]) * spread
    return mapped


def _ranks(top: np.ndarray, sample: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
    """The scores of ``total`` items from the best down, and the rank each stands at (0: the
    best): ``top`` are every item above some score, one rank each; ``sample`` a uniform
    sample of the others, each at the middle of the ranks it stands for."""
    top, sample = -np.sort(-top), -np.sort(-sample)
    width = (total - len(top)) / len(sample) if len(sample) else 1.0
    below = len(top) + (np.arange(len(sample)) + 0.5) * width - 0.5
    return np.concatenate([top, sample]), np.concatenate([np.arange(len(top)), below])


def _catalogue_moments(
    scores: np.ndarray,
    finite: np.ndarray,
    sample: np.ndarray,
    whole: np.ndarray | None,
    catalogue: int,
) -> tuple[float, float]:
    """Mean and standard deviation over a catalogue of ``catalogue`` items of the finite
    ``scores``, estimated from the entries in ``sample`` (a uniform sample of it) and, where
    ``whole`` marks entries that are the whole of their part of the catalogue, from those
    exactly: the sample then stands for the other items only, in proportion to their number
    (a stratified estimate)."""
    if whole is None or not (whole := np.asarray(whole, dtype=bool) & finite).any():
        own = scores[sample]
        return float(own.mean()), float(own.std())
    rest = sample & ~whole
    known = scores[whole]
    others = max(catalogue - len(known), 0)
    if not rest.any() or others == 0:
        return float(known.mean()), float(known.std())
    sampled = scores[rest]
    n = len(known) + others
    mean = (known.sum() + others * sampled.mean()) / n
    second = ((known**2).sum() + others * (sampled**2).mean()) / n
    return float(mean), float(np.sqrt(max(second - mean**2, 0.0)))


def _rank_map_top(
    source: tuple[np.ndarray, np.ndarray],
    target: tuple[np.ndarray, np.ndarray],
    total: int,
    values: np.ndarray,
) -> np.ndarray:
    """:func:`_rank_map` where neither list is known whole: each of ``source`` and
    ``target`` is ``(top, sample)`` (:func:`_ranks`) of the same ``total`` items. A value
    lands at the rank it has among the source (a tie: the best rank of the tied scores, as
    :func:`_rank_map`), and takes the target's score at that rank; between ranks, linearly.
    Given no top and the whole list as the sample, this is :func:`_rank_map`."""
    xs, x_ranks = _ranks(*source, total)
    ys, y_ranks = _ranks(*target, total)
    rank = np.interp(values, xs[::-1], x_ranks[::-1])
    mapped = np.interp(rank, y_ranks, ys)
    spread = (ys[0] - ys[-1]) / (xs[0] - xs[-1]) if xs[0] > xs[-1] else 1.0
    above, below = values > xs[0], values < xs[-1]
    mapped[above] = ys[0] + (values[above] - xs[0]) * spread
    mapped[below] = ys[-1] + (values[below] - xs[-1]) * spread
    return mapped


@dataclass(frozen=True)
class Ceiling:
    """What no item outside a scored subset of the catalogue exceeds
    (:meth:`Recommender.blend_history_prior_subset`): ``score``, a fold-in score; and
    ``popular``, an item with at least as many training interactions as any item outside
    (None: every item with training interactions is in the subset)."""

    score: float
    popular: int | None


def _text_template(side: Dataset | None) -> str | None:
    """The template that renders ``side``'s item texts (None: no items table)."""
    if side is None or not len(side.items):
        return None
    from kinrec.knowledge.text import template_for

    return template_for(side).template


ERASED_PREFIX = "\x00erased:"
"""How a forgotten user's id is replaced in a model's user map (:func:`erased_id`): a control
character no API id may hold, then the id's digest."""


def erased_id(user_id: str) -> str:
    """The tombstone that replaces a forgotten user's id: no id a client can send, and not
    the id itself (its SHA-256 digest)."""
    import hashlib

    return ERASED_PREFIX + hashlib.sha256(user_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ForgetResult:
    """What :meth:`Recommender.forget` did: ``users`` forgotten; ``exact``, the parts
    updated exactly (as a fit without them would be); ``stale``, the parts that still depend
    on them until the model is retrained without them; ``seconds`` it took."""

    users: int
    exact: tuple[str, ...]
    stale: tuple[str, ...]
    seconds: float


@dataclass
class Forgetting:
    """A computed erasure (:meth:`Recommender.prepare_forget`), not yet applied."""

    model: Recommender
    users: np.ndarray
    seen: sp.csr_matrix | None
    update: Callable[[], None] | None
    result: ForgetResult

    def apply(self) -> ForgetResult:
        """Install the erasure in the model (fast: assignments). A plan that changes nothing
        (no exact part) leaves the model as it is."""
        model = self.model
        if self.seen is None or self.update is None:
            return self.result
        model.seen = self.seen
        model._popularity = None
        self.update()
        ids = model.user_map.ids()
        for u in self.users:
            if not ids[u].startswith(ERASED_PREFIX):
                ids[u] = erased_id(ids[u])
        model.user_map = IdMap(ids)
        done = set(model.forgotten.tolist()) | set(self.users.tolist())
        model.fit_info["erasure"] = {
            "forgotten": sorted(int(u) for u in done),
            "exact": list(model.forgets_exactly),
        }
        return self.result


class Recommender(ABC):
    """Base class of all kinrec models."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    requires: ClassVar[tuple[Requirement, ...]] = ()
    """Side information the model cannot fit without (checked at the start of ``fit``)."""
    uses: ClassVar[tuple[str, ...]] = ()
    """Capabilities the model takes when the data holds them; it ignores the rest."""

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            config = self.Config.model_validate(config)
        self.config = config
        self.user_map: IdMap | None = None
        self.item_map: IdMap | None = None
        self.seen: sp.csr_matrix | None = None
        self.fit_info: dict[str, Any] = {}
        self.side: Dataset | None = None
        self.data_holds: dict[str, bool] = {}
        self.text_template: str | None = None
        self.history_prior_strength = 0.0
        self.profile_graph: sp.csr_matrix | None = None
        """Items' knowledge-graph neighbours (rows sum to 1) whose lift a new user's history
        adds to its fold-in scores (:meth:`graph_lift`); None: none."""
        self.profile_graph_lift = 0.0
        self._popularity: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train: Interactions,
        valid: Interactions | None = None,
        validator: Validator | None = None,
        progress: ProgressCallback | None = None,
        side: Dataset | None = None,
    ) -> Self:
        """Learn from ``train``; iterative models early-stop on ``validator`` when given.

        ``side`` is the dataset's side information (item texts and attributes, knowledge-graph
        triples and links), available to ``_fit`` as ``self.side``; content and transfer models
        need it, collaborative models ignore it. It is not saved with the model.

        What the data holds is checked first against :meth:`requirements`
        (:class:`DataRequirementError` when one is not met) and kept as ``self.data_holds``.

        With ``valid`` rows and no ``validator``, the validator is NDCG@10 on ``valid`` with
        the train items masked (:func:`~kinrec.evaluation.protocol.ndcg_validator`): early
        stopping and every choice on validation (a head's weight, a prior's weight) use the
        validation part whenever it is given, never a silent default.
        """
        if validator is None and valid is not None and len(valid):
            from kinrec.evaluation.protocol import ndcg_validator

            validator = ndcg_validator(train, valid)
        self._prepare(train, side, train.user_map, train.item_map, train.matrix())
        start = time.perf_counter()
        self._fit(train, valid, validator, progress)
        self.fit_info.setdefault("train_seconds", time.perf_counter() - start)
        return self

    def _prepare(
        self,
        train: Interactions | None,
        side: Dataset | None,
        user_map: IdMap,
        item_map: IdMap,
        seen: sp.csr_matrix,
    ) -> None:
        """What every fit sets before learning: the data check (``train`` None: the
        interactions are not at hand, only ``seen``), the side information, the id maps and
        the training rows ``seen``."""
        self.data_holds = self.check_data(train, side)
        if side is None:  # interactions only: no item text, attributes or graph
            side = Dataset(name="", interactions=empty_frame(INTERACTION_COLUMNS))
        self.side = side
        self.text_template = _text_template(side)
        # Own copies: items added after fitting (``add_items``) must not grow the caller's maps.
        self.user_map, self.item_map = user_map.copy(), item_map.copy()
        self.seen = seen

    @abstractmethod
    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None: ...

    def requirements(self) -> tuple[Requirement, ...]:
        """What this model, as configured, needs from the data (default: :attr:`requires`)."""
        return self.requires

    def unmet_requirements(self, holds: Mapping[str, bool]) -> list[Requirement]:
        """The requirements that data holding ``holds`` does not meet."""
        return [r for r in self.requirements() if not r.met_by(holds)]

    def check_data(self, train: Interactions | None, side: Dataset | None) -> dict[str, bool]:
        """What the data holds; :class:`DataRequirementError` for the first unmet requirement."""
        holds = data_capabilities(train, side)
        unmet = self.unmet_requirements(holds)
        if unmet:
            raise DataRequirementError(self.name, unmet[0], holds, side=side is not None)
        return holds

    # ------------------------------------------------------------------ inference
    @abstractmethod
    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Scores of ``items`` (default: all) for each user index in ``users``; higher is better."""

    # ------------------------------------------------------------------ capabilities
    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Scores over all items for a user given only their interacted item indices (fold-in).

        This is how a service reflects new events (and serves brand-new users) without
        retraining. Models that can do it override this; see :attr:`supports_fold_in`.
        """
        raise NotImplementedError(f"{self.name} cannot fold in new interactions")

    @property
    def supports_fold_in(self) -> bool:
        return type(self).score_history is not Recommender.score_history

    def history_rows(self, interactions: Interactions) -> sp.csr_matrix:
        """``interactions`` as the rows :meth:`score_history` reads (indices and weights per
        user): each pair weighs 1 here; a model that learned weights applies them."""
        return interactions.matrix()

    def history_weights(self, user: int) -> np.ndarray:
        """Weights of a trained user's items (in ``seen`` row order) in :meth:`score_history`,
        so that a fold-in of their history reproduces their trained scores' input: 1 here."""
        return np.ones(self.seen.indptr[user + 1] - self.seen.indptr[user], dtype=np.float32)

    def rating_weight(self, rating: float) -> float | None:
        """The weight the model learned to give an interaction with this explicit rating
        (None: the model has no use for ratings, the caller weighs them)."""
        return None

    def graph_lift(
        self, items: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """What a new user's history lifts through the items' knowledge-graph neighbours:
        the items of ``weights @ profile_graph`` (each history item's neighbours, shared by
        their edge weights: the items sharing its most specific entities) and their lift,
        :attr:`profile_graph_lift` for the highest and in proportion for the others. A user
        whose one event is a film then also reads as a little interest in its director's and
        cast's other films, however few users chose them together. The lift is in the units
        of the model's fold-in scores, chosen on validation
        (:func:`kinrec.evaluation.history_prior.choose_history_prior`); none (two empty
        arrays) without a graph or lift. Items sorted; items added after fitting have no
        neighbours."""
        graph, lift = self.profile_graph, self.profile_graph_lift
        if graph is None or lift <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        lifted, share = neighbour_shares(graph, items, weights)
        return lifted, lift * share

    def score_new_user(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Scores over all items for someone the model never trained on, from their history
        (distinct item indices, optional weights): the fold-in (:meth:`score_history`) plus
        the history's lift through the knowledge graph (:meth:`graph_lift`), shrunk towards
        popularity for the history's length (:meth:`blend_history_prior`), as the service
        scores a new user."""
        scores = np.array(self.score_history(items, weights), dtype=np.float64).ravel()
        lifted, lift = self.graph_lift(items, weights)
        scores[lifted] += lift
        return self.blend_history_prior(scores, len(items))

    def blend_history_prior(self, scores: np.ndarray, n_events: int) -> np.ndarray:
        """Fold-in ``scores`` of a user with ``n_events`` events, shrunk towards popularity.

        ``n / (n + c) * z(scores) + c / (n + c) * z(log(1 + train count))``, both standardised
        over the items with finite scores, where ``c`` is :attr:`history_prior_strength`
        (chosen on validation by :func:`kinrec.evaluation.history_prior.choose_history_prior`):
        a user with one event leans on what is popular, one with many on the model.

        Only items with training interactions have a popularity to shrink towards. Items
        without (new items, or items nobody chose) keep the rank the model gives them among
        the others: their scores are mapped through the rank correspondence of the others'
        fold-in and blended scores, so a new item the model ranks first stays first.
        ``c = 0`` returns ``scores`` unchanged; ``-inf`` stays ``-inf``.
        """
        c = self.history_prior_strength
        if c <= 0:
            return scores
        scores = np.asarray(scores, dtype=np.float64)
        finite = np.isfinite(scores)
        if not finite.any():
            return scores
        popularity, has_count = self._popularity_stats()
        pop = np.zeros(len(scores))
        known = min(len(scores), len(popularity))
        pop[:known] = popularity[:known]
        own = scores[finite]
        share = c / (c + max(n_events, 0))
        out = np.full(len(scores), -np.inf)
        out[finite] = (1 - share) * (own - own.mean()) / (own.std() + 1e-12) + share * pop[finite]
        counted = np.zeros(len(scores), dtype=bool)
        counted[:known] = has_count[:known]
        counted &= finite
        uncounted = finite & ~counted
        if uncounted.any() and counted.any():
            out[uncounted] = _rank_map(scores[counted], out[counted], scores[uncounted])
        return out

    def item_counts(self) -> np.ndarray:
        """Each item's training interaction count as the model may release it (float64):
        exact here; a differentially private model's own noisy counts, never below 0 (what
        new users' popularity and the service's popular items read)."""
        return np.asarray(self.seen.sum(axis=0), dtype=np.float64).ravel()

    def _popularity_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Standardised ``log(1 + train count)`` of every item, and which items have a train
        count at all (cached per seen matrix)."""
        key = (self.seen.shape[1], self.seen.nnz)
        if self._popularity is None or self._popularity[0] != key:
            counts = self.item_counts()
            logs = np.log1p(counts)
            z = (logs - logs.mean()) / (logs.std() + 1e-12)
            self._popularity = (key, z, counts > 0)
        return self._popularity[1], self._popularity[2]

    def add_items(self, item_ids: list[str], side: Dataset) -> None:
        """Make new items (described in ``side``: text, attributes, KG links) recommendable.

        Only models with content views can do this; see :attr:`supports_new_items`.
        """
        raise NotImplementedError(f"{self.name} cannot score items it was not trained on")

    def warm_up(self) -> None:
        """Load now what :meth:`add_items` needs lazily (a text encoder), so that the first
        new item is not slow; a no-op for models without one."""
        return None

    def _widen_seen(self) -> None:
        """Grow the seen matrix to the (extended) catalogue after ``add_items``."""
        seen = self.seen
        self.seen = sp.csr_matrix(
            (seen.data, seen.indices, seen.indptr), shape=(seen.shape[0], len(self.item_map))
        )

    def described(self, side: Dataset) -> Dataset:
        """``side`` with the item-text template this model was trained with, so that an item
        added later (:meth:`add_items`) reads as the training items did."""
        if self.text_template is None or side.text_template == self.text_template:
            return side
        return dataclasses.replace(side, text_template=self.text_template)

    @property
    def supports_new_items(self) -> bool:
        return type(self).add_items is not Recommender.add_items

    def item_vectors(self) -> np.ndarray | None:
        """Item embeddings for ``similar_items`` (None: fall back to co-occurrence)."""
        return None

    def user_vectors(self) -> np.ndarray | None:
        """Trained users' vectors ``U`` ``(n_users, d)`` (row ``u``: the user of index ``u``)
        whose dot products with :meth:`item_vectors` ``V`` are the model's scores, up to one
        positive factor ``c`` and a per-item offset ``b``: ``score(u, i) = c * U[u] @ V[i] +
        b[i]`` (``c = 1``, ``b = 0`` for a plain dot product). None (the default): the
        model's scores are not such a dot product, or it keeps no user vectors.

        The service (:mod:`kinrec.serving.foldin`) searches a trained user's vector in an
        inner-product index instead of scoring every item, and takes it as the prior of the
        user's fold-in when new events arrive; it checks the relation on a few trained users
        at start-up (fitting ``c`` and ``b``) and does without the vectors if it fails."""
        return None

    # ------------------------------------------------------------------ retrieval
    # A model whose score is not one dot product (a "tower" plus other parts, such as an
    # item-item head) declares how to find its best items without scoring the whole
    # catalogue: an inner-product index over its tower finds candidates, the other parts
    # name their own, and the model scores just those exactly. The service uses this above
    # its HNSW threshold (``kinrec.serving``); below it, or for a model that declares
    # nothing, it scores every item.
    #
    # ``user`` and ``items`` / ``weights`` say whose scores are meant, in every method:
    # ``user`` (a trained user's index) means the scores of ``score([user])``, and
    # ``items`` / ``weights`` are then ignored; ``user=None`` means the scores of
    # ``score_history(items, weights)`` (a history folded in).

    def retrieval_vectors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Item vectors ``V`` ``(n_items, d)`` and per-item offsets ``b`` ``(n_items,)`` such
        that ``retrieval_query(...) @ V[i] + b[i]`` is the model's tower: the part of its
        score an inner-product index can search. The rest of the score is found by
        :meth:`head_candidates`. None (the default): the model declares no retrieval.

        Rows of items that exist do not change when items are added (new rows are appended),
        so an index over them is extended, not rebuilt."""
        return None

    @property
    def supports_retrieval(self) -> bool:
        """Whether the model declares candidate retrieval (:meth:`retrieval_vectors`)."""
        return type(self).retrieval_vectors is not Recommender.retrieval_vectors

    def retrieval_query(
        self, user: int | None, items: np.ndarray, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """The query vector ``q`` ``(d,)`` of a trained ``user`` or of a history (``user``
        None): ``q @ V[i] + b[i]`` is the tower part of that user's score of item ``i``
        (see :meth:`retrieval_vectors`)."""
        raise NotImplementedError(f"{self.name} declares no retrieval")

    def head_candidates(
        self, user: int | None, items: np.ndarray, weights: np.ndarray | None, n: int
    ) -> np.ndarray:
        """Up to ``n`` item indices that the part of the score outside the tower ranks
        highest for this user or history, best first; items it does not lift are left out.
        Default: none (the tower is the whole score)."""
        return np.zeros(0, dtype=np.int64)

    def score_candidates(
        self,
        user: int | None,
        items: np.ndarray,
        weights: np.ndarray | None,
        candidates: np.ndarray,
    ) -> np.ndarray:
        """The model's exact scores of ``candidates`` (item indices) for a trained ``user``
        (as ``score``) or a history (``user`` None: as ``score_history``).

        Default: the whole catalogue is scored and indexed; models that declare retrieval
        override it with a computation over the candidates only."""
        candidates = np.asarray(candidates, dtype=np.int64)
        if user is not None:
            return np.asarray(self.score(np.array([user]), candidates)[0])
        return np.asarray(self.score_history(items, weights)).ravel()[candidates]

    def blend_history_prior_subset(
        self,
        scores: np.ndarray,
        items: np.ndarray,
        n_events: int,
        reference: np.ndarray,
        ceiling: Ceiling | None = None,
        whole: np.ndarray | None = None,
    ) -> np.ndarray:
        """:meth:`blend_history_prior` for the fold-in scores of some items only.

        ``scores`` are the fold-in scores of ``items`` (item indices, each once); the entries
        where ``reference`` (a boolean mask over them) is true are a uniform sample of the
        catalogue and stand in for it where the blend needs the whole catalogue's scores:
        their mean and spread, and the rank correspondence that items without a train count
        are mapped through (of the reference items that have one). Given every item, each as
        a reference, this is :meth:`blend_history_prior` exactly; given a sample, both are
        estimated from it.

        A sample of a few thousand items cannot tell the best few ranks of a large catalogue
        apart, and those are the ranks that decide whether an item without a train count
        makes a short list. ``ceiling`` says that every item outside ``items`` has a fold-in
        score of at most ``ceiling.score`` and no more training interactions than item
        ``ceiling.popular``: then every counted item of the catalogue whose fold-in score is
        at least ``ceiling.score``, and every one whose blended score is at least that of
        those two bounds together, is among ``items``, and the rank correspondence takes
        them as they are, one rank each, the sample standing only for the rest.

        ``whole`` (a boolean mask over ``items``) marks a part of the catalogue given whole:
        a new user's graph-lifted items, all of them candidates, whose lift puts them far
        above the rest. Their share of the mean and spread is then taken as it is and the
        sample stands for the other items only (a sample of a few hundred items holds a
        handful of lifted ones or none, and they decide the spread).
        """
        c = self.history_prior_strength
        if c <= 0:
            return scores
        scores = np.asarray(scores, dtype=np.float64)
        items = np.asarray(items, dtype=np.int64)
        finite = np.isfinite(scores)
        if not finite.any():
            return scores
        ref = finite & np.asarray(reference, dtype=bool)
        if not ref.any():
            ref = finite
        popularity, has_count = self._popularity_stats()
        known = items < len(popularity)
        pop = np.zeros(len(scores))
        pop[known] = popularity[items[known]]
        counted = np.zeros(len(scores), dtype=bool)
        counted[known] = has_count[items[known]]
        counted &= finite
        mean, std = _catalogue_moments(scores, finite, ref, whole, len(self.item_map))
        share = c / (c + max(n_events, 0))
        out = np.full(len(scores), -np.inf)
        z = (scores[finite] - mean) / (std + 1e-12)
        out[finite] = (1 - share) * z + share * pop[finite]
        uncounted = finite & ~counted
        ranked = counted & ref if (counted & ref).any() else counted
        if not (uncounted.any() and ranked.any()):
            return out
        if ceiling is None:
            out[uncounted] = _rank_map(scores[ranked], out[ranked], scores[uncounted])
            return out
        if ceiling.popular is None:  # every counted item is here
            top_score = top_blend = -np.inf
        else:
            top_score = ceiling.score
            z = (top_score - mean) / (std + 1e-12)
            top_blend = (1 - share) * z + share * popularity[ceiling.popular]
        top = counted & (scores >= top_score)
        best = counted & (out >= top_blend)
        out[uncounted] = _rank_map_top(
            (scores[top], scores[ranked & ~top]),
            (out[best], out[ranked & ~best]),
            int(np.count_nonzero(has_count)),
            scores[uncounted],
        )
        return out

    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True) -> list[Scored]:
        """Top-``k`` items for a known user, excluding training items unless told not to."""
        self._require_fitted()
        uidx = self.user_map.index(user_id)
        return next(self.recommend_many(np.array([uidx]), k, exclude_seen))[1]

    SCORE_CELLS: ClassVar[int] = 1 << 24
    """:meth:`recommend_many` scores about this many (user, item) cells at a time."""

    def recommend_many(
        self, users: np.ndarray, k: int = 10, exclude_seen: bool = True
    ) -> Iterator[tuple[int, list[Scored]]]:
        """:meth:`recommend` for each user index of ``users``, in order: ``(index, top-k)``
        pairs, the users scored in blocks of about :attr:`SCORE_CELLS` cells (batch
        recommendations for every user, :mod:`kinrec.distributed.batch`)."""
        self._require_fitted()
        users = np.asarray(users, dtype=np.int64)
        step = max(1, self.SCORE_CELLS // max(len(self.item_map), 1))
        seen = self.seen
        for start in range(0, len(users), step):
            chunk = users[start : start + step]
            block = np.array(self.score(chunk), dtype=np.float64)
            for scores, uidx in zip(block, chunk.tolist(), strict=True):
                if exclude_seen:
                    scores[seen.indices[seen.indptr[uidx] : seen.indptr[uidx + 1]]] = -np.inf
                yield uidx, self._top(scores, k)

    def similar_items(self, item_id: str, k: int = 10) -> list[Scored]:
        """Items most similar to ``item_id`` (cosine over item vectors or co-occurrence)."""
        self._require_fitted()
        iidx = self.item_map.index(item_id)
        vectors = self.item_vectors()
        if vectors is not None:
            norms = np.linalg.norm(vectors, axis=1) + 1e-12
            sims = (vectors @ vectors[iidx]) / (norms * norms[iidx])
        else:
            col = self.seen[:, iidx]
            co = (self.seen.T @ col).toarray().ravel()
            counts = np.asarray(self.seen.sum(axis=0)).ravel()
            sims = co / (np.sqrt(counts * counts[iidx]) + 1e-12)
        sims = sims.astype(np.float64)
        sims[iidx] = -np.inf
        return self._top(sims, k)

    def _top(self, scores: np.ndarray, k: int) -> list[Scored]:
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Scored(self.item_map.ids([i])[0], float(scores[i])) for i in top]

    def _require_fitted(self) -> None:
        if self.user_map is None or self.item_map is None or self.seen is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")

    # ------------------------------------------------------------------ erasure
    parts: ClassVar[tuple[str, ...]] = ("model",)
    """The model's learned parts, as erasure reports them (:meth:`forget`)."""
    forgets_exactly: ClassVar[tuple[str, ...]] = ()
    """The parts of :attr:`parts` that :meth:`forget` updates exactly, to what a fit without
    the forgotten users gives (default: none; the whole model stays as trained until it is
    retrained without them)."""

    def prepare_forget(self, users: np.ndarray | list[int]) -> Forgetting:
        """Compute what forgetting trained ``users`` (indices) changes, without changing the
        model: the slow part (a re-solve), which a service runs while it goes on serving;
        :meth:`Forgetting.apply` then swaps the result in at once.

        For a model that forgets nothing exactly (:attr:`forgets_exactly` empty) the plan
        changes nothing: every part is reported stale. Otherwise the users' rows of ``seen``
        are emptied (and every statistic read from ``seen``, such as the new-user popularity
        prior, follows), the exact parts are re-solved by :meth:`_forget_update` and the
        users' ids are replaced by :func:`erased_id` tombstones. Hyper-parameters chosen on
        validation (L2 weights, the history prior's strength) are kept as they are."""
        self._require_fitted()
        idx = np.unique(np.asarray(users, dtype=np.int64))
        if len(idx) and (idx[0] < 0 or idx[-1] >= self.seen.shape[0]):
            raise IndexError(f"{self.name}: user indices out of range 0..{self.seen.shape[0] - 1}")
        start = time.perf_counter()
        if not self.forgets_exactly or not len(idx):
            return Forgetting(self, idx, None, None, self._forget_result(idx, start))
        keep = np.ones(self.seen.shape[0], dtype=self.seen.dtype)
        keep[idx] = 0
        seen = sp.csr_matrix(sp.diags(keep) @ self.seen)
        seen.eliminate_zeros()
        seen.sort_indices()
        update = self._forget_update(seen, idx)
        return Forgetting(self, idx, seen, update, self._forget_result(idx, start))

    def forget(self, users: np.ndarray | list[int]) -> ForgetResult:
        """Forget trained ``users`` (indices): :meth:`prepare_forget`, then apply it."""
        return self.prepare_forget(users).apply()

    def _forget_update(self, seen: sp.csr_matrix, users: np.ndarray) -> Callable[[], None]:
        """For a model that forgets exactly: compute its exact parts from ``seen`` (the
        training rows less the forgotten ``users``' rows, emptied) as a fit on them would,
        and return a fast callable that installs them."""
        raise NotImplementedError(f"{self.name} forgets nothing exactly")

    def _forget_result(self, users: np.ndarray, start: float) -> ForgetResult:
        exact = self.forgets_exactly if len(users) else ()
        stale = tuple(p for p in self.parts if p not in self.forgets_exactly)
        return ForgetResult(len(users), exact, stale, time.perf_counter() - start)

    @property
    def forgotten(self) -> np.ndarray:
        """Indices of the trained users forgotten so far (:meth:`forget`), sorted."""
        record = self.fit_info.get("erasure") or {}
        return np.asarray(record.get("forgotten", []), dtype=np.int64)

    # ------------------------------------------------------------------ persistence
    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (names -> numpy arrays)."""

    @abstractmethod
    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_state` returned."""

    def save(self, path: str | Path, extra_files: dict[str, str] | None = None) -> Path:
        """Write the model directory atomically: weights, seen matrix, vocabularies, manifest.

        ``extra_files`` (name -> text) are written into the same directory in the same step.
        """
        self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            arrays = {f"model.{k}": np.ascontiguousarray(v) for k, v in self._state().items()}
            seen = self.seen.tocsr()
            arrays["seen.indptr"] = seen.indptr.astype(np.int64)
            arrays["seen.indices"] = seen.indices.astype(np.int64)
            arrays["history_prior"] = np.array([self.history_prior_strength], dtype=np.float64)
            if self.profile_graph is not None and self.profile_graph_lift > 0:
                graph = self.profile_graph.tocsr()
                arrays["profile_graph.lift"] = np.array([self.profile_graph_lift])
                arrays["profile_graph.indptr"] = graph.indptr.astype(np.int64)
                arrays["profile_graph.indices"] = graph.indices.astype(np.int64)
                arrays["profile_graph.data"] = graph.data.astype(np.float32)
            save_file(arrays, str(tmp / WEIGHTS))
            (tmp / "users.json").write_text(json.dumps(self.user_map.ids()))
            (tmp / "items.json").write_text(json.dumps(self.item_map.ids()))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            (tmp / MANIFEST).write_text(json.dumps(self._manifest(), indent=2, default=str))
            if path.exists():
                old = path.with_name(f".{path.name}.old.{os.getpid()}")
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def _manifest(self) -> dict[str, Any]:
        import torch

        import kinrec

        return {
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "config": self.config.model_dump(mode="json"),
            "fit_info": self.fit_info,
            "text_template": self.text_template,
            "n_users": len(self.user_map),
            "n_items": len(self.item_map),
            "versions": {
                "kinrec": kinrec.__version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "torch": torch.__version__,
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a model directory written by :meth:`save` (of this class or, from the base, any)."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"{path}: not a kinrec model directory (no {MANIFEST})")
        manifest = json.loads(manifest_path.read_text())
        target: type[Recommender] = cls
        if getattr(cls, "name", None) != manifest["model"]:
            from kinrec.models.registry import get_model_class

            target = get_model_class(manifest["model"])
        model = target(target.Config.model_validate(manifest["config"]))
        arrays = load_file(str(path / WEIGHTS))
        model.user_map = IdMap(json.loads((path / "users.json").read_text()))
        model.item_map = IdMap(json.loads((path / "items.json").read_text()))
        n_users, n_items = len(model.user_map), len(model.item_map)
        indptr, indices = arrays.pop("seen.indptr"), arrays.pop("seen.indices")
        model.history_prior_strength = float(arrays.pop("history_prior", np.zeros(1))[0])
        if "profile_graph.lift" in arrays:
            size = len(arrays["profile_graph.indptr"]) - 1
            model.profile_graph = sp.csr_matrix(
                tuple(arrays.pop(f"profile_graph.{k}") for k in ("data", "indices", "indptr")),
                shape=(size, size),
            )
            model.profile_graph_lift = float(arrays.pop("profile_graph.lift")[0])
        data = np.ones(len(indices), dtype=np.float32)
        model.seen = sp.csr_matrix((data, indices, indptr), shape=(n_users, n_items))
        model.fit_info = manifest.get("fit_info", {})
        model.text_template = manifest.get("text_template")
        model._load_state({k[len("model.") :]: v for k, v in arrays.items()})
        return model  # type: ignore[return-value]
