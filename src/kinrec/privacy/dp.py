"""User-level differential privacy for models solved from sufficient statistics.

The privacy unit is a **user**: two training sets are neighbours when one holds every row of
one user more (add or remove one user). A model fitted with ``dp_epsilon`` set is
(ε, δ)-differentially private in its learned weights for that neighbourhood.

The mechanism (one definition, used by EASE and popularity):

1. **Clipping.** Each user keeps at most ``clip`` of their training items, sampled uniformly
   without replacement by a hash of the model's seed and the (user, item) pair
   (:func:`clip_rows`: what one user keeps never depends on another's rows); rows stay
   binary (weight 1 per kept item). A kept row ``x`` then has
   ``||x||_1 = ||x||_2^2 = |x| <= clip``. No row weights are rescaled.
2. **Releases.** The statistics a model is solved from get Gaussian noise
   (:func:`noisy_gram`, :func:`noisy_counts`):

   * the Gram matrix ``X^T X``, released as its upper triangle with the diagonal (the rest
     is its mirror): one user adds ``x x^T``, whose upper triangle has L2 norm
     ``sqrt((|x|^2 + |x|) / 2) <= sqrt((clip^2 + clip) / 2)`` (:func:`gram_sensitivity`;
     the full matrix's Frobenius norm ``||x||_2^2 = |x| <= clip`` counts every
     off-diagonal pair twice). The noise is symmetric: one draw per upper-triangle entry, mirrored;
   * item counts ``X^T 1``: one user adds ``x``, L2 norm ``sqrt(|x|) <= sqrt(clip)``
     (:func:`count_sensitivity`; the L2 norm, which is what the Gaussian mechanism needs,
     not the L1 norm ``|x|``). The Gram matrix's diagonal *is* the counts of binary rows, so
     a model that releases the Gram matrix of every item reads counts from it at no
     further cost.

   A model solved from a Gram matrix (EASE, kinformer's head: :func:`solve_private_gram`)
   first releases the counts, which choose the items its Gram matrix covers
   (:func:`chosen_items`), then the Gram matrix of those items; the noisy matrix is
   projected onto the positive semi-definite ones before it is solved (post-processing).

3. **Calibration and composition.** A Gaussian mechanism with L2 sensitivity ``Δ`` and noise
   ``σ`` is ``μ``-GDP with ``μ = Δ / σ`` (Dong, Roth & Su 2022), and ``μ``-GDP is
   (ε, δ)-DP exactly when ``δ >= Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2)``: the analytic Gaussian
   mechanism of Balle & Wang (2018) (:func:`gaussian_delta`, :func:`gaussian_mu`).
   Several Gaussian releases compose *exactly* to ``μ = sqrt(Σ μ_i^2)``: the budget ``μ``
   of (ε, δ) is split between releases by weight (:func:`plan`), and the final ε is read back
   from the composed ``μ`` (:func:`epsilon_of`). No RDP bound is involved: for Gaussian
   mechanisms without subsampling this accounting is tight.

The record (:func:`record`) goes to the model's ``fit_info["privacy"]`` (saved in its
manifest) and ``/v1/info``'s ``privacy``. :func:`membership_auc` is the audit: a
score-threshold membership-inference attack's AUC.

What is not covered (docs/privacy.md): the model folder's ``seen`` matrix and ``users.json``
(each trained user's own rows, kept so that the service can mask and score that user's
own history), and the evaluation metrics written beside the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, field_validator
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr

from kinrec.models.base import ModelConfig, Recommender

PUBLIC_INPUTS = ("item text", "knowledge graph")
"""Inputs that are public by assumption: no privacy budget is spent on them."""

NOT_COVERED = (
    "seen matrix and users.json: each trained user's own rows, kept to mask and score that "
    "user's own history (their own data, never shown to anyone else)",
    "evaluation metrics in fit_info (best_valid_ndcg@10, test_metrics): non-private "
    "aggregates of held-out rows",
)
"""Parts of a private model's folder outside the (ε, δ) guarantee."""

