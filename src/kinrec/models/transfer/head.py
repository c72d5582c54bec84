"""kinformer's linear head: the closed-form EASE item-item weights ``B`` whose scores on a
user's (rating-weighted) row complete the two-tower's (:class:`LinearHead`).

:meth:`LinearHead._choose_linear` picks the solver (dense EASE, or the sparse EASE of
:mod:`kinrec.models.sparse_linear`, or none where even that does not fit in memory), then
searches the head's Gram matrix (rating spread, share of close co-occurrences, strengths of
the language-model and of the knowledge-graph neighbour graphs), its L2 and its weight in
the score on validation. The head's input rows (``seen`` weighted by the chosen rating
strengths) are what trained users and folded-in histories feed it.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from kinrec.data.dataset import Interactions
from kinrec.models import item_item as heads
from kinrec.models import memory
from kinrec.models.base import Validator
from kinrec.models.ease import RatingStrength
from kinrec.training.loop import choose_on_validation

# The model's logger (the head's warnings were the model module's before it was split).
log = logging.getLogger("kinrec.models.transfer.model")


class LinearHead:
    """The linear head, mixed into :class:`~kinrec.models.transfer.model.TransferRecommender`.

    ``linear``: the head (a dense ``(n_items, n_items)`` array, a sparse CSR matrix of that
    shape, or None: no head); ``linear_weight``: its weight in the score (0: unused);
    ``rating_strength``: the rating strengths of its input rows (None: every entry is 1);
    ``head_rows``: ``seen`` weighted by them (None: ``seen`` itself).
    """

    linear: heads.Head | None
    linear_weight: float
    rating_strength: RatingStrength | None
    head_rows: sp.csr_matrix | None

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
    LINEAR_KG_GRID = (0.0, 1.0, 2.0, 4.0)

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
        (``LINEAR_TEXT_GRID``, in units of the mean item count) added to it, then that of
        the knowledge-graph neighbour graph (``LINEAR_KG_GRID``); its L2 comes
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
    def _head_phases(rated: dict, shares: tuple, strengths: tuple, kg_strengths: tuple) -> tuple:
        """The head's Gram settings (rating spread, share of close co-occurrences, strength
        of the text neighbours, strength of the knowledge-graph neighbours) in the order they
        are searched: each phase maps the best setting so far (None before the first) to
        the settings it tries: every spread, then the other shares at the best spread, then
        the other text strengths at the best share, then the other graph strengths."""
        return (
            lambda _: [(spread, 0.0, 0.0, 0.0) for spread in rated],
            lambda h: [(h[0], share, 0.0, 0.0) for share in shares[1:]],
            lambda h: [(h[0], h[1], strength, 0.0) for strength in strengths[1:]],
            lambda h: [(h[0], h[1], h[2], strength) for strength in kg_strengths[1:]],
        )

    @staticmethod
    def _setting_tag(l2: float, setting: tuple) -> str:
        """How a head's L2 and Gram setting are named in ``fit_info["linear_search"]``."""
        return "l2={:g} ratings={:g} session={:g} text={:g} kg={:g}".format(l2, *setting)

    @staticmethod
    def _collective_term(
        text: sp.csr_matrix | None,
        text_strength: float,
        kg: sp.csr_matrix | None,
        kg_strength: float,
    ) -> sp.csr_matrix | None:
        """The collective part of the head's Gram matrix: the items' text neighbours and their
        knowledge-graph neighbours, each at its strength (None: neither)."""
        parts = [
            w * g for g, w in ((text, text_strength), (kg, kg_strength)) if w and g is not None
        ]
        if not parts:
            return None
        return sum(parts[1:], parts[0]).tocsr()

    def _choose_head_weight(
        self, l2: float, setting: tuple, searches: dict, validator: Validator | None
    ) -> float:
        """With ``self.linear`` the head fitted at ``l2`` and Gram ``setting``: let items
        without interactions borrow its rows and columns, choose its weight on validation,
        record the search in ``searches``; returns the best validation score (0 without)."""
        self._impute_new_items(np.flatnonzero(self.is_untrained))
        choose_on_validation(self, "linear_weight", self.LINEAR_GRID, validator)
        search = self.fit_info.pop("linear_weight_search", {})
        tag = self._setting_tag(l2, setting)
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
        kg = self._kg_graph(float(counts.mean())) if validating else None
        session = self._session_gram(train) if validating else None
        shares = self.LINEAR_SESSION_GRID if session is not None else (0.0,)
        strengths = self.LINEAR_TEXT_GRID if graph is not None else (0.0,)
        kg_strengths = self.LINEAR_KG_GRID if kg is not None else (0.0,)
        alone = EASE()
        alone.user_map, alone.item_map = self.user_map, self.item_map
        compare = validator is not None and (
            len(grid) > 1
            or len(rated) > 1
            or len(shares) > 1
            or len(strengths) > 1
            or len(kg_strengths) > 1
        )
        step = f"kinformer's sparse head ({n:,} items, {k} neighbours)"

        def solve(spread: float, share: float, strength: float, kg_strength: float):
            rows = rated[spread][1]
            term = self._collective_term(graph, strength, kg, kg_strength)
            if dense:  # the systems read from the dense Gram matrix: faster where it fits
                gram = dense_gram(rows)
                gram = mixed_gram(gram, session, share, inplace=True)
                gram = collective_gram(gram, term, 1.0, inplace=True)
            else:
                gram = GramParts(rows, session, share, term, 1.0)
            tag = f"ratings={spread:g} session={share:g} text={strength:g} kg={kg_strength:g}"
            progress = self._progress

            def report(done: int, total: int) -> None:
                if progress is not None:
                    progress(f"{step}: {tag}", done, total, {})

            return neighbourhood_weights(gram, grid, k, progress=report, workers=cfg.fit_threads())

        best = None  # (head-alone score, (spread, share, strength), heads by L2)
        searches: dict[str, float] = {}
        for settings in self._head_phases(rated, shares, strengths, kg_strengths):
            for setting in settings(best[1] if best else None):
                heads_by_l2 = solve(*setting)
                alone.seen = rated[setting[0]][1]
                score = None
                for l2, weights in zip(grid, heads_by_l2, strict=True):
                    alone.weights = weights
                    value = validator(alone) if compare else 0.0
                    tag = self._setting_tag(l2, setting)
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
            candidates = [
                max(
                    candidates,
                    key=lambda c: searches[f"{self._setting_tag(c[0], setting)} head alone"],
                )
            ]
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
            linear_kg_strength=setting[3],
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
        kg = self._kg_graph(gram) if validating else None
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
        kg_strengths = self.LINEAR_KG_GRID if kg is not None else (0.0,)
        grid = (self.config.linear_l2,) if self.config.linear_l2 else self.LINEAR_L2_GRID
        if not validating:
            grid = grid[:1]
        compare = len(rated) > 1 or len(shares) > 1 or len(strengths) > 1 or len(kg_strengths) > 1
        best, searches, indefinite = None, {}, []
        for l2 in grid:
            self.linear = None  # the best L2's head so far is in ``best``
            head = None  # (validation score, (spread, share, text strength), float32 weights)
            for settings in self._head_phases(rated, shares, strengths, kg_strengths):
                for setting in settings(head[1] if head else None):
                    spread, share, strength, kg_strength = setting
                    tag = self._setting_tag(l2, setting)
                    memory.require(step, *variant)
                    grams, owned = rated_gram(spread)
                    alone.seen = rated[spread][1]
                    if share and session is not None:
                        grams, owned = mixed_gram(grams, session, share, inplace=owned), True
                    term = self._collective_term(graph, strength, kg, kg_strength)
                    if term is not None:
                        grams, owned = collective_gram(grams, term, 1.0, owned), True
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
            linear_kg_strength=setting[3],
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

    def _kg_graph(self, gram: np.ndarray | float) -> sp.csr_matrix | None:
        """The items' knowledge-graph neighbour graph (each item's ``linear_kg_neighbours``
        items sharing the most specific entities: cosine of the IDF-weighted entity rows) on
        the scale of the Gram matrix (or of the mean of its diagonal) (None: off, or no
        entity shared)."""
        from kinrec.models.ease import scaled_graph, sparse_neighbour_graph

        k = self.config.linear_kg_neighbours
        entities = self.content.entities
        if not k or not self.config.use_kg or entities.shape[1] == 0 or entities.nnz == 0:
            return None
        return scaled_graph(sparse_neighbour_graph(entities, k), gram)

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
