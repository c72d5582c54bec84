"""``kinformer``: the model class (:class:`TransferRecommender`): its settings, the order in
which ``fit`` builds its parts, and its item views. The package docstring
(:mod:`kinrec.models.transfer`) gives the model.

The rest is one mixin class per seam, each in its own module:

* :mod:`~kinrec.models.transfer.training`: training the fusion network and the propagation,
  and the inference arrays computed from them;
* :mod:`~kinrec.models.transfer.head`: the linear head: its solver, the search of its Gram
  matrix, L2 and weight, its input rows;
* :mod:`~kinrec.models.transfer.cold`: items without training interactions: new and dormant
  items, their offsets, the neighbours they borrow from, the pseudo-cold calibration, items
  added later;
* :mod:`~kinrec.models.transfer.scoring`: the score, written once (tower, item offset,
  weighted head), for trained users and folded-in histories;
* :mod:`~kinrec.models.transfer.retrieval`: candidate retrieval for the service (the tower
  as an inner-product index, the head's candidates, exact scores of a few candidates);
* :mod:`~kinrec.models.transfer.state`: training snapshots and the saved state;
* :mod:`~kinrec.models.transfer.private`: the fit with user-level differential privacy.

Mixins rather than collaborator objects: the parts share one state (the vectors, the head,
the offsets) that training sets and scoring reads, and call across each other (the head's
search scores the whole model, new items borrow the head's rows); as mixins every attribute
stays on the model, where tests, the service and benchmarks reach it. Each mixin documents
the state it owns; :meth:`TransferRecommender.__init__` sets it (the network: training or
loading).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from kinrec.data.dataset import Interactions
from kinrec.knowledge.features import (
    ItemContent,
    TextEmbedder,
    build_item_content,
    model_text_embedder,
)
from kinrec.models import item_item as heads
from kinrec.models.base import (
    CAPABILITIES,
    DataRequirementError,
    ProgressCallback,
    Recommender,
    Requirement,
    Validator,
)
from kinrec.models.ease import RatingStrength
from kinrec.models.prior import PopularityPrior, choose_prior_weight, feature_count
from kinrec.models.transfer.cold import ColdItems
from kinrec.models.transfer.config import TransferConfig
from kinrec.models.transfer.head import LinearHead
from kinrec.models.transfer.private import PrivateTraining
from kinrec.models.transfer.retrieval import TransferRetrieval
from kinrec.models.transfer.scoring import TransferScoring
from kinrec.models.transfer.state import TransferState
from kinrec.models.transfer.training import TransferTraining
from kinrec.training.loop import seeded, torch_threads

log = logging.getLogger(__name__)

KG_SOURCES = ("attributes", "knowledge_graph")
"""What the knowledge-graph view is built from: item attributes and linked triples."""


class TransferRecommender(
    PrivateTraining,
    TransferTraining,
    LinearHead,
    ColdItems,
    TransferScoring,
    TransferRetrieval,
    TransferState,
    Recommender,
):
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
    # Erasure (Recommender.forget): nothing is updated exactly. The two-tower is trained by
    # gradient; the linear head's Gram matrix holds, besides the rating-weighted rows, the
    # close co-occurrences of the users' time order and neighbour graphs scaled by the mean
    # item count, whose parts the model directory does not keep: both wait for retraining.
    parts = ("two-tower", "linear head")

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
        self.neighbour_graph_share = self.config.neighbour_graph_share
        self.is_new: np.ndarray | None = None  # items the new-item offset applies to
        self.item_content: np.ndarray | None = None  # content-only item vectors
        self.linear: heads.Head | None = None  # the EASE head, dense or sparse (n x n)
        self.linear_weight = 0.0
        self.rating_strength: RatingStrength | None = None  # weights of the head's input rows
        self.head_rows: sp.csr_matrix | None = None  # ``seen`` weighted by strength; None: seen
        self.private_counts: np.ndarray | None = None  # with dp_epsilon: the noisy counts
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
        if cfg.dp_epsilon is not None:  # user-level DP: its own fit (private.py)
            self._fit_private(train, progress)
            return
        self.is_new = np.zeros(train.n_items, dtype=bool)  # set once training is done
        self.neighbour_graph_share = cfg.neighbour_graph_share  # chosen with the cold offset
        threads = cfg.fit_threads()
        self.fit_info["threads"] = threads
        with torch_threads(threads), seeded(cfg.seed) as rng:
            self._train(train, validator, progress, rng)
        self.linear = None
        self._fit_prior(np.bincount(train.items, minlength=train.n_items).astype(np.float64))
        self._impute_new_items(np.flatnonzero(self.is_untrained))
        self._declare_new_items(train.n_items)
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
            self._impute_new_items(np.flatnonzero(self.is_untrained))

    def _fit_prior(self, counts: np.ndarray) -> None:
        """The popularity prior from item ``counts``: predicted from the items' content
        where there is some, else the items' own standardised log counts."""
        self.popularity = None  # the features follow the views, not an earlier fit
        features = self._prior_features(self.content)
        self.popularity, self.prior = PopularityPrior.fit(features, counts)
        if feature_count(features) == 0:  # no content: the prior is the items' own popularity
            logs = np.log1p(counts)
            self.prior = ((logs - logs.mean()) / (logs.std() + 1e-12)).astype(np.float32)

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

    # ------------------------------------------------------------- content
    def _prior_features(self, content: ItemContent) -> tuple:
        """The popularity prior's features: text vectors and, with the graph view
        (``use_kg``), entity incidence, as column blocks
        (:class:`~kinrec.models.prior.PopularityPrior` never joins them for the whole
        catalogue). A model saved when the prior always read the entities keeps them."""
        blocks = (content.text, content.entities)
        if self.config.use_kg:
            return blocks
        popularity = getattr(self, "popularity", None)
        if popularity is not None and len(popularity.coef) == feature_count(blocks) + 1:
            return blocks  # fitted on both before the graph view decided
        return (content.text,)

    def warm_up(self) -> None:
        if self.config.use_text:
            model_text_embedder(self)(["warm-up"])

    def _item_text_embedder(self) -> TextEmbedder:
        """The model's text encoder; without the language model (``use_text`` off), zero-width
        vectors, so that no text is encoded and no text-based part has anything to use."""
        if self.config.use_text:
            return model_text_embedder(self)
        return lambda texts: np.zeros((len(texts), 0), dtype=np.float32)