ACCOUNTANT = (
    "analytic Gaussian mechanism (Balle & Wang 2018): mu-GDP with mu = sensitivity / sigma, "
    "(epsilon, delta) from the exact Gaussian privacy profile"
)
COMPOSITION = (
    "Gaussian DP composition (Dong, Roth & Su 2022), exact for Gaussian mechanisms: "
    "mu = sqrt(sum of mu_i^2); the budget mu is split between releases by weight"
)


# --------------------------------------------------------------------------- configuration
class DPConfig(ModelConfig):
    """Settings of a model that can be trained with user-level differential privacy."""

    dp_epsilon: float | None = Field(
        None,
        gt=0.0,
        description="user-level differential privacy: the epsilon of the whole trained "
        "model (unset or inf: not private); hyper-parameters are then fixed in advance, "
        "none is chosen on validation (docs/privacy.md)",
    )
    dp_delta: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="the delta of the guarantee (unset: 1 / number of training users)",
    )
    dp_clip: int = Field(
        50,
        ge=1,
        description="with dp_epsilon: each user contributes at most this many training "
        "items, sampled without replacement with the seed",
    )

    @field_validator("dp_epsilon")
    @classmethod
    def _infinite_is_off(cls, value: float | None) -> float | None:
        return None if value is not None and math.isinf(value) else value


def supports_dp(model: type[Recommender] | Recommender) -> bool:
    """Whether a model (class or instance) can be trained with differential privacy."""
    cls = model if isinstance(model, type) else type(model)
    return issubclass(cls.Config, DPConfig)


def private_models() -> list[str]:
    """Registered model names that can be trained with differential privacy."""
    from kinrec.models.registry import available_models, get_model_class

    out = []
    for name in available_models():
        try:
            if supports_dp(get_model_class(name)):
                out.append(name)
        except ImportError:  # pragma: no cover - a registered model that cannot import
            continue
    return out


def is_private(model: Recommender) -> bool:
    """Whether ``model`` is configured to train with differential privacy."""
    return getattr(model.config, "dp_epsilon", None) is not None


def default_delta(n_users: int) -> float:
    """δ when none is given: ``1 / n_users`` (the number of training users)."""
    if n_users < 2:
        raise ValueError("differential privacy needs at least 2 training users")
    return 1.0 / n_users


# --------------------------------------------------------------------------- accounting
def gaussian_delta(mu: float, epsilon: float) -> float:
    """The smallest δ for which a ``mu``-GDP mechanism (a Gaussian mechanism with
    sensitivity / sigma = ``mu``) is (``epsilon``, δ)-DP:
    ``Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2)`` (computed in logs, stable for large ε)."""
    if mu <= 0:
        return 0.0
    if math.isinf(mu):
        return 1.0
    a = -epsilon / mu + mu / 2
    b = -epsilon / mu - mu / 2
    return float(max(0.0, ndtr(a) - math.exp(min(epsilon + float(log_ndtr(b)), 700.0))))


def gaussian_mu(epsilon: float, delta: float) -> float:
    """The largest ``mu`` such that a ``mu``-GDP mechanism is (``epsilon``, ``delta``)-DP
    (the analytic Gaussian mechanism; inf for ε = inf)."""
    if math.isinf(epsilon):
        return math.inf
    if not (epsilon > 0 and 0 < delta < 1):
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got ({epsilon}, {delta})")
    high = 1.0
    while gaussian_delta(high, epsilon) < delta:
        high *= 2.0
    return float(brentq(lambda m: gaussian_delta(m, epsilon) - delta, 1e-12, high, xtol=1e-14))


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """The noise standard deviation of one Gaussian release with L2 ``sensitivity`` that
    alone spends (``epsilon``, ``delta``)."""
    return sensitivity / gaussian_mu(epsilon, delta)


