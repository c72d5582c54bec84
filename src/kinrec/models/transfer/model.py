"""``kinformer``: training, the completing score parts (linear head, priors, offsets), new
items and persistence. The package docstring (:mod:`kinrec.models.transfer`) gives the model."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from kinrec.data.dataset import Dataset, Interactions
from kinrec.knowledge.features import (
    ItemContent,
    TextEmbedder,
    build_item_content,
    content_for_new_items,
    model_text_embedder,
)
from kinrec.models import item_item as heads
from kinrec.models import memory
from kinrec.models.base import (
    CAPABILITIES,
    DataRequirementError,
    ProgressCallback,
    Recommender,
    Requirement,
    Validator,
)
from kinrec.models.ease import RatingStrength
from kinrec.models.prior import PopularityPrior, choose_prior_weight
from kinrec.models.transfer.config import TransferConfig
from kinrec.models.transfer.network import VIEWS, FusionNetwork, SparseOperator, info_nce
from kinrec.models.transfer.propagation import (
    CachedPropagation,
    Graph,
    Propagation,
    make_propagation,
)
from kinrec.models.transfer.retrieval import TransferRetrieval
from kinrec.training.loop import (
    choose_on_validation,
    seeded,
    torch_threads,
    train_epochs,
)

log = logging.getLogger(__name__)

KG_SOURCES = ("attributes", "knowledge_graph")
"""What the knowledge-graph view is built from: item attributes and linked triples."""


class TransferRecommender(TransferRetrieval, Recommender):
    """Language-model + knowledge-graph + collaborative transfer model (``kinformer``).

    It needs nothing beyond interactions: each content view is on where the data holds what
    it is built from (``use_text`` / ``use_kg`` left unset), off otherwise, and asking for a
    view the data cannot feed is an error at the start of ``fit``. After fitting, ``config``
    holds the resolved views (so a saved model reloads as it was trained) and
    ``fit_info["views"]`` / ``fit_info["view_reasons"]`` say which and why.
    """

    name = "kinformer"
    Config = TransferConfig
    uses = ("text", "attributes", "knowledge_graph", "ratings", "timestamps")

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.requested_config: TransferConfig = self.config  # views as asked (None: auto)
        self.content: ItemContent | None = None
        self.item_final: np.ndarray | None = None  # (n_items, d) item side of the score
        self.item_layers: np.ndarray | None = None  # (n_layers, n_items, d)
        self.user_final: np.ndarray | None = None
        self.item_degree: np.ndarray | None = None
        self.gate_weights: np.ndarray | None = None
        self.prior: np.ndarray | None = None
        self.prior_weight = 0.0
        self.cold_boost = 0.0
        self.dormant_offset = 0.0
        self.neighbour_temperature = self.config.neighbour_temperature or 0.1
        self.is_new: np.ndarray | None = None  # items the new-item offset applies to
        self.item_content: np.ndarray | None = None  # content-only item vectors
        self.linear: heads.Head | None = None  # the EASE head, dense or sparse (n x n)
        self.linear_weight = 0.0
        self.rating_strength: RatingStrength | None = None  # weights of the head's input rows
        self.head_rows: sp.csr_matrix | None = None  # ``seen`` weighted by strength; None: seen
        self._progress: ProgressCallback | None = None  # while fitting

    # ----------------------------------------------------------------- training
    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        self._progress = progress
        try:
            self._fit_parts(train, valid, validator, progress)
        finally:
            self._progress = None

    def _fit_parts(self, train, valid, validator, progress) -> None:
        self._resolve_views()
        self.content = build_item_content(self.side, self.item_map, self._item_text_embedder())
        self._check_content_views()
        cfg: TransferConfig = self.config
        self.is_new = np.zeros(train.n_items, dtype=bool)  # set once training is done
        threads = cfg.fit_threads()
        self.fit_info["threads"] = threads
        with torch_threads(threads), seeded(cfg.seed) as rng:
            self._train(train, validator, progress, rng)
        self.linear = None
        counts = np.bincount(train.items, minlength=train.n_items).astype(np.float64)
        features = self._prior_features(self.content)
        self.popularity, self.prior = PopularityPrior.fit(features, counts)
        if features.shape[1] == 0:  # no content: the prior is the items' own popularity
            logs = np.log1p(counts)
            self.prior = ((logs - logs.mean()) / (logs.std() + 1e-12)).astype(np.float32)
        self._impute_new_items(np.flatnonzero(self.item_degree == 0))
        # The new-item offset is for items published after the training period: the side
        # data's declared new items now, and items added later. An old item that simply has
        # no interactions is not new: its neighbours' vectors rank it, without the offset.
        declared = np.zeros(train.n_items, dtype=bool)
        for item in getattr(self.side, "new_items", ()):
            if item in self.item_map:
                declared[self.item_map.index(item)] = True
        self.is_new = declared & (self.item_degree == 0)
        self.linear_weight = 0.0
        self.rating_strength = self.head_rows = None
        if self._uses_linear(train.n_items):
            self._choose_linear(train, validator)
        if cfg.popularity_prior:
            choose_prior_weight(self, validator)
        self._choose_dormant_offset(validator)
        self.cold_boost = 0.0
        if cfg.cold_calibration > 0 and valid is not None and len(valid):
            self._calibrate_cold(train, valid)
            self._impute_new_items(np.flatnonzero(self.item_degree == 0))

    # ------------------------------------------------------------- views
    def requirements(self) -> tuple[Requirement, ...]:
        """Nothing, unless a content view is asked for explicitly (``true``, not unset)."""
        cfg = self.requested_config
        out = []
        if cfg.use_text:
            hint = "set use_text = false, or leave it unset to follow the data"
            out.append(Requirement(("text",), "use_text = true", hint))
        if cfg.use_kg:
            hint = "set use_kg = false, or leave it unset to follow the data"
            out.append(Requirement(KG_SOURCES, "use_kg = true", hint))
        if not cfg.use_id:  # some content view must stand in for the IDs
            sources = ("text",) if cfg.use_text is not False else ()
            sources += KG_SOURCES if cfg.use_kg is not False else ()
            hint = "set use_id = true"
            out.append(Requirement(sources, "use_id = false", hint))
        return tuple(out)

    def _resolve_views(self) -> None:
        """Turn each content view on from what the data holds (settings left unset), and keep
        the resolved settings as ``config``; the explicit ones were checked by ``fit``."""
        cfg, holds = self.requested_config, self.data_holds
        reasons = {"id": f"use_id = {str(cfg.use_id).lower()}"}
        resolved = {}
        for view, setting, sources in (
            ("text", cfg.use_text, ("text",)),
            ("kg", cfg.use_kg, KG_SOURCES),
        ):
            held = [CAPABILITIES[c] for c in sources if holds.get(c)]
            if setting is None:
                resolved[view] = bool(held)
                reasons[view] = (
                    f"auto: the data has {' and '.join(held)}"
                    if held
                    else f"auto: the data has no {' or '.join(CAPABILITIES[c] for c in sources)}"
                )
            else:
                resolved[view] = setting
                reasons[view] = f"use_{view} = {str(setting).lower()}"
        self.config = cfg.model_copy(
            update={"use_text": resolved["text"], "use_kg": resolved["kg"]}
        )
        self._set_views(reasons)

    def _check_content_views(self) -> None:
        """Turn off a view whose content came out empty (no item renders any text; no entity
        is shared by two items): unset, with the reason; asked for explicitly, an error."""
        cfg, reasons = self.config, dict(self.fit_info["view_reasons"])
        text = self.content.text
        empty = {
            "text": cfg.use_text and not (text.shape[1] and self.content.has_text.any()),
            "kg": cfg.use_kg and self.content.entities.shape[1] == 0,
        }
        why = {
            "text": "no item renders any text",
            "kg": "no item attribute or knowledge-graph entity is shared by two items",
        }
        off = {}
        for view, is_empty in empty.items():
            if not is_empty:
                continue
            if getattr(self.requested_config, f"use_{view}") is not None:
                asked = f"use_{view} = true"
                requirement = next(r for r in self.requirements() if r.because == asked)
                raise DataRequirementError(
                    self.name,
                    requirement,
                    self.data_holds,
                    message=f"kinformer: use_{view} = true, but {why[view]}; set use_{view} = "
                    "false, or leave it unset to follow the data",
                )
            off[f"use_{view}"] = False
            reasons[view] = f"auto: {why[view]}"
        if off:
            self.config = cfg.model_copy(update=off)
            self._set_views(reasons)
        views = self.fit_info["views"]
        if not any(views.values()):
            raise DataRequirementError(
                self.name,
                self.requirements()[-1],
                self.data_holds,
                message=f"kinformer has no item view left: use_id = false, text: "
                f"{reasons['text']}, knowledge graph: {reasons['kg']}; set use_id = true",
            )
        log.info(
            "kinformer views: %s",
            "; ".join(f"{v} {'on' if on else 'off'} ({reasons[v]})" for v, on in views.items()),
        )

    def _set_views(self, reasons: dict[str, str]) -> None:
        self.fit_info["views"] = self.views
        self.fit_info["view_reasons"] = reasons

    @property
    def views(self) -> dict[str, bool]:
        """Which views the model uses (after fitting or loading: the resolved ones)."""
        cfg = self.config
        return {"id": bool(cfg.use_id), "text": bool(cfg.use_text), "kg": bool(cfg.use_kg)}

    # ------------------------------------------------------------- linear head
    def _uses_linear(self, n_items: int) -> bool:
        if not self.config.linear_head:
            self.fit_info["linear_head"] = "off: linear_head = false"
            return False
        return True

    # The head's scores grow with the length of a user's history, the two-tower's do not
    # (cosine / temperature): sparse data (a few events per user) wants the larger weights,
    # up to the head ranking alone with the two-tower breaking its ties.
    LINEAR_GRID = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
    LINEAR_L2_GRID = (150.0, 250.0, 500.0, 1000.0)
    LINEAR_RATING_GRID = (0.0, 0.2, 0.4)
    LINEAR_SESSION_GRID = (0.0, 0.5, 0.75)
    LINEAR_TEXT_GRID = (0.0, 1.0, 2.0, 4.0)

    def _linear_memory(self, n_items: int, searching: bool) -> tuple[memory.Dense, ...]:
        """What the dense head's search holds at once: the Gram matrix of the binary rows,
        one variant of it (rating-weighted, mixed, collective) that becomes the weights in
        place, and the float32 heads kept (the best of the current L2, and the best over the
        L2s when several are searched)."""
        square = (n_items, n_items)
        return (
            memory.Dense("the Gram matrix", square, np.float64),
            memory.Dense("one variant of it, inverted in place", square, np.float64),
            memory.Dense("the heads kept", square, np.float32, copies=2 if searching else 1),
        )

    def _sparse_linear_memory(self, n_items: int, l2s: int) -> tuple[memory.Dense, ...]:
        """What the sparse head's search holds at once: the neighbour lists, the heads of
        the best setting so far and of the one being solved (one per L2), and one more
        being built (values and column indices, 8 bytes a weight)."""
        k = self.config.head_neighbours(n_items)
        return (
            memory.Dense("the neighbour lists", (n_items, k), np.int64),
            memory.Dense("the sparse heads", (n_items, k), np.float64, copies=2 * l2s + 1),
        )

    def _choose_linear(self, train: Interactions, validator: Validator | None) -> None:
        """Fit the head and choose its parts and weight on validation.

        The head is EASE's closed form over the whole catalogue (``linear_solver =
        "dense"``) or the sparse EASE of :mod:`kinrec.models.sparse_linear`, each item
        regressed on its ``linear_neighbours`` most similar items (``"sparse"``); ``"auto"``
        takes the dense one up to ``dense_linear_items`` items where its search fits in the
        memory the model may use (:mod:`kinrec.models.memory`), the sparse one otherwise.
        Where even the sparse one does not fit, the head is skipped: the two-tower model is
        kept, with a warning and the reason in ``fit_info["linear_head"]``.

        The head's Gram matrix is chosen by the validation score of the head alone, one
        part after the other: the spread of the rating strengths of its input rows
        (``LINEAR_RATING_GRID``), the share of co-occurrences close in time
        (``LINEAR_SESSION_GRID``), then the strength of the language-model neighbour graph
        (``LINEAR_TEXT_GRID``, in units of the mean item count) added to it; its L2 comes
        from ``LINEAR_L2_GRID`` (unless configured) and its weight from ``LINEAR_GRID``."""
        n = self.seen.shape[1]
        cfg = self.config
        grid = (cfg.linear_l2,) if cfg.linear_l2 else self.LINEAR_L2_GRID
        searching = validator is not None and len(grid) > 1
        dense = self._linear_memory(n, searching)
        solver = cfg.linear_solver
        if solver == "auto":
            solver = "dense" if n <= cfg.dense_linear_items and memory.fits(*dense) else "sparse"
        arrays = dense if solver == "dense" else self._sparse_linear_memory(n, len(grid))
        if not memory.fits(*arrays):
            self._skip_linear(memory.short_reason(*arrays))
            return
        planned = f"{solver}: {memory.short_reason(*arrays)}"
        try:
            if solver == "dense":
                self._search_linear(train, validator)
            else:
                self._search_sparse_linear(train, validator)
        except memory.MemoryLimitError as exc:
            self._skip_linear(str(exc))
            return
        self.fit_info["linear_head"] = f"fitted, {planned}"
        self.fit_info["linear_solver"] = solver

    def _skip_linear(self, reason: str) -> None:
        """No linear head: the two-tower model alone, and why in ``fit_info``."""
        self.linear, self.linear_weight = None, 0.0
        self.rating_strength = self.head_rows = None
        self.fit_info["linear_head"] = f"skipped: {reason}"
        log.warning("kinformer: linear head skipped, two-tower model kept: %s", reason)

    def _head_spreads(self, train: Interactions, validating: bool) -> dict:
        """Rating spread -> (strength, input rows) of each spread to compare."""
        spreads = self.config.linear_rating_spread
        spreads = self.LINEAR_RATING_GRID if spreads is None else (spreads,)
        rated = {}
        for spread in spreads if validating else spreads[:1]:
            strength = RatingStrength.fit(train.ratings, spread)
            if strength is None:
                rated.setdefault(0.0, (None, self.seen))
            else:
                rated[spread] = (strength, strength.rows(train))
        return rated

    @staticmethod
    def _head_phases(rated: dict, shares: tuple, strengths: tuple) -> tuple:
        """The head's Gram settings (rating spread, share of close co-occurrences, text
        strength) in the order they are searched: each phase maps the best setting so far
        (None before the first) to the settings it tries: every spread, then the other
        shares at the best spread, then the other strengths at the best share."""
        return (
            lambda _: [(spread, 0.0, 0.0) for spread in rated],
            lambda h: [(h[0], share, 0.0) for share in shares[1:]],
            lambda h: [(h[0], h[1], strength) for strength in strengths[1:]],
        )

    def _choose_head_weight(
        self, l2: float, setting: tuple, searches: dict, validator: Validator | None
    ) -> float:
        """With ``self.linear`` the head fitted at ``l2`` and Gram ``setting``: let items
        without interactions borrow its rows and columns, choose its weight on validation,
        record the search in ``searches``; returns the best validation score (0 without)."""
        self._impute_new_items(np.flatnonzero(self.item_degree == 0))
        choose_on_validation(self, "linear_weight", self.LINEAR_GRID, validator)
        search = self.fit_info.pop("linear_weight_search", {})
        tag = "l2={:g} ratings={:g} session={:g} text={:g}".format(l2, *setting)
        searches.update({f"{tag} weight={w}": v for w, v in search.items()})
        return max(search.values(), default=0.0)

    def _search_sparse_linear(self, train: Interactions, validator: Validator | None) -> None:
        """The search of :meth:`_choose_linear` for the sparse head. Each setting of the
        Gram matrix (rating spread, share of close co-occurrences, text strength) is one
        pass that solves every L2 of the grid at once (the systems are gathered once), and
        the setting whose best head alone validates best is kept; then, as in the dense
        search, each L2's head of that setting gets its weight on validation, and the best
        pair of L2 and weight is kept. It holds the heads of two settings at most."""
        from kinrec.models.ease import (
            EASE,
            collective_gram,
            dense_gram,
            dense_gram_fits,
            mixed_gram,
        )
        from kinrec.models.sparse_linear import GramParts, neighbourhood_weights

        cfg = self.config
        n = self.seen.shape[1]
        k = cfg.head_neighbours(n)
        validating = validator is not None
        grid = (cfg.linear_l2,) if cfg.linear_l2 else self.LINEAR_L2_GRID
        if not validating:
            grid = grid[:1]
        rated = self._head_spreads(train, validating)
        broad = n <= cfg.linear_search_items
        if not broad:  # one pass: the plain Gram matrix
            rated = dict(list(rated.items())[:1])
            validating = False
        dense = dense_gram_fits(n)
        counts = np.asarray(self.seen.sum(axis=0)).ravel()
        graph = self._text_graph(float(counts.mean())) if validating else None
        session = self._session_gram(train) if validating else None
        shares = self.LINEAR_SESSION_GRID if session is not None else (0.0,)
        strengths = self.LINEAR_TEXT_GRID if graph is not None else (0.0,)
        alone = EASE()
        alone.user_map, alone.item_map = self.user_map, self.item_map
        compare = validator is not None and (
            len(grid) > 1 or len(rated) > 1 or len(shares) > 1 or len(strengths) > 1
        )
        step = f"kinformer's sparse head ({n:,} items, {k} neighbours)"

        def solve(spread: float, share: float, strength: float) -> list[sp.csr_matrix]:
            rows = rated[spread][1]
            if dense:  # the systems read from the dense Gram matrix: faster where it fits
                gram = dense_gram(rows)
                gram = mixed_gram(gram, session, share, inplace=True)
                gram = collective_gram(gram, graph, strength, inplace=True)
            else:
                gram = GramParts(rows, session, share, graph, strength)
            tag = f"ratings={spread:g} session={share:g} text={strength:g}"
            progress = self._progress

            def report(done: int, total: int) -> None:
                if progress is not None:
                    progress(f"{step}: {tag}", done, total, {})

            return neighbourhood_weights(gram, grid, k, progress=report, workers=cfg.fit_threads())

        best = None  # (head-alone score, (spread, share, strength), heads by L2)
        searches: dict[str, float] = {}
        for settings in self._head_phases(rated, shares, strengths):
            for setting in settings(best[1] if best else None):
                heads_by_l2 = solve(*setting)
                alone.seen = rated[setting[0]][1]
                score = None
                for l2, weights in zip(grid, heads_by_l2, strict=True):
                    alone.weights = weights
                    value = validator(alone) if compare else 0.0
                    tag = "l2={:g} ratings={:g} session={:g} text={:g}".format(l2, *setting)
                    if compare:
                        searches[f"{tag} head alone"] = round(value, 5)
                    score = value if score is None else max(score, value)
                alone.weights = None
                if best is None or score > best[0]:
                    best = None  # the former best's heads go before the next pass
                    best = (score, setting, heads_by_l2)
                heads_by_l2 = None
        # the setting's head for each L2, with its weight chosen on validation, as the
        # dense search does: the pair of L2 and weight that scores best with the model
        _, setting, heads_by_l2 = best
        best, chosen = None, None  # chosen: (score, l2, head, weight)
        self._set_strength(*rated[setting[0]])
        candidates = list(zip(grid, heads_by_l2, strict=True))
        if not broad and compare:  # only the head that validates best alone
            alone_tag = "l2={:g} ratings={:g} session={:g} text={:g} head alone"
            candidates = [max(candidates, key=lambda c: searches[alone_tag.format(c[0], *setting)])]
        heads_by_l2 = None
        for l2, weights in candidates:
            self.linear = weights
            score = self._choose_head_weight(l2, setting, searches, validator)
            if chosen is None or score > chosen[0]:
                chosen = (score, l2, self.linear, self.linear_weight)
        candidates = None
        _, l2, self.linear, self.linear_weight = chosen
        self.fit_info.update(
            linear_search=searches,
            linear_not_positive_definite=[],
            linear_l2=l2,
            linear_rating_spread=setting[0],
            linear_session_share=setting[1],
            linear_text_strength=setting[2],
            linear_weight=self.linear_weight,
            linear_neighbours=k,
            linear_search_scope="every setting" if broad else "plain Gram matrix, best L2 alone",
        )

    def _search_linear(self, train: Interactions, validator: Validator | None) -> None:
        """The search of :meth:`_choose_linear`; raises :class:`memory.MemoryLimitError`
        before an allocation that does not fit."""
        from kinrec.models.ease import (
            EASE,
            NotPositiveDefiniteError,
            collective_gram,
            dense_gram,
            ease_weights,
            mixed_gram,
        )

        n = self.seen.shape[1]
        step = f"kinformer's linear head ({n:,} items)"
        square = (n, n)
        variant = (
            memory.Dense("a Gram matrix variant, inverted in place", square, np.float64),
            memory.Dense("its float32 copy", square, np.float32),
        )
        gram = dense_gram(self.seen)
        alone = EASE()  # the head by itself, to validate the parts of its Gram matrix
        alone.user_map, alone.item_map = self.user_map, self.item_map
        validating = validator is not None
        # the text graph, the time-order matrix and the rating strengths exist only where
        # their weight is validated
        graph = self._text_graph(gram) if validating else None
        session = self._session_gram(train) if validating else None
        rated = self._head_spreads(train, validating)  # their Gram matrices: when needed
        kept: dict[float, np.ndarray] = {}  # rated Gram matrices kept while memory allows

        def rated_gram(spread: float) -> tuple[np.ndarray, bool]:
            """The Gram matrix of the rows at ``spread`` (Fortran order), and whether it is
            the caller's own to change (built for this use only)."""
            strength, rows = rated[spread]
            if strength is None:
                return gram, False
            if spread in kept:
                return kept[spread], False
            memory.require(step, memory.Dense("a rating-weighted Gram matrix", square))
            built = dense_gram(rows)
            if memory.fits(*variant, memory.Dense("", square, np.float32)):
                kept[spread] = built
                return built, False
            return built, True

        shares = self.LINEAR_SESSION_GRID if session is not None else (0.0,)
        strengths = self.LINEAR_TEXT_GRID if graph is not None else (0.0,)
        grid = (self.config.linear_l2,) if self.config.linear_l2 else self.LINEAR_L2_GRID
        if not validating:
            grid = grid[:1]
        compare = len(rated) > 1 or len(shares) > 1 or len(strengths) > 1
        best, searches, indefinite = None, {}, []
        for l2 in grid:
            self.linear = None  # the best L2's head so far is in ``best``
            head = None  # (validation score, (spread, share, text strength), float32 weights)
            for settings in self._head_phases(rated, shares, strengths):
                for setting in settings(head[1] if head else None):
                    spread, share, strength = setting
                    tag = f"l2={l2:g} ratings={spread:g} session={share:g} text={strength:g}"
                    memory.require(step, *variant)
                    grams, owned = rated_gram(spread)
                    alone.seen = rated[spread][1]
                    if share and session is not None:
                        grams, owned = mixed_gram(grams, session, share, inplace=owned), True
                    if strength and graph is not None:
                        grams, owned = collective_gram(grams, graph, strength, owned), True
                    try:
                        alone.weights = ease_weights(grams, l2, overwrite=owned)
                    except NotPositiveDefiniteError:  # the text graph outweighs this L2
                        indefinite.append(tag)
                        continue
                    finally:
                        del grams
                    score = validator(alone) if compare else 0.0
                    if compare:
                        searches[f"{tag} head alone"] = round(score, 5)
                    if head is None or score > head[0]:
                        head = None  # the former best's matrix goes before the new one comes
                        head = (score, setting, alone.weights.astype(np.float32))
                    alone.weights = None
            _, setting, self.linear = head
            head = None
            self._set_strength(*rated[setting[0]])
            score = self._choose_head_weight(l2, setting, searches, validator)
            if best is None or score > best[0]:
                best = (score, l2, setting, self.linear, self.linear_weight)
        _, l2, setting, self.linear, self.linear_weight = best
        self._set_strength(*rated[setting[0]])
        self.fit_info.update(
            linear_search=searches,
            linear_not_positive_definite=indefinite,
            linear_l2=l2,
            linear_rating_spread=setting[0],
            linear_session_share=setting[1],
            linear_text_strength=setting[2],
            linear_weight=self.linear_weight,
        )

    def _session_gram(self, train: Interactions) -> sp.csr_matrix | None:
        """Co-occurrences close in the users' time order (None: off)."""
        from kinrec.models.ease import session_gram

        window = self.config.linear_session_window
        return session_gram(train, window) if window else None

    def _text_graph(self, gram: np.ndarray | float) -> sp.csr_matrix | None:
        """The items' language-model neighbour graph on the scale of the Gram matrix (or of
        the mean of its diagonal) (None: off)."""
        from kinrec.models.ease import scaled_neighbour_graph

        k = self.config.linear_text_neighbours
        if not k or not self.content.text.shape[1] or not self.content.has_text.any():
            return None
        return scaled_neighbour_graph(self.content.text, gram, k)

    def _linear_scores(self, rows: sp.spmatrix | np.ndarray, linear: heads.Head) -> np.ndarray:
        return heads.scores(rows, linear)

    def _set_strength(self, strength: RatingStrength | None, rows: sp.csr_matrix) -> None:
        """Keep the rating strengths of the head's input rows (None: every row entry is 1)."""
        seen = self.seen
        if strength is not None and not (
            np.array_equal(rows.indptr, seen.indptr) and np.array_equal(rows.indices, seen.indices)
        ):
            raise RuntimeError("rating strengths do not line up with the seen matrix")
        self.rating_strength = strength
        self.head_rows = None if strength is None else self._strength_rows(rows.data)

    def _strength_rows(self, strengths: np.ndarray) -> sp.csr_matrix:
        """``seen`` with ``strengths`` (in ``seen``'s entry order) as its entries, in
        ``seen``'s dtype (float32: a float64 row would upcast the head's matrix per call)."""
        seen = self.seen
        data = np.asarray(strengths, dtype=seen.dtype)
        return sp.csr_matrix((data, seen.indices, seen.indptr), seen.shape)

    def _head_input(self) -> sp.csr_matrix:
        """The head's input rows of the trained users: ``seen``, weighted by rating strength."""
        return self.seen if self.head_rows is None else self.head_rows

    def history_rows(self, interactions: Interactions) -> sp.csr_matrix:
        if self.rating_strength is None:
            return super().history_rows(interactions)
        return self.rating_strength.rows(interactions)

    def history_weights(self, user: int) -> np.ndarray:
        if self.head_rows is None:
            return super().history_weights(user)
        return self.head_rows.data[self.head_rows.indptr[user] : self.head_rows.indptr[user + 1]]

    def rating_weight(self, rating: float) -> float | None:
        if self.rating_strength is None:
            return None
        return float(self.rating_strength(np.array([rating]))[0])

    # ------------------------------------------------------------- dormant items
    DORMANT_OFFSETS = (0.0, -1.0, -2.0, -4.0, -8.0)

    @property
    def is_dormant(self) -> np.ndarray:
        """Items known during training that nobody interacted with, and not declared new.

        They borrow their text neighbours' collaborative vectors like new items, but their
        empty history is itself evidence (they had their chance), which the offset weighs."""
        return (self.item_degree == 0) & ~self.is_new

    def _choose_dormant_offset(self, validator: Validator | None) -> None:
        configured = self.config.dormant_offset
        if configured is not None or not self.is_dormant.any():
            self.dormant_offset = configured or 0.0
            return
        grid = [offset * self._offset_scale for offset in self.DORMANT_OFFSETS]
        choose_on_validation(self, "dormant_offset", grid, validator)

    OFFSET_GRID_HEAD_WEIGHT = 64.0

    @property
    def _offset_scale(self) -> float:
        """Unit of the offset grids (new and dormant items): 1 while the linear head's weight
        (0 without a head) is at most ``OFFSET_GRID_HEAD_WEIGHT``, for which they were laid
        out; beyond, where the head dominates the score, the offsets grow with its weight."""
        return max(1.0, self.linear_weight / self.OFFSET_GRID_HEAD_WEIGHT)

    # ------------------------------------------------------------- new items
    def _neighbour_weights(
        self,
        text: np.ndarray,
        exclude: np.ndarray | None = None,
        temperature: float | None = None,
    ):
        """``(len(text) x n_items)`` weights over each row's nearest warm items in the LM space.

        The ``cold_neighbours`` most similar items with interactions (and not in ``exclude``)
        get softmax weights of their cosine similarity at ``temperature`` (default: the
        model's), summing to one; only positively similar neighbours count, and rows without
        text or without such a neighbour get none.
        """
        return self._softmax_weights(self._nearest_warm(text, exclude), temperature)

    def _nearest_warm(self, text: np.ndarray, exclude: np.ndarray | None = None):
        """Each row's ``cold_neighbours`` most similar items with interactions (not in
        ``exclude``): ``(items, similarities)``, two ``(rows, k)`` arrays (``k`` = 0 without
        text or warm items)."""
        k = self.config.cold_neighbours
        sources = self.item_degree > 0
        if exclude is not None:
            sources &= ~exclude
        pool = np.flatnonzero(sources)
        if k == 0 or not self.config.use_text or text.shape[1] == 0 or not len(pool) * len(text):
            return np.zeros((len(text), 0), dtype=np.int64), np.zeros((len(text), 0), np.float32)
        k = min(k, len(pool))
        # rows x warm items similarities, each row cut to its k best: in blocks of rows
        # where all of them at once (new or pseudo-new items x items) do not fit in memory
        pool_text = self.content.text[pool]
        block = memory.rows_that_fit(len(pool) * 4 * 3, len(text))
        tops, best = [], []
        for start in range(0, len(text), block):
            sims = torch.from_numpy(np.maximum(text[start : start + block] @ pool_text.T, 0.0))
            found = torch.topk(sims, k, dim=1)
            tops.append(found.indices.numpy())
            best.append(found.values.numpy())
        del sims
        top, sims = (np.concatenate(x) if len(x) > 1 else x[0] for x in (tops, best))
        return pool[top], sims

    def _softmax_weights(self, nearest, temperature: float | None = None) -> sp.csr_matrix:
        """:meth:`_neighbour_weights` from :meth:`_nearest_warm`'s neighbours."""
        n_items = len(self.item_degree)
        items, sims = nearest
        if items.shape[1] == 0:
            return sp.csr_matrix((len(items), n_items), dtype=np.float32)
        temperature = temperature or self.neighbour_temperature
        values = np.exp((sims - sims.max(axis=1, keepdims=True)) / temperature) * (sims > 0)
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
        rows = np.repeat(np.arange(len(items)), items.shape[1])
        weights = sp.csr_matrix(
            (values.ravel(), (rows, items.ravel())), shape=(len(items), n_items)
        )
        weights.eliminate_zeros()
        return weights.astype(np.float32)

    def _borrowed(self, weights: sp.csr_matrix, columns: bool = True):
        """Final vectors, propagated layers and (with ``columns``, and a head) linear-head
        columns ``(n_items, rows)`` borrowed through ``weights``; rows without neighbours
        come out zero (callers keep those items' own content vectors)."""
        final = self._finish(np.asarray(weights @ self.item_final))
        layers = np.stack([np.asarray(weights @ layer) for layer in self.item_layers])
        if columns and self.linear is not None:
            columns = heads.borrowed_columns(self.linear, weights)
        else:
            columns = None
        return final, layers.astype(np.float32), columns

    def _impute_new_items(self, items: np.ndarray) -> None:
        """Give items without interactions the weighted collaborative representation of their
        nearest warm items (vectors, layers for fold-in, linear-head row and column)."""
        if len(items) == 0:
            return
        weights = self._neighbour_weights(self.content.text[items])
        has = np.diff(weights.indptr) > 0
        if not has.any():
            return
        target = items[has]
        if self.linear is not None:  # idempotent: what an earlier call borrowed goes first
            self.linear = heads.with_borrowed(self.linear, weights[has], target)
        final, layers, _ = self._borrowed(weights[has], columns=False)
        self.item_final[target] = final
        self.item_layers[:, target] = layers

    # ------------------------------------------------------------- cold calibration
    COLD_BOOSTS = (-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0, 48.0)
    NEIGHBOUR_TEMPERATURES = (0.2, 0.1, 0.05, 0.02)

    def _calibrate_cold(self, train: Interactions, valid: Interactions) -> None:
        """Choose the score offset of new items, and the temperature of the weights they
        borrow their neighbours' vectors with, on a pseudo-cold validation.

        A seeded share of warm items (>= 5 train interactions) is treated as new: they are
        scored as new items are (borrowed neighbour vectors or content alone, no linear-head
        column of their own), their train interactions are removed from the users' seen
        rows, and all their train and validation interactions become targets next to the
        other validation rows, as the whole future of a newly published item is. The pair
        maximising NDCG@10 there is kept: too low and new items never surface, too high and
        they crowd out what the user would pick. (The users' trained vectors still include
        those items; this mild leak makes the choice conservative.)
        """
        from kinrec.evaluation.protocol import evaluate_group_variants, validation_users

        eligible = np.flatnonzero(self.item_degree >= 5)
        if len(eligible) < 2:
            return
        rng = np.random.default_rng(self.config.seed)
        size = max(1, int(self.config.cold_calibration * len(eligible)))
        pseudo = np.zeros(len(self.item_final), dtype=bool)
        pseudo[rng.choice(eligible, size=size, replace=False)] = True
        in_train = pseudo[train.items]
        truth = Interactions(
            np.concatenate([valid.users, train.users[in_train]]),
            np.concatenate([valid.items, train.items[in_train]]),
            train.user_map,
            train.item_map,
        )
        users = np.unique(truth.users)
        most = validation_users(train.n_items)  # as many as any validation pass scores
        if len(users) > most:  # a seeded sample of them is enough
            kept = np.zeros(train.n_users, dtype=bool)
            kept[rng.choice(users, size=most, replace=False)] = True
            truth = truth.subset(kept[truth.users])
            self.fit_info["cold_search_users"] = most
        seen = train.subset(~in_train)
        seen_rows = self.history_rows(seen)
        offset = self.item_offset()  # the popularity prior (no cold terms yet)
        # without text to find neighbours by, the temperature changes nothing
        borrows = (
            self.config.use_text
            and self.config.cold_neighbours
            and self.content.has_text[pseudo].any()
        )
        temperatures = (
            (self.config.neighbour_temperature or self.neighbour_temperature,)
            if self.config.neighbour_temperature or not borrows
            else self.NEIGHBOUR_TEMPERATURES
        )
        boosts = [b * self._offset_scale for b in self.COLD_BOOSTS]
        nearest = self._nearest_warm(self.content.text[pseudo], exclude=pseudo)
        head = self.linear is not None and bool(self.linear_weight)
        variants = {}
        for temperature in temperatures:
            weights = self._softmax_weights(nearest, temperature)
            has = np.diff(weights.indptr) > 0
            final = self.item_content[pseudo].copy()
            borrowed_final, _, borrowed_columns = self._borrowed(weights, columns=head)
            final[has] = borrowed_final[has]
            # the head with the pseudo-new items' columns borrowed: only those columns are
            # held apart (a copy of the whole head would double its memory)
            columns = heads.masked_columns(borrowed_columns, has) if head else None
            variants[temperature] = (final, columns)
            del borrowed_columns
        # Every temperature and offset from one scoring of the other items per batch: the
        # pseudo-new items' scores are all a temperature changes, and an offset on them does
        # not reorder them among themselves nor the others among themselves.
        others = ~pseudo
        others_final = self.item_final[others]
        batch: dict = {}

        def of_batch(users: np.ndarray) -> dict:
            if batch.get("users") is not users:
                batch.clear()
                batch.update(users=users, u=self.user_final[users], rows=seen_rows[users])
            return batch

        def outside(users: np.ndarray) -> np.ndarray:
            b = of_batch(users)
            scores = b["u"] @ others_final.T / self._scale
            if head:
                scores += (
                    self.linear_weight * self._linear_scores(b["rows"], self.linear)[:, others]
                )
            return scores + offset[others]

        def inside(final: np.ndarray, columns) -> Callable[[np.ndarray], np.ndarray]:
            def scores_of(users: np.ndarray) -> np.ndarray:
                b = of_batch(users)
                scores = b["u"] @ final.T / self._scale
                if columns is not None:
                    scores += self.linear_weight * self._linear_scores(b["rows"], columns)
                return scores + offset[pseudo]

            return scores_of

        insides = {t: inside(final, columns) for t, (final, columns) in variants.items()}
        scored = evaluate_group_variants(
            outside, insides, pseudo, boosts, truth, [seen], ks=(10,), batch_size=2048
        )
        results = {key: result.metrics["ndcg@10"] for key, result in scored.items()}
        del variants, insides
        self.neighbour_temperature, self.cold_boost = max(results, key=results.get)
        self.fit_info["cold_search"] = {
            f"temperature={t:g} offset={b:g}": round(v, 5) for (t, b), v in results.items()
        }
        self.fit_info["neighbour_temperature"] = self.neighbour_temperature
        self.fit_info["cold_boost"] = self.cold_boost

    @staticmethod
    def _prior_features(content: ItemContent) -> sp.csr_matrix:
        return sp.hstack([sp.csr_matrix(content.text), content.entities]).tocsr()

    def warm_up(self) -> None:
        if self.config.use_text:
            model_text_embedder(self)(["warm-up"])

    def _item_text_embedder(self) -> TextEmbedder:
        """The model's text encoder; without the language model (``use_text`` off), zero-width
        vectors, so that no text is encoded and no text-based part has anything to use."""
        if self.config.use_text:
            return model_text_embedder(self)
        return lambda texts: np.zeros((len(texts), 0), dtype=np.float32)

    def _train(self, train, validator, progress, rng: np.random.Generator) -> None:
        cfg: TransferConfig = self.config
        content = self.content
        n_users, n_items = train.n_users, train.n_items
        graph = Graph(self.seen, cfg.n_layers)
        di = graph.item_degree
        self.item_degree = di
        text = torch.from_numpy(content.text)
        has_entity = np.diff(content.entities.indptr) > 0
        base_available = np.stack([di > 0, content.has_text, has_entity], axis=1)
        base_available &= np.array([cfg.use_id, cfg.use_text, cfg.use_kg])[None, :]
        net = FusionNetwork(cfg, n_items, content.text, content.entities.shape[1], n_users)
        self._net = net
        coo = self.seen.tocoo()
        pairs_u, pairs_i = coo.row.astype(np.int64), coo.col.astype(np.int64)
        n_pairs = len(pairs_u)
        interacted = di > 0
        warm = np.flatnonzero(interacted)
        prop = make_propagation(cfg, net, graph, text, content.entities, base_available)
        batch_size = cfg.batch_size
        if cfg.max_steps_per_epoch:
            batch_size = max(batch_size, -(-n_pairs // cfg.max_steps_per_epoch))
        self.fit_info["batch_size"] = batch_size
        opt = prop.optimiser()
        self.fit_info["propagation"] = prop.name
        use_align = cfg.align_weight > 0 and cfg.use_id and (cfg.use_text or cfg.use_kg)

        def run_epoch(epoch: int) -> float:
            net.train()
            perm = rng.permutation(n_pairs)
            total, steps = 0.0, 0
            for start in range(0, n_pairs, batch_size):
                idx = perm[start : start + batch_size]
                available = base_available.copy()
                content_only = ~interacted
                if cfg.id_dropout > 0 and cfg.use_id:
                    drop = rng.random(n_items) < cfg.id_dropout
                    # keep at least one other view for dropped items
                    drop &= available[:, 1:].any(axis=1)
                    available[drop, 0] = False
                    content_only = content_only | drop
                bu, bi = pairs_u[idx], pairs_i[idx]
                # Negatives come from items that have interactions: an item nobody could have
                # interacted with yet (not in the training data) is not evidence of dislike.
                negs = warm[rng.integers(0, len(warm), cfg.n_negatives)]
                batch = prop.step(bu, np.union1d(bi, negs), available, content_only)
                cos = cfg.similarity == "cosine"
                # 1/temperature is folded into the user side, so the (batch x negatives)
                # logits are never rescaled; the loss is softmax cross-entropy with the
                # positive in front, written without materialising the concatenation.
                users = batch.users
                pi = batch.items[batch.positions(bi)]
                ni = batch.items[batch.positions(negs)]
                u = F.normalize(users, dim=-1) / cfg.temperature if cos else users
                pi = F.normalize(pi, dim=-1) if cos else pi
                ni = F.normalize(ni, dim=-1) if cos else ni
                pos = (u * pi).sum(-1)
                negative = torch.logsumexp(u @ ni.T, dim=1)
                loss = (torch.logaddexp(pos, negative) - pos).mean()
                if use_align:
                    at = batch.positions(np.unique(bi)[: min(1024, len(idx))])
                    content_view = batch.views["text"][at] + batch.views["kg"][at]
                    loss = loss + cfg.align_weight * info_nce(
                        batch.views["id"][at], content_view, cfg.temperature
                    )
                if cfg.cl_weight > 0:
                    ub = np.unique(bu, return_index=True)[1]
                    ib = batch.positions(np.unique(bi))
                    loss = loss + cfg.cl_weight * (
                        info_nce(users[ub], batch.layer1[ub], cfg.cl_temperature)
                        + info_nce(batch.items[ib], batch.x[ib], cfg.cl_temperature)
                    )
                opt.zero_grad()
                loss.backward()
                opt.step()
                prop.after_step()
                total += loss.item()
                steps += 1
            self._refresh(prop, base_available)
            return total / max(steps, 1)

        def snapshot():
            return (
                {k: v.clone() for k, v in net.state_dict().items()},
                self._arrays(),
            )

        def restore(state) -> None:
            net.load_state_dict(state[0])
            self._set_arrays(state[1])

        result = train_epochs(
            run_epoch,
            cfg.max_epochs,
            validate=(lambda: validator(self)) if validator else None,
            snapshot=snapshot if validator else None,
            restore=restore if validator else None,
            patience=cfg.patience,
            max_seconds=cfg.max_train_seconds,
            eval_every=cfg.eval_every,
            progress=progress,
            phase=self.name,
        )
        self.fit_info.update(result.fit_info())
        if isinstance(prop, CachedPropagation):
            self.fit_info["cache_refreshes"] = prop.refreshes
        self.fit_info["trainable_parameters"] = sum(p.numel() for p in net.parameters())
        self.fit_info["gate_mean"] = dict(
            zip(VIEWS, np.round(self.gate_weights.mean(axis=0), 4).tolist(), strict=True)
        )

    @torch.no_grad()
    def _refresh(self, prop: Propagation, available: np.ndarray) -> None:
        """Recompute the inference matrices from the current parameters (no noise, no dropout)."""
        net = self._net
        net.eval()
        avail_t = torch.from_numpy(available)
        x, views, users, items, item_layers = prop.full(available)
        items = torch.where(torch.from_numpy(self.item_degree == 0)[:, None], x, items)
        logits = net.gate(torch.cat([views[v] for v in VIEWS], dim=1)).masked_fill(~avail_t, -1e9)
        # items without any usable view have no gate (their weights are 0, not uniform)
        has_view = avail_t.any(dim=1, keepdim=True)
        self.gate_weights = (torch.softmax(logits, dim=-1) * has_view).numpy()
        # Layers 0..L-1 of items are what a folded-in user's layers 1..L are summed from.
        self.item_layers = torch.stack(item_layers[: self.config.n_layers]).numpy().copy()
        self.item_final = self._finish(items.numpy())
        self.user_final = self._finish(users.numpy())
        content_only = avail_t.clone()
        content_only[:, 0] = False
        self.item_content = self._finish(net(prop.text, prop.entities, content_only)[0].numpy())

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        if self.config.similarity == "cosine":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.item_layers,
            self.item_final,
            self.user_final,
            self.gate_weights,
            self.item_content,
        )

    def _set_arrays(self, arrays) -> None:
        (
            self.item_layers,
            self.item_final,
            self.user_final,
            self.gate_weights,
            self.item_content,
        ) = arrays

    # ----------------------------------------------------------------- inference
    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        users = np.asarray(users)
        memo = self._score_parts if items is None else None
        if memo is None:
            memo = {}
        elif "users" not in memo or not np.array_equal(memo["users"], users):
            memo.clear()
            memo["users"] = users.copy()
        if "tower" not in memo:
            item_vectors = self.item_final if items is None else self.item_final[items]
            memo["tower"] = (self.user_final[users] @ item_vectors.T) / self._scale
        offset = self.item_offset()
        scores = memo["tower"] + (offset if items is None else offset[items])
        if self.linear is not None and self.linear_weight:
            if "head" not in memo:
                memo["head"] = heads.scores(self._head_input()[users], self.linear, items)
            scores += self.linear_weight * memo["head"]
        return scores

    _score_parts: dict | None = None

    @contextlib.contextmanager
    def reusing_score_parts(self) -> Iterator[None]:
        """Inside, :meth:`score` over all items keeps the tower's and the head's (unweighted)
        scores of the last users it was called with, and reuses them while called with the
        same users: a search over the head's weight or the item offsets then computes them
        once per batch of validation users. The vectors, the head and its input rows must
        not change inside."""
        self._score_parts = {}
        try:
            yield
        finally:
            self._score_parts = None

    def item_offset(self) -> np.ndarray:
        """Per-item score offset: the popularity prior, the calibrated boost of new items
        (declared new in the side data, or added after training) and the offset of dormant
        items, each chosen on validation."""
        offset = np.zeros(len(self.item_final), dtype=np.float32)
        if self.prior_weight and self.prior is not None:
            offset += self.prior_weight * self.prior
        if self.dormant_offset:
            offset += self.dormant_offset * self.is_dormant
        return offset + self.cold_boost * self.is_new

    @property
    def _scale(self) -> float:
        return self.config.temperature if self.config.similarity == "cosine" else 1.0

    def item_vectors(self) -> np.ndarray | None:
        return self.item_final

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Fold-in: a new user's layers are the same degree-normalised sums over their items.

        The user's own layer-0 embedding is zero (they had none in training), as for any user
        the model meets for the first time.
        """
        items = np.asarray(items, dtype=np.int64)
        if len(items) == 0:
            return np.zeros(len(self.item_final), dtype=np.float32)
        w = np.ones(len(items)) if weights is None else np.asarray(weights, dtype=np.float64)
        scale = w / np.sqrt(len(items) * np.maximum(self.item_degree[items], 1))
        layers = [scale @ layer[items] for layer in self.item_layers]
        user = self._finish(np.sum(layers, axis=0)[None, :] / (len(layers) + 1))[0]
        scores = (self.item_final @ user) / self._scale + self.item_offset()
        if self.linear is not None and self.linear_weight:
            scores += self.linear_weight * heads.history_scores(self.linear, items, w)
        return scores

    def add_items(self, item_ids: list[str], side: Dataset) -> None:
        """Append new items: they borrow the collaborative vectors of their nearest warm items
        in the language-model space, or are scored from their content views alone."""
        self._require_fitted()
        new = [i for i in item_ids if i not in self.item_map]
        if not new:
            return
        if isinstance(self.linear, np.ndarray):  # checked before anything changes
            n = len(self.item_map) + len(new)
            memory.require(
                f"kinformer add_items ({len(new):,} new, {n:,} items in all)",
                memory.Dense("the widened linear head", (n, n), np.float32),
                hint="retrain with linear_head = false to add items without the head",
            )
        c = self.content
        text, has_text, incidence = content_for_new_items(
            self.described(side), new, c.entity_ids, c.entity_idf, self._item_text_embedder()
        )
        if text.shape[1] != c.text.shape[1]:  # no text among them, or none in the model
            text, has_text = np.zeros((len(new), c.text.shape[1]), np.float32), has_text & False
        available = np.stack([np.zeros(len(new), bool), has_text, incidence.getnnz(1) > 0], 1)
        available &= np.array([False, self.config.use_text, self.config.use_kg])[None, :]
        with torch.no_grad():
            x, _ = self._net.forward_rows(
                torch.from_numpy(text), SparseOperator(incidence), torch.from_numpy(available)
            )
        x_new = x.numpy()
        for item_id in new:
            self.item_map.add(item_id)
        # A new item has no interactions: its propagated layers are zero and its final
        # representation is its content view, until neighbours are borrowed below.
        pad = np.zeros((self.item_layers.shape[0], len(new), x_new.shape[1]), np.float32)
        pad[0] = x_new
        self.item_layers = np.concatenate([self.item_layers, pad], axis=1)
        self.item_final = np.vstack([self.item_final, self._finish(x_new)])
        self.item_content = np.vstack([self.item_content, self._finish(x_new)])
        self.item_degree = np.concatenate([self.item_degree, np.zeros(len(new))])
        self.is_new = np.concatenate([self.is_new, np.ones(len(new), dtype=bool)])
        new_content = ItemContent(text, has_text, incidence, c.entity_ids, c.entity_idf)
        self.prior = np.concatenate(
            [self.prior, self.popularity.predict(self._prior_features(new_content))]
        )
        self.content = ItemContent(
            np.vstack([c.text, text]),
            np.concatenate([c.has_text, has_text]),
            sp.vstack([c.entities, incidence]).tocsr(),
            c.entity_ids,
            c.entity_idf,
        )
        if self.linear is not None:
            self.linear = heads.widened(self.linear, len(self.item_map))
        self._impute_new_items(np.arange(len(self.item_map) - len(new), len(self.item_map)))
        self._widen_seen()
        if self.head_rows is not None:
            self.head_rows = self._strength_rows(self.head_rows.data)

    # ----------------------------------------------------------------- persistence
    def _state(self) -> dict[str, np.ndarray]:
        c = self.content
        state = {f"net.{k}": v.numpy() for k, v in self._net.state_dict().items()}
        state.update(
            item_layers=self.item_layers,
            item_final=self.item_final,
            user_final=self.user_final,
            item_degree=self.item_degree,
            gate_weights=self.gate_weights,
            content_text=c.text,
            content_has_text=c.has_text.astype(np.uint8),
            content_ent_indptr=c.entities.indptr.astype(np.int64),
            content_ent_indices=c.entities.indices.astype(np.int64),
            content_ent_data=c.entities.data.astype(np.float32),
            content_idf=c.entity_idf,
            entity_names=np.frombuffer(json.dumps(c.entity_ids).encode(), dtype=np.uint8),
            prior=self.prior,
            prior_weight=np.array([self.prior_weight]),
            cold_boost=np.array([self.cold_boost]),
            dormant_offset=np.array([self.dormant_offset]),
            neighbour_temperature=np.array([self.neighbour_temperature]),
            is_new=self.is_new.astype(np.uint8),
            linear_weight=np.array([self.linear_weight]),
            item_content=self.item_content,
            **self.popularity.state(),
        )
        if self.linear is not None:
            state.update(heads.state(self.linear))
        if self.rating_strength is not None:
            r = self.rating_strength
            state["rating_strength"] = np.array([r.low, r.high, r.spread])
            state["head_rows"] = self.head_rows.data
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_layers = arrays["item_layers"]
        self.item_final = arrays["item_final"]
        self.user_final = arrays["user_final"]
        self.item_degree = arrays["item_degree"]
        self.gate_weights = arrays["gate_weights"]
        self.prior = arrays["prior"]
        self.prior_weight = float(arrays["prior_weight"][0])
        self.cold_boost = float(arrays["cold_boost"][0])
        self.dormant_offset = float(arrays.get("dormant_offset", [0.0])[0])
        # Models saved before the temperature was chosen keep the constructor's default.
        saved = arrays.get("neighbour_temperature", [self.neighbour_temperature])
        self.neighbour_temperature = float(saved[0])
        self.is_new = arrays["is_new"].astype(bool)
        self.linear = heads.from_state(arrays, len(self.item_final))
        self.linear_weight = float(arrays["linear_weight"][0])
        if "rating_strength" in arrays:
            self.rating_strength = RatingStrength(*map(float, arrays["rating_strength"]))
            self.head_rows = self._strength_rows(arrays["head_rows"])
        self.item_content = arrays["item_content"]
        self.popularity = PopularityPrior.from_state(arrays)
        n_items = self.item_final.shape[0]
        entities = sp.csr_matrix(
            (
                arrays["content_ent_data"],
                arrays["content_ent_indices"],
                arrays["content_ent_indptr"],
            ),
            shape=(n_items, len(arrays["content_idf"])),
        )
        self.content = ItemContent(
            arrays["content_text"],
            arrays["content_has_text"].astype(bool),
            entities,
            json.loads(bytes(arrays["entity_names"]).decode()),
            arrays["content_idf"],
        )
        net_state = {
            k[4:]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("net.")
        }
        n_users = net_state["user_emb.weight"].shape[0] if "user_emb.weight" in net_state else 0
        self._net = FusionNetwork(
            self.config, n_items, self.content.text, entities.shape[1], n_users
        )
        self._net.load_state_dict(net_state)
