"""Typed settings of the transfer model; every component can be switched off for ablations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from kinrec.models.memory import available_cpus
from kinrec.privacy.dp import DPConfig
from kinrec.training.loop import IterativeConfig


class TransferConfig(IterativeConfig, DPConfig):
    """Settings of the transfer model; every component can be switched off for ablations.

    With ``dp_epsilon`` set the model trains privately (:mod:`kinrec.models.transfer.private`)
    from the ``dp_*`` settings below, all fixed in advance: none is chosen on validation."""

    dim: int = Field(64, ge=4, description="embedding size of every view")
    use_id: bool = Field(True, description="collaborative ID view")
    use_text: bool | None = Field(
        None,
        description=(
            "the language model: its view, the LM-space neighbours new items borrow from and "
            "the linear head regresses on, and text in the popularity prior (false: item "
            "texts are not encoded at all); None: on where the data has item text; true on "
            "data without item text is an error"
        ),
    )
    use_kg: bool | None = Field(
        None,
        description=(
            "the knowledge graph (item attributes and linked triples): its view, the graph "
            "neighbours the linear head regresses on and new items borrow from, and entities "
            "in the popularity prior (false: the graph is not read at all); None: on where "
            "the data has either; true on data with neither is an error"
        ),
    )
    text_adapter: Literal["moe", "linear", "frozen"] = Field(
        "moe", description="trainable adapter on the frozen LM embedding; 'frozen' = fixed PCA"
    )
    n_experts: int = Field(4, ge=1)
    temperature: float = Field(0.2, gt=0)
    n_negatives: int = Field(1024, ge=1, description="uniform negatives shared by a batch")
    id_dropout: float = Field(0.1, ge=0, le=1, description="share of items trained content-only")
    align_weight: float = Field(0.05, ge=0, description="ID-content InfoNCE alignment")
    cl_weight: float = Field(0.0, ge=0, description="XSimGCL layer contrast (0: off)")
    cl_noise: float = Field(0.1, ge=0)
    cl_temperature: float = Field(0.2, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    n_layers: int = Field(2, ge=1, description="LightGCN propagation layers")
    user_embeddings: bool = Field(True, description="layer-0 user embeddings (else items only)")
    similarity: Literal["cosine", "dot"] = "cosine"
    batch_size: int = Field(4096, ge=1)
    max_steps_per_epoch: int | None = Field(
        256,
        ge=1,
        description=(
            "on data with more than batch_size x this many training pairs, the batch grows "
            "instead of the number of steps: a full-propagation step costs about the whole "
            "graph, and a cached step's fixed costs (the optimiser's update of the ID and user "
            "tables, the cache refreshes) are paid fewer times; None: off"
        ),
    )
    propagation: Literal["auto", "full", "cached"] = Field(
        "auto",
        description=(
            "'full': every step runs the views of every item and LightGCN over the whole "
            "graph (exact gradients; a step costs about the catalogue); 'cached': a step runs "
            "the views of its batch's items only and takes the graph layers from a "
            "propagation without gradients refreshed every cache_refresh_steps steps "
            "(historical embeddings; a step costs about its batch); 'auto': full up to "
            "full_propagation_items items (and whenever cl_weight > 0), cached above"
        ),
    )
    full_propagation_items: int = Field(
        50_000,
        ge=0,
        description="largest catalogue 'auto' propagates in full at every step",
    )
    cache_refresh_steps: int = Field(
        32, ge=1, description="steps between refreshes of the cached graph layers"
    )
    learning_rate: float = Field(1e-2, gt=0)
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(5, ge=1, description="validations (every eval_every epochs) w/o gain")
    eval_every: int = Field(2, ge=1)
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        None,
        description=(
            "torch intra-op threads while fitting; every step propagates over the whole "
            "graph, which more threads run faster (same numbers for a given value); "
            "None or 'auto': the CPUs this process may run on"
        ),
    )
    encoder_path: str | None = Field(None, description="local sentence-transformers folder")
    adapter_path: str | None = Field(
        None, description="LoRA adapter folder for the encoder (kinrec adapt); swap to compare"
    )
    linear_head: bool = Field(
        True,
        description=(
            "add closed-form EASE item-item scores (a linear collaborative residual) with a "
            "weight chosen on validation; dense or sparse by linear_solver"
        ),
    )
    linear_l2: float | None = Field(
        None, gt=0, description="L2 weight of the linear head; None: chosen on validation"
    )
    linear_solver: Literal["auto", "dense", "sparse"] = Field(
        "auto",
        description=(
            "'dense': EASE's closed form over the whole catalogue (items^2 memory); "
            "'sparse': each item regressed on its linear_neighbours most similar items "
            "(items x neighbours memory); 'auto': dense up to dense_linear_items items where "
            "its search fits in memory, sparse otherwise"
        ),
    )
    dense_linear_items: int = Field(
        15_000,
        ge=0,
        description=(
            "largest catalogue the 'auto' solver solves densely (a dense head search holds "
            "three items^2 matrices: 2.5 GiB at 15,000 items, 11 GiB at 30,000)"
        ),
    )
    linear_search_items: int = Field(
        20_000,
        ge=0,
        description=(
            "largest catalogue whose sparse head searches every Gram setting (rating spread, "
            "session share, text strength: one pass over the catalogue each, minutes at "
            "100,000 items) and gives every L2's head a weight on validation; above it the "
            "plain Gram matrix is solved once for every L2 and only the head that validates "
            "best alone gets a weight"
        ),
    )
    linear_neighbours: int = Field(
        200,
        ge=1,
        description=(
            "regressors per item of the sparse head (its most similar items), up to "
            "linear_search_items items; above, fewer, so that the head's solves (k^3 per "
            "item) cost what they cost at linear_search_items items: k x (linear_search_items "
            "/ items)^(1/3), at least 50 (117 at 100,000 items, 54 at 1,000,000)"
        ),
    )

    def head_neighbours(self, n_items: int) -> int:
        """Regressors per item of the sparse head on a catalogue of ``n_items`` items."""
        k = self.linear_neighbours
        if self.linear_search_items and n_items > self.linear_search_items:
            scaled = round(k * (self.linear_search_items / n_items) ** (1 / 3))
            k = min(k, max(50, scaled))
        return max(1, min(k, n_items - 1))

    linear_text_neighbours: int = Field(
        10,
        ge=0,
        description=(
            "the linear head also regresses each item on its k nearest items in the "
            "language-model space (their cosines added to its Gram matrix), with a strength "
            "chosen on validation (0 among the choices); 0: interactions only"
        ),
    )
    linear_kg_neighbours: int = Field(
        10,
        ge=0,
        description=(
            "the linear head also regresses each item on its k items sharing the most "
            "specific knowledge-graph entities (IDF-weighted cosine of their entities, added "
            "to its Gram matrix like the text neighbours), with a strength chosen on "
            "validation (0 among the choices, so a graph that only repeats the text gets "
            "none); 0 or use_kg = false: off"
        ),
    )
    linear_session_window: float = Field(
        10.0,
        ge=0,
        description=(
            "the linear head also counts co-occurrences close in each user's time order: "
            "events d positions apart weigh exp(-d / window); their share of the head's Gram "
            "matrix is chosen on validation (0 among the choices); 0: histories as sets"
        ),
    )
    linear_rating_spread: float | None = Field(
        None,
        ge=0,
        lt=1,
        description=(
            "weigh the linear head's input rows by the interactions' explicit ratings: "
            "1 - s at the lowest rating to 1 + s at the highest; None: s chosen on "
            "validation (0 among the choices); 0, or data without ratings: every "
            "interaction weighs 1"
        ),
    )
    cold_neighbours: int = Field(
        20,
        ge=0,
        description=(
            "items without interactions borrow the collaborative vectors of their k nearest "
            "warm items, by text and by knowledge graph (0: their own content view only)"
        ),
    )
    neighbour_temperature: float | None = Field(
        None,
        gt=0,
        description=(
            "softmax temperature of the neighbours' weights over their cosine similarity "
            "(low: the closest neighbour dominates); None: chosen on the pseudo-cold validation"
        ),
    )
    neighbour_graph_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "how much the knowledge graph counts when items without interactions look for "
            "their nearest warm items: similarity = (1 - share) x text cosine + share x "
            "cosine of their IDF-weighted graph entities; None: chosen on the pseudo-cold "
            "validation among 0, 0.25, 0.5 and 1 (text alone where there is no graph, graph "
            "alone where there is no text)"
        ),
    )
    popularity_prior: bool = Field(
        True, description="add a content-predicted popularity prior, weight chosen on valid"
    )
    dormant_offset: float | None = Field(
        None,
        le=0,
        description=(
            "score offset of dormant items: in the catalogue during training yet never "
            "interacted with (not declared new); None: chosen on validation"
        ),
    )
    cold_calibration: float = Field(
        0.15,
        ge=0,
        lt=1,
        description=(
            "share of warm items (>= 5 interactions) made pseudo-new on validation to choose "
            "the score offset of new items: declared in the side data or added later (0: none)"
        ),
    )

    dp_tower_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="with dp_epsilon: the tower's (DP-SGD) share of the privacy budget "
        "(of mu^2); the linear head's noisy Gram matrix gets the rest (1: no head)",
    )
    dp_epochs: float = Field(
        30.0,
        gt=0,
        description="with dp_epsilon: expected passes over the users (steps = epochs / "
        "sample rate), fixed in advance: no early stopping on validation",
    )
    dp_users_per_step: int = Field(
        512, ge=1, description="with dp_epsilon: expected users in a DP-SGD step (Poisson)"
    )
    dp_grad_clip: float = Field(
        1.0, gt=0, description="with dp_epsilon: L2 bound of one user's gradient per step"
    )
    dp_learning_rate: float = Field(
        0.01, gt=0, description="with dp_epsilon: Adam's step size in DP-SGD"
    )
    dp_negatives: int = Field(
        128, ge=1, description="with dp_epsilon: uniform negatives of a DP-SGD step"
    )
    dp_noise_l2: float = Field(
        0.5,
        ge=0.0,
        description="with dp_epsilon: the head's L2 for the Gram matrix's noise, in units of "
        "its spectral norm (2 sigma sqrt(items)), as EASE's",
    )
    dp_item_threshold: float = Field(
        0.1,
        ge=0.0,
        description="with dp_epsilon: the items the head's Gram matrix covers, chosen by their "
        "noisy counts as EASE's (0: every item, its diagonal the counts)",
    )
    dp_head_weight: float = Field(
        1.0,
        gt=0,
        description="with dp_epsilon: the head's score spread relative to the tower's (the "
        "weight is set from synthetic histories drawn from the released counts)",
    )
    dp_prior_weight: float = Field(
        1.0,
        ge=0,
        description="with dp_epsilon: the popularity prior's score spread relative to the "
        "tower's (the prior is fitted on the released noisy counts; 0: off)",
    )

    @model_validator(mode="before")
    @classmethod
    def _former_fields(cls, data):
        """Configs saved before the sparse head had a size cap instead of a solver."""
        if isinstance(data, dict) and "max_linear_items" in data:
            data = {k: v for k, v in data.items() if k != "max_linear_items"}
        return data

    @model_validator(mode="after")
    def _cached_without_layer_contrast(self) -> TransferConfig:
        if self.propagation == "cached" and self.cl_weight > 0:
            raise ValueError(
                "cl_weight > 0 contrasts propagated layers at every step, which needs "
                "propagation = 'full' (or 'auto')"
            )
        return self

    @model_validator(mode="after")
    def _some_view(self) -> TransferConfig:
        if not self.use_id and self.use_text is False and self.use_kg is False:
            raise ValueError("no item view is left: use_id, use_text and use_kg are all false")
        return self

    def fit_threads(self) -> int:
        """The thread count :attr:`threads` asks for (``None``/``"auto"``: available CPUs)."""
        if isinstance(self.threads, int):
            return self.threads
        return available_cpus()