def epsilon_of(mu: float, delta: float) -> float:
    """The ε a ``mu``-GDP mechanism (all releases composed) reaches at ``delta``."""
    if math.isinf(mu):
        return math.inf
    if mu <= 0 or gaussian_delta(mu, 0.0) <= delta:
        return 0.0
    high = 1.0
    while gaussian_delta(mu, high) > delta:
        high *= 2.0
    return float(brentq(lambda e: gaussian_delta(mu, e) - delta, 0.0, high, xtol=1e-12))


@dataclass(frozen=True)
class Release:
    """One Gaussian release: a statistic, the L2 norm of one user's contribution to it
    (``sensitivity``) and the noise standard deviation added to each of its entries."""

    name: str
    sensitivity: float
    sigma: float
    norm: str

    @property
    def mu(self) -> float:
        return self.sensitivity / self.sigma


def plan(
    epsilon: float, delta: float, releases: Mapping[str, tuple[float, str, float]]
) -> list[Release]:
    """Split (ε, δ) between Gaussian releases: ``releases`` maps a name to ``(sensitivity,
    norm described, weight)``; release ``i`` gets ``μ_i = μ sqrt(w_i / Σ w)``, so that the
    composed ``sqrt(Σ μ_i^2)`` is the ``μ`` of (ε, δ) exactly."""
    mu = gaussian_mu(epsilon, delta)
    total = sum(w for _, _, w in releases.values())
    if total <= 0:
        raise ValueError("release weights must sum to a positive number")
    return [
        Release(name, s, s / (mu * math.sqrt(w / total)), norm)
        for name, (s, norm, w) in releases.items()
    ]


def composed_mu(releases: Sequence[Release]) -> float:
    """``sqrt(Σ μ_i^2)``: the GDP parameter of all ``releases`` together."""
    return math.sqrt(sum(r.mu**2 for r in releases))


