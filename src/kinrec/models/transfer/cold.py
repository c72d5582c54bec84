"""kinformer's items without training interactions (:class:`ColdItems`).

An item nobody interacted with in the training data is *untrained*
(:func:`kinrec.models.base.untrained`, the definition the service's "new" label uses too).
kinformer tells two kinds apart:

* **new** items (``is_new``): declared new in the side data (published after the training
  period), or added later (:meth:`ColdItems.add_items`); they get the new-item offset
  (``cold_boost``), chosen with the temperature of their neighbours' weights on a pseudo-cold
  validation (:meth:`ColdItems._calibrate_cold`);
* **dormant** items (``is_dormant``): the other untrained items, in the catalogue during
  training yet never interacted with; their empty history is evidence in itself, which
  their own offset (``dormant_offset``, chosen on validation) weighs.

Both borrow a collaborative representation: the similarity-weighted mean of the final
vectors, propagated layers and linear-head rows/columns of their nearest warm items
(:meth:`ColdItems._impute_new_items`), or keep their content view alone. Nearness mixes
the language-model cosine of their texts and the cosine of their IDF-weighted
knowledge-graph entities (items sharing a director, a cast, a label), with the graph's share
(``neighbour_graph_share``) chosen on the pseudo-cold validation: where the graph knows what
the text does not (titles only), it counts; where it repeats the text, it gets none.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from kinrec.data.dataset import Dataset, Interactions
from kinrec.knowledge.features import ItemContent, content_for_new_items
from kinrec.models import item_item as heads
from kinrec.models import memory
from kinrec.models.base import Validator, untrained
from kinrec.models.transfer.network import SparseOperator
from kinrec.training.loop import choose_on_validation

SIMILARITY_CELLS = 1 << 25
"""At most this many (item, warm item) text similarities at once when items look for their
nearest warm items (128 MiB of float32)."""


class ColdItems:
    """New and dormant items, mixed into
    :class:`~kinrec.models.transfer.model.TransferRecommender`.

    ``is_new``: the items the new-item offset applies to; ``cold_boost``: that offset;
    ``dormant_offset``: the offset of dormant items; ``neighbour_temperature``: the softmax
    temperature of the weights untrained items borrow their neighbours' vectors with.
    """

    is_new: np.ndarray | None
    cold_boost: float
    dormant_offset: float
    neighbour_temperature: float
    neighbour_graph_share: float | None  # None: the default of the views (see below)

    # ------------------------------------------------------------- untrained items
    @property
    def is_untrained(self) -> np.ndarray:
        """Items without any training interaction: new and dormant ones alike."""
        return untrained(self.item_degree)

    def _declare_new_items(self, n_items: int) -> None:
        """``is_new`` once training is done: the side data's declared new items among the
        untrained ones."""
        # The new-item offset is for items published after the training period: the side
        # data's declared new items now, and items added later. An old item that simply has
        # no interactions is not new: its neighbours' vectors rank it, without the offset.
        declared = np.zeros(n_items, dtype=bool)
        for item in getattr(self.side, "new_items", ()):
            if item in self.item_map:
                declared[self.item_map.index(item)] = True
        self.is_new = declared & self.is_untrained

    # ------------------------------------------------------------- dormant items
    DORMANT_OFFSETS = (0.0, -1.0, -2.0, -4.0, -8.0)

    @property
    def is_dormant(self) -> np.ndarray:
        """Items known during training that nobody interacted with, and not declared new.

        They borrow their text neighbours' collaborative vectors like new items, but their
        empty history is itself evidence (they had their chance), which the offset weighs."""
        return self.is_untrained & ~self.is_new

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
    NEIGHBOUR_GRAPH_SHARES = (0.0, 0.25, 0.5, 1.0)

    @property
    def _neighbour_sources(self) -> tuple[bool, bool]:
        """Whether nearness can read the items' texts, and their graph entities."""
        c = self.content
        text = bool(self.config.use_text and c.text.shape[1] and c.has_text.any())
        graph = bool(self.config.use_kg and c.entities.shape[1] and c.entities.nnz)
        return text, graph

    def _graph_shares(self) -> tuple[float, ...]:
        """The graph shares of nearness worth comparing: all of them with both sources, the
        one source's otherwise (0: text alone, 1: graph alone)."""
        text, graph = self._neighbour_sources
        if self.config.neighbour_graph_share is not None:
            return (self.config.neighbour_graph_share,)
        if text and graph:
            return self.NEIGHBOUR_GRAPH_SHARES
        return (0.0,) if text else (1.0,)

    @property
    def graph_share(self) -> float:
        """The knowledge graph's share in the nearness of items (chosen, or the default)."""
        if self.neighbour_graph_share is not None:
            return self.neighbour_graph_share
        return self._graph_shares()[0]

    def _neighbour_weights(
        self,
        items: np.ndarray,
        exclude: np.ndarray | None = None,
        temperature: float | None = None,
    ):
        """``(len(items) x n_items)`` weights over each item's nearest warm items.

        The ``cold_neighbours`` most similar items with interactions (and not in ``exclude``)
        get softmax weights of their similarity (text and graph cosines mixed at
        :attr:`graph_share`) at ``temperature`` (default: the model's), summing to one; only
        positively similar neighbours count, and items without such a neighbour get none.
        """
        share = self.graph_share
        return self._softmax_weights(
            self._nearest_warm(items, exclude, (share,))[share], temperature
        )

    def _nearest_warm(
        self, items: np.ndarray, exclude: np.ndarray | None = None, shares=(0.0,)
    ) -> dict:
        """For each graph share of ``shares``: each item's ``cold_neighbours`` most similar
        items with interactions (not in ``exclude``), by ``(1 - share) * text cosine + share *
        graph cosine``: ``(items, similarities)``, two ``(rows, k)`` arrays (``k`` = 0
        without a source of nearness or warm items)."""
        k = self.config.cold_neighbours
        sources = ~self.is_untrained
        if exclude is not None:
            sources &= ~exclude
        pool = np.flatnonzero(sources)
        use_text, use_graph = self._neighbour_sources
        empty = np.zeros((len(items), 0), dtype=np.int64), np.zeros((len(items), 0), np.float32)
        if k == 0 or not (use_text or use_graph) or not len(pool) * len(items):
            return {share: empty for share in shares}
        k = min(k, len(pool))
        # rows x warm items similarities, each row cut to its k best, in blocks of rows of
        # at most SIMILARITY_CELLS similarities (fewer where memory is short): the whole
        # product (new or pseudo-new items x items) is gigabytes on large catalogues
        c = self.content
        pool_text = c.text[pool] if use_text else None
        pool_graph = c.entities[pool].T.tocsc() if use_graph else None
        block = min(
            memory.rows_that_fit(len(pool) * 4 * 4, len(items)),
            max(1, SIMILARITY_CELLS // len(pool)),
        )
        found: dict[float, tuple[list, list]] = {share: ([], []) for share in shares}
        for start in range(0, len(items), block):
            rows = items[start : start + block]
            text = c.text[rows] @ pool_text.T if use_text else 0.0
            graph = (c.entities[rows] @ pool_graph).toarray() if use_graph else 0.0
            for share, (tops, best) in found.items():
                sims = (1.0 - share) * text + share * graph
                sims = torch.from_numpy(np.maximum(sims, 0.0, dtype=np.float32))
                top = torch.topk(sims, k, dim=1)
                tops.append(top.indices.numpy())
                best.append(top.values.numpy())
        return {
            share: (pool[np.concatenate(tops)], np.concatenate(best))
            for share, (tops, best) in found.items()
        }

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
        weights = self._neighbour_weights(items)
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
    PSEUDO_NEW_ITEMS = 10_000
    """At most this many pseudo-new items in the calibration: each is matched against every
    warm item by text (a million-item catalogue's 15% would be 10^5 x 10^6 similarities),
    and ten thousand items with all their interactions pin down two numbers well."""

    def _calibrate_cold(self, train: Interactions, valid: Interactions) -> None:
        """Choose the score offset of new items, and the temperature of the weights they
        borrow their neighbours' vectors with, on a pseudo-cold validation.

        A seeded share of warm items (>= 5 train interactions; at most
        :attr:`PSEUDO_NEW_ITEMS`) is treated as new: they are scored as new items are
        (borrowed neighbour vectors or content alone, no linear-head column of their own),
        their train interactions are removed from the users' seen rows, and all their train
        and validation interactions become targets next to the other validation rows, as
        the whole future of a newly published item is. The pair maximising NDCG@10 there is
        kept: too low and new items never surface, too high and they crowd out what the
        user would pick. (The users' trained vectors still include those items; this mild
        leak makes the choice conservative.)
        """
        from kinrec.evaluation.protocol import evaluate_group_variants, validation_users

        eligible = np.flatnonzero(self.item_degree >= 5)
        if len(eligible) < 2:
            return
        rng = np.random.default_rng(self.config.seed)
        size = max(1, int(self.config.cold_calibration * len(eligible)))
        size = min(size, self.PSEUDO_NEW_ITEMS)
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
        # without neighbours to borrow from, the temperature and the graph share change nothing
        pseudo_items = np.flatnonzero(pseudo)
        shares = self._graph_shares()
        nearest = self._nearest_warm(pseudo_items, exclude=pseudo, shares=shares)
        borrows = any(found[0].shape[1] for found in nearest.values())
        temperatures = (
            (self.config.neighbour_temperature or self.neighbour_temperature,)
            if self.config.neighbour_temperature or not borrows
            else self.NEIGHBOUR_TEMPERATURES
        )
        if not borrows:
            shares = shares[:1]
        boosts = [b * self._offset_scale for b in self.COLD_BOOSTS]
        head = self._head_on
        variants = {}
        for temperature, share in ((t, g) for g in shares for t in temperatures):
            weights = self._softmax_weights(nearest[share], temperature)
            has = np.diff(weights.indptr) > 0
            final = self.item_content[pseudo].copy()
            borrowed_final, _, borrowed_columns = self._borrowed(weights, columns=head)
            final[has] = borrowed_final[has]
            # the head with the pseudo-new items' columns borrowed: only those columns are
            # held apart (a copy of the whole head would double its memory)
            columns = heads.masked_columns(borrowed_columns, has) if head else None
            variants[temperature, share] = (final, columns)
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
            tower = self._tower(b["u"], others_final)
            linear = self._linear_scores(b["rows"], self.linear)[:, others] if head else None
            return self._score_of(tower, offset[others], linear, head_first=True)

        def inside(final: np.ndarray, columns) -> Callable[[np.ndarray], np.ndarray]:
            def scores_of(users: np.ndarray) -> np.ndarray:
                b = of_batch(users)
                tower = self._tower(b["u"], final)
                linear = None if columns is None else self._linear_scores(b["rows"], columns)
                return self._score_of(tower, offset[pseudo], linear, head_first=True)

            return scores_of

        insides = {t: inside(final, columns) for t, (final, columns) in variants.items()}
        scored = evaluate_group_variants(
            outside, insides, pseudo, boosts, truth, [seen], ks=(10,), batch_size=2048
        )
        results = {key: result.metrics["ndcg@10"] for key, result in scored.items()}
        del variants, insides
        (self.neighbour_temperature, share), self.cold_boost = max(results, key=results.get)
        self.neighbour_graph_share = share if borrows else None
        self.fit_info["cold_search"] = {
            self._cold_tag(t, g, b): round(v, 5) for ((t, g), b), v in results.items()
        }
        self.fit_info["neighbour_temperature"] = self.neighbour_temperature
        self.fit_info["neighbour_graph_share"] = self.graph_share
        self.fit_info["cold_boost"] = self.cold_boost

    @staticmethod
    def _cold_tag(temperature: float, share: float, offset: float) -> str:
        """How a setting of the pseudo-cold search is named in ``fit_info["cold_search"]``."""
        return f"temperature={temperature:g} graph={share:g} offset={offset:g}"

    # ------------------------------------------------------------- added items
    def add_items(self, item_ids: list[str], side: Dataset) -> None:
        """Append new items: they borrow the collaborative vectors of their nearest warm items
        (by text and graph, as chosen in training), or are scored from their content views
        alone."""
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
