"""kinformer's state: the arrays a training snapshot keeps, and what a saved model holds
(:class:`TransferState`)."""

from __future__ import annotations

import json

import numpy as np
import scipy.sparse as sp
import torch

from kinrec.knowledge.features import ItemContent
from kinrec.models import item_item as heads
from kinrec.models.ease import RatingStrength
from kinrec.models.prior import PopularityPrior
from kinrec.models.transfer.network import FusionNetwork


class TransferState:
    """Snapshots and persistence, mixed into
    :class:`~kinrec.models.transfer.model.TransferRecommender`: :meth:`_arrays` /
    :meth:`_set_arrays` are the inference arrays early stopping keeps and restores;
    :meth:`_state` / :meth:`_load_state` everything a saved model holds (the network's
    parameters, the inference arrays, the content, the score's parts and weights)."""

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
            neighbour_graph_share=np.array(
                [np.nan if self.neighbour_graph_share is None else self.neighbour_graph_share]
            ),
            is_new=self.is_new.astype(np.uint8),
            linear_weight=np.array([self.linear_weight]),
            item_content=self.item_content,
            **self.popularity.state(),
        )
        if self.linear is not None:
            state.update(heads.state(self.linear))
        if self.private_counts is not None:
            state["private_counts"] = self.private_counts.astype(np.float64)
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
        share = float(arrays.get("neighbour_graph_share", [np.nan])[0])  # nan: the default
        self.neighbour_graph_share = None if np.isnan(share) else share
        self.is_new = arrays["is_new"].astype(bool)
        self.linear = heads.from_state(arrays, len(self.item_final))
        self.linear_weight = float(arrays["linear_weight"][0])
        if "rating_strength" in arrays:
            self.rating_strength = RatingStrength(*map(float, arrays["rating_strength"]))
            self.head_rows = self._strength_rows(arrays["head_rows"])
        self.item_content = arrays["item_content"]
        self.private_counts = arrays.get("private_counts")
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