def record(
    releases: Sequence[Release],
    epsilon: float,
    delta: float,
    clip: int,
    seed: int,
    hyperparameters: str = "fixed in advance",
    sgd: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """The accounting record a private model keeps (``fit_info["privacy"]``): mechanisms,
    composition, the target and the reached ε, δ, clipping, public inputs, how its
    hyper-parameters were chosen and what is not covered; ``sgd``: the DP-SGD steps
    (:class:`kinrec.privacy.dpsgd.SGDPlan`) composed with the releases by Opacus' PRV
    accountant; ``extra`` adds model-specific fields (e.g. the L2 the noise asked for)."""
    mu = composed_mu(releases) if releases else 0.0
    mechanisms = [{"mechanism": "gaussian", **asdict(r), "mu": r.mu} for r in releases]
    if sgd is None:
        spent, accountant = epsilon_of(mu, delta), ACCOUNTANT
        composition = COMPOSITION if len(releases) > 1 else "one release (no composition)"
    else:
        from kinrec.privacy import dpsgd

        spent, accountant = dpsgd.epsilon_spent(releases, sgd, delta), dpsgd.ACCOUNTANT
        composition = "PRV accountant over every release and DP-SGD step (see accountant)"
        mechanisms.append(sgd.describe())
    return {
        "unit": "user (add or remove all of one user's rows)",
        "epsilon": float(epsilon),
        "delta": float(delta),
        "epsilon_spent": round(spent, 6),
        "mu": mu,
        "sigma": releases[0].sigma if len(releases) == 1 else {r.name: r.sigma for r in releases},
        "mechanisms": mechanisms,
        "accountant": accountant,
        "composition": composition,
        "clip": {
            "items_per_user": int(clip),
            "how": f"each user keeps at most {clip} training items, sampled uniformly without "
            f"replacement (seed {seed}); rows stay binary, no weights rescaled",
        },
        "public_inputs": list(PUBLIC_INPUTS),
        "hyperparameters": hyperparameters,
        "not_covered": list(NOT_COVERED),
        **extra,
    }


# --------------------------------------------------------------------------- mechanisms
def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-spread uint64 keys from uint64 ``values``."""
    z = values.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def clip_rows(rows: sp.spmatrix, clip: int, seed: int) -> sp.csr_matrix:
    """``rows`` (one row per user; binary) with at most ``clip`` entries per row: a row with
    more keeps ``clip`` of them, chosen uniformly without replacement; every kept entry is 1.

    Each (user, item) pair gets a pseudo-random key from ``seed`` and the pair alone (a
    hash), and a row keeps its ``clip`` smallest keys: the same seed keeps the same items,
    and what one user keeps does not depend on anyone else's rows (a fit without a user,
    or with their row emptied, keeps the same items of everyone else)."""
    if clip < 1:
        raise ValueError(f"clip must be at least 1, got {clip}")
    x = sp.csr_matrix(rows, dtype=np.float32, copy=True)
    x.sum_duplicates()
    x.eliminate_zeros()
    lengths = np.diff(x.indptr)
    users = np.repeat(np.arange(x.shape[0], dtype=np.uint64), lengths)
    pair = users * np.uint64(x.shape[1]) + x.indices.astype(np.uint64)
    salt = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    keys = _mix(pair ^ salt)
    order = np.lexsort((keys, users))  # by user, then key
    rank = np.empty(x.nnz, dtype=np.int64)
    rank[order] = np.arange(x.nnz) - np.repeat(x.indptr[:-1], lengths)
    keep = rank < clip
    out = sp.csr_matrix(
        (
            np.ones(int(keep.sum()), dtype=np.float32),
            (users[keep].astype(np.int64), x.indices[keep]),
        ),
        shape=x.shape,
    )
    out.sort_indices()
    return out


def gram_sensitivity(clip: int) -> float:
    """L2 norm of the largest contribution of one user (a binary row of at most ``clip``
    items) to the Gram matrix's upper triangle with the diagonal: ``sqrt((clip^2 + clip) /
    2)`` (``clip`` diagonal ones and ``clip (clip - 1) / 2`` off-diagonal ones)."""
    return math.sqrt((clip * clip + clip) / 2.0)


def count_sensitivity(clip: int) -> float:
    """L2 norm of the largest contribution of one user (at most ``clip`` items, weight 1)
    to the item counts: ``sqrt(clip)``."""
    return math.sqrt(clip)


def add_symmetric_noise(
    gram: np.ndarray, sigma: float, rng: np.random.Generator, block: int = 1024
) -> np.ndarray:
    """Add symmetric Gaussian noise to the square array ``gram``, in place: one draw of
    ``N(0, sigma^2)`` per entry of the upper triangle with the diagonal, mirrored onto the
    lower one (blocks of ``block`` rows, never a second full matrix). Returns ``gram``."""
    n = gram.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        z = rng.standard_normal((stop - start, n - start)) * sigma
        square = np.triu(z[:, : stop - start])
        gram[start:stop, start:stop] += square + np.triu(square, 1).T
        gram[start:stop, stop:] += z[:, stop - start :]
        gram[stop:, start:stop] += z[:, stop - start :].T
    return gram


def noisy_gram(rows: sp.spmatrix, release: Release, rng: np.random.Generator) -> np.ndarray:
    """The Gram matrix of ``rows`` (already clipped) with ``release``'s symmetric noise, as a
    dense float64 array in Fortran order (what :func:`kinrec.models.ease.ease_weights`
    factorises in place)."""
    from kinrec.models.ease import dense_gram

    return add_symmetric_noise(dense_gram(rows), release.sigma, rng)


def noisy_counts(rows: sp.spmatrix, release: Release, rng: np.random.Generator) -> np.ndarray:
    """Item counts of ``rows`` (already clipped) plus ``N(0, sigma^2)`` per item (float64)."""
    counts = np.asarray(sp.csr_matrix(rows).sum(axis=0), dtype=np.float64).ravel()
    return counts + rng.standard_normal(len(counts)) * release.sigma


def noise_rng(seed: int) -> np.random.Generator:
    """The generator of a private model's noise: from the model's seed, apart from the
    clipping's (a known seed makes the noise reproducible; keep the seed secret, or leave it
    to the default, when the noise must not be recomputable)."""
    return np.random.default_rng([seed, 0x5EED_D9])


def target(config: DPConfig, n_users: int) -> tuple[float, float]:
    """(ε, δ) of a private config, δ defaulting to ``1 / n_users``."""
    if config.dp_epsilon is None:
        raise ValueError("the model is not configured for differential privacy")
    delta = config.dp_delta if config.dp_delta is not None else default_delta(n_users)
    return float(config.dp_epsilon), float(delta)


def positive_definite(matrix: np.ndarray, floor: float) -> tuple[np.ndarray, int]:
    """``matrix`` (symmetric) with every eigenvalue below ``floor`` raised to ``floor``, and
    how many were raised (post-processing: no privacy cost)."""
    values, vectors = np.linalg.eigh(matrix)
    low = int((values < floor).sum())
    if not low:
        return matrix, 0
    fixed = (vectors * np.maximum(values, floor)) @ vectors.T
    return np.asfortranarray((fixed + fixed.T) / 2), low


# --------------------------------------------------------------------------- audit
def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """The probability that a random ``positive`` score exceeds a random ``negative`` one
    (ties count half): the ROC AUC, by the rank-sum formula."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if not len(pos) or not len(neg):
        raise ValueError("the AUC needs at least one score of each kind")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def membership_scores(model: Recommender, rows: sp.spmatrix) -> np.ndarray:
    """The attack's statistic of each user (a row of item indices in the model's space):
    how well the model reconstructs their items from their history. Each user's history is
    folded in (:meth:`~kinrec.models.base.Recommender.score_history`) and the statistic is
    the mean, over their items, of the share of the catalogue the item outranks (ties half).
    A model that memorised its training users reconstructs their items better than anyone
    else's. Rows without items get NaN."""
    x = sp.csr_matrix(rows)
    out = np.full(x.shape[0], np.nan)
    for u in range(x.shape[0]):
        items = x.indices[x.indptr[u] : x.indptr[u + 1]]
        if not len(items):
            continue
        scores = np.asarray(model.score_history(items.astype(np.int64)), dtype=np.float64)
        ordered = np.sort(scores)
        below = np.searchsorted(ordered, scores[items], side="left")
        ties = np.searchsorted(ordered, scores[items], side="right") - below
        out[u] = float(np.mean((below + (ties - 1) / 2) / max(len(scores) - 1, 1)))
    return out


