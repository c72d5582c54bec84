"""KinFormer-style transfer model: language-model, knowledge-graph and collaborative views fused
per item, users defined by the items they touched, trained with ranking + self-supervised losses.

Item representation (layer 0), for item ``i``::

    id_i   = E_id[i]                                  collaborative view (trained)
    text_i = MoE(t_i)                                 frozen LM embedding t_i -> d, through a
                                                      mixture of whitening-linear experts
    kg_i   = sum_e A[i, e] * E_ent[e]                 knowledge view: IDF-weighted entity
                                                      embeddings of the item's KG neighbours
    x_i    = sum_v softmax(gate([id_i, text_i, kg_i]))_v * view_v   (knowledge fusion)

Views an item lacks (no training interaction -> no ID view; no text; no entity) are masked out
of the gate. During training the ID view is dropped at random (``id_dropout``), so the content
views learn to stand in for it, which is what new items need.

Users have no free embedding: LightGCN-style propagation over the normalised user-item graph
``R~ = D_u^-1/2 R D_i^-1/2`` defines them from their items::

    u1 = R~ x,   i2 = R~^T u1,   u3 = R~ i2,   user = (u1 + u3) / 2,   item = (x + i2) / 2

so a new user (or a user with new events) is folded in exactly by the same sums over their
items, and a new item is scored through its content views alone. Scores are cosine / tau.

Losses: sampled softmax over uniformly drawn negatives of items with interactions (keeps
popularity information), plus (a) an InfoNCE alignment between each item's ID view and its
content view, and (b) an XSimGCL-style contrast between noise-perturbed layers.

After training, four parts complete the score, each with its weight chosen on validation:

* a linear collaborative head: closed-form EASE item-item weights ``B`` on the user's seen
  row (``linear_weight * x_u B``), the residual that a low-rank two-tower model misses. On
  rated data the row's entries are the ratings' strengths (``1 - s`` at the lowest rating to
  ``1 + s`` at the highest, ``linear_rating_spread`` chosen on validation), in ``x_u`` and
  in the Gram matrix ``X^T X`` alike. In its Gram matrix, co-occurrences close in each
  user's time order (events ``d`` apart weigh ``exp(-d / linear_session_window)``) take a
  share, chosen on validation, of the co-occurrences anywhere in a history: what a user
  rated in one sitting was usually shown together. The Gram matrix also gets the items'
  language-model neighbour graph (each item's ``linear_text_neighbours`` nearest items by
  text cosine, at a strength chosen on validation): a collective EASE that regresses an item
  on what users do with it and on what it is, so that two films that read alike share
  weights even when few users had both;
* a content popularity prior (:mod:`kinrec.models.prior`);
* for new items (declared in the side data, or added later): an offset chosen on a
  pseudo-cold validation, where warm items are hidden and their whole interaction history
  becomes the target, as a new item's future is;
* for dormant items (in the catalogue during training, never interacted with, not declared
  new): an offset chosen on validation, since their empty history is evidence in itself.

Items without interactions borrow a collaborative representation: the similarity-weighted
mean of the final vectors, propagated layers and ``B`` rows/columns of their nearest warm
items in the language-model space (``cold_neighbours``), or their content view alone.
"""

from kinrec.models.transfer.config import TransferConfig
from kinrec.models.transfer.model import TransferRecommender
from kinrec.models.transfer.network import FusionNetwork, SparseOperator

__all__ = ["FusionNetwork", "SparseOperator", "TransferConfig", "TransferRecommender"]