def membership_auc(model: Recommender, members: sp.spmatrix, non_members: sp.spmatrix) -> float:
    """AUC of the score-threshold membership-inference attack (:func:`membership_scores`)
    telling ``members`` (rows the model trained on) from ``non_members`` (rows of users it
    never saw, from the same population): 0.5 is a coin toss, 1 a perfect attack."""
    pos, neg = membership_scores(model, members), membership_scores(model, non_members)
    return auc(pos[np.isfinite(pos)], neg[np.isfinite(neg)])


# --------------------------------------------------------------------------- models
GRAM_NORM = "L2 norm of one user's x x^T, upper triangle with the diagonal"
COUNT_NORM = "L2 norm of one user's x (binary, at most clip items)"


def noise_l2(sigma: float, n_items: int, scale: float) -> float:
    """The L2 a noisy Gram matrix gets on top of the model's own: ``scale`` times
    ``2 sigma sqrt(n_items)``, the spectral norm of a symmetric ``n_items``-square matrix
    of ``N(0, sigma^2)`` entries (the edge of Wigner's semicircle). The noisy matrix is
    first projected onto the positive semi-definite ones (:func:`solve_private_gram`), so
    any ``scale`` solves; EASE's default 0.5 was measured on ml-100k at epsilon 1 and 8. It
    depends only on public quantities (sigma, the number of items solved), so it costs no
    privacy."""
    return scale * 2.0 * sigma * math.sqrt(n_items)


COUNT_SHARE = 0.1
"""With an item threshold: the share of a Gram model's budget (of ``mu^2``) spent on the item
counts that choose the items its Gram matrix covers (fixed in advance, not tuned)."""


def gram_releases(mu: float, clip: int, item_threshold: float) -> list[Release]:
    """The releases of a model solved from a noisy Gram matrix with the GDP budget ``mu``:
    with ``item_threshold`` > 0 the item counts (:data:`COUNT_SHARE` of ``mu^2``) and the
    Gram matrix of the items they choose (the rest); with 0 the Gram matrix of every item
    alone (its diagonal is the counts)."""
    gram = gram_sensitivity(clip)
    if item_threshold <= 0:
        return [Release("gram", gram, gram / mu, GRAM_NORM)]
    counts = count_sensitivity(clip)
    return [
        Release("counts", counts, counts / (mu * math.sqrt(COUNT_SHARE)), COUNT_NORM),
        Release("gram", gram, gram / (mu * math.sqrt(1.0 - COUNT_SHARE)), GRAM_NORM),
    ]


def gram_statistics(releases: Sequence[Release]) -> str:
    """What a model solved from :func:`gram_releases` released, for its privacy record."""
    if len(releases) > 1:
        return "item counts; Gram matrix of the clipped binary rows of the items they choose"
    return "Gram matrix of the clipped binary rows (its diagonal: the item counts)"


def chosen_items(counts: np.ndarray, sigma: float, threshold: float) -> np.ndarray:
    """The items a private Gram matrix covers (sorted indices): the ``m`` most counted, for
    the largest ``m`` whose ``m``-th noisy count is at least ``threshold * sigma * sqrt(m)``.

    ``sigma sqrt(m)`` is the norm of the noise on one item's column of an ``m``-item Gram
    matrix: an item counted far less than that is mostly noise to every regression it
    enters, and each item more adds noise to all of them. Post-processing of the released
    counts (no privacy cost). ``threshold`` 0: every item."""
    n = len(counts)
    if threshold <= 0:
        return np.arange(n)
    order = np.argsort(-counts, kind="stable")
    ok = counts[order] >= threshold * sigma * np.sqrt(np.arange(1, n + 1))
    m = int(np.flatnonzero(ok)[-1]) + 1 if ok.any() else 0
    return np.sort(order[:m])


@dataclass(frozen=True)
class PrivateGram:
    """What :func:`solve_private_gram` returns: EASE weights over the whole catalogue (float32;
    zero outside ``items``), the noisy item counts of every item (float64, never below 0),
    the items the Gram matrix covered, its L2 and how many eigenvalues were raised to 0."""

    weights: np.ndarray
    counts: np.ndarray
    items: np.ndarray
    l2: float
    raised: int

    def describe(self, threshold: float) -> dict[str, Any]:
        """The fields a privacy record adds for the Gram matrix."""
        return {
            "items_solved": len(self.items),
            "item_threshold": float(threshold),
            "eigenvalues_raised": int(self.raised),
        }


def solve_private_gram(
    rows: sp.spmatrix,
    releases: Sequence[Release],
    clip: int,
    seed: int,
    base_l2: float,
    noise_scale: float,
    item_threshold: float,
    what: str,
) -> PrivateGram:
    """EASE weights from a noisy Gram matrix of the users' binary ``rows`` (one definition,
    for EASE and kinformer's head), with ``releases`` from :func:`gram_releases`:

    1. with a ``counts`` release: every user keeps at most ``clip`` items, their counts get
       noise, and :func:`chosen_items` picks the items the Gram matrix covers; the counts
       are what the model releases as its popularity;
    2. every user keeps at most ``clip`` of the chosen items (all of them: every item), and
       the Gram matrix of those rows gets symmetric noise (:func:`noisy_gram`); without a
       ``counts`` release its diagonal is the counts;
    3. post-processing, no privacy cost: the noisy matrix is projected onto the positive
       semi-definite ones (its negative eigenvalues set to 0, as the true Gram matrix has
       none) and solved with ``base_l2`` plus :func:`noise_l2` of its size. Always
       projecting matters: a noisy matrix plus the L2 that is positive definite by a hair
       gives weights that blow up along its smallest directions.

    The same ``seed`` keeps the same items and draws the same noise, so a fit on rows with
    some users emptied equals the fit without them (erasure)."""
    from kinrec.models import memory
    from kinrec.models.ease import ease_weights

    x = sp.csr_matrix(rows)
    n = x.shape[1]
    by_name = {r.name: r for r in releases}
    rng = noise_rng(seed)
    if "counts" in by_name:
        counts = noisy_counts(clip_rows(x, clip, seed), by_name["counts"], rng)
        items = chosen_items(counts, by_name["gram"].sigma, item_threshold)
    else:
        counts, items = None, np.arange(n)
    m = len(items)
    memory.require(
        f"{what} with differential privacy (fit on {m:,} of {n:,} items)",
        memory.Dense(
            "the noisy Gram matrix and its projection (eigenvectors, product, mirror)",
            (m, m),
            np.float64,
            4,
        ),
        memory.Dense("the weights kept", (n, n), np.float32),
    )
    release = by_name["gram"]
    l2 = base_l2 + noise_l2(release.sigma, max(m, 1), noise_scale)
    weights = np.zeros((n, n), dtype=np.float32)
    raised = 0
    if m:
        chosen = x[:, items] if m < n else x
        gram = noisy_gram(clip_rows(chosen, clip, seed), release, rng)
        if counts is None:
            counts = np.diag(gram).copy()  # the released diagonal: the noisy item counts
        gram, raised = positive_definite(gram, 0.0)
        solved = ease_weights(np.asfortranarray(gram), l2, overwrite=True)
        del gram
        if m < n:
            weights[np.ix_(items, items)] = solved
        else:
            weights[:] = solved
    if counts is None:  # no item at all (an empty catalogue)
        counts = np.zeros(n)
    return PrivateGram(weights, np.maximum(counts, 0.0), items, l2, raised)


def private_ease_weights(
    seen: sp.spmatrix, config: Any, solver: str
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """EASE weights (float32) from the noisy Gram matrix of the clipped rows of ``seen``
    (:func:`solve_private_gram`), the noisy item counts and the privacy record. ``config``
    is an EASE config with the DP fields (:class:`DPConfig`), ``dp_noise_l2`` and
    ``dp_item_threshold``. The L2 is ``reg_weight`` plus :func:`noise_l2`. Only the dense
    solver: the sparse one picks neighbours from exact co-occurrences."""
    if solver != "dense":
        raise ValueError(
            "ease with dp_epsilon needs the dense solver (the sparse one chooses each item's "
            f"neighbours from exact co-occurrences); this catalogue of {seen.shape[1]:,} "
            "items is solved sparsely: raise max_dense_items if it fits in memory"
        )
    n_users = seen.shape[0]
    epsilon, delta = target(config, n_users)
    clip, threshold = config.dp_clip, config.dp_item_threshold
    releases = gram_releases(gaussian_mu(epsilon, delta), clip, threshold)
    solved = solve_private_gram(
        seen, releases, clip, config.seed, config.reg_weight, config.dp_noise_l2, threshold,
        "ease",
    )  # fmt: skip
    info = record(
        releases,
        epsilon,
        delta,
        clip,
        config.seed,
        statistics=gram_statistics(releases),
        l2={
            "reg_weight": config.reg_weight,
            "for_noise": solved.l2 - config.reg_weight,
            "total": solved.l2,
        },
        **solved.describe(threshold),
    )
    return solved.weights, solved.counts, info


def private_counts(seen: sp.spmatrix, config: DPConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Noisy item counts (float64) of the clipped rows of ``seen``, and the privacy record."""
    epsilon, delta = target(config, seen.shape[0])
    clip = config.dp_clip
    (release,) = plan(epsilon, delta, {"counts": (count_sensitivity(clip), COUNT_NORM, 1.0)})
    counts = noisy_counts(clip_rows(seen, clip, config.seed), release, noise_rng(config.seed))
    info = record([release], epsilon, delta, clip, config.seed, statistics="item counts")
    return counts, info
