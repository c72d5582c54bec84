"""Domain adaptation of the text encoder: LoRA adapters or full fine-tuning.

:func:`adapt` trains the transformer inside a sentence-transformers model on

* SimCSE (self-supervised): each catalogue text is encoded twice with dropout on; the two views
  of a text are a positive pair and the other texts of the batch are negatives (InfoNCE,
  temperature 0.05, averaged over both directions), weighted by ``simcse_weight``;
* optional caller pairs ``(i, j)`` of text indices known to be related, the same in-batch loss
  over pair batches, weighted by ``pair_weight``. :func:`interaction_pairs` gives two-tower pairs
  from training interactions (two items of one user: query tower and candidate tower share the
  encoder); ``kinrec.cli.knowledge.kg_positive_pairs`` items sharing a knowledge-graph
  neighbour. Candidates equal to the positive or to the query are masked out of the in-batch
  negatives (a batch of pairs often repeats popular items).

``method="lora"`` (default) trains low-rank adapters (peft LoRA) on the attention query/value
projections (optionally also the dense layers) with the base weights frozen (checked: every
trainable parameter is a LoRA matrix). The adapter is written atomically as a folder: peft's
``adapter_config.json`` + ``adapter_model.safetensors`` and ``kinrec_adapter.json`` (training
config, base model id, counts, losses). Load it with ``EncoderConfig(adapter_path=...)``;
``encoder.adapter_enabled`` switches it off and on.

``method="full"`` trains every weight that shapes the sentence embedding (all but BERT's unused
pooler) and writes, atomically, a complete sentence-transformers folder plus
``kinrec_finetune.json``; load it as a model: ``EncoderConfig(model_path=...)`` (``encoder_path``
of the content and transfer models).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kinrec.data.dataset import Interactions
from kinrec.data.errors import DataError
from kinrec.knowledge.encoder import (
    ADAPTER_META,
    load_sentence_transformer,
    model_id_for,
    progress_bar,
    resolve_threads,
    torch_threads,
)

ADAPTER_FORMAT = 1
FINETUNE_META = "kinrec_finetune.json"
"""The file, inside a fully fine-tuned model folder, with the :class:`AdapterInfo`."""
FULL_LEARNING_RATE = 2e-5
"""Default learning rate of ``method="full"`` (LoRA's 5e-4 would wreck the base weights)."""


class AdaptConfig(BaseModel):
    """Method, LoRA shape, objective and training budget. The defaults suit a CPU: one epoch
    over a few thousand short texts (64 tokens) takes a few minutes on 2 cores."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = "lora"
    """``lora``: train adapters, base frozen; ``full``: train all encoder weights (the LoRA
    fields below are then unused, and ``learning_rate`` defaults to 2e-5)."""
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[Literal["query", "key", "value", "dense"]] = ["query", "value"]
    """Projections of each encoder layer that get adapters (``dense``: attention output and
    feed-forward layers)."""
    temperature: float = Field(0.05, gt=0)
    simcse_weight: float = Field(1.0, ge=0)
    """Weight of the SimCSE loss; 0: a pure pair (two-tower) objective, one epoch being then a
    pass over the pairs instead of the texts."""
    pair_weight: float = Field(1.0, ge=0)
    """Weight of the caller-pair loss next to the SimCSE loss."""
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    """Stop after the step that crosses this many seconds of training."""
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_seq_length: int = Field(64, ge=8)
    eval_texts: int = Field(256, ge=0)
    """Texts (and as many caller pairs) on which the objective is measured before and after
    training (0: skip)."""
    seed: int = 0
    num_threads: int | Literal["auto"] | None = "auto"
    """torch threads while training (as :attr:`EncoderConfig.num_threads`)."""
    progress: bool = False

    @model_validator(mode="before")
    @classmethod
    def _full_learning_rate(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("method") == "full":
            data = {"learning_rate": FULL_LEARNING_RATE, **data}
        return data


class AdapterInfo(BaseModel):
    """What :func:`adapt` wrote and measured."""

    model_config = ConfigDict(extra="forbid")

    path: str
    adapter_id: str
    """``lora@<digest>`` of the adapter weights, or ``full@<digest>`` of the model weights."""
    method: Literal["lora", "full"] = "lora"
    base_model_id: str
    base_model_path: str
    config: AdaptConfig
    n_texts: int
    n_pairs: int
    steps: int
    epochs_run: float
    stopped_by: Literal["epochs", "max_steps", "time_budget"]
    trainable_params: int
    """Parameters updated by training (LoRA matrices, or the encoder's own weights)."""
    frozen_params: int
    """Parameters left as they were (the whole base for LoRA, the unused pooler for full)."""
    base_params: int
    """Parameters of the base transformer."""
    initial_loss: float | None
    """The training objective (simcse_weight x SimCSE + pair_weight x pair loss) on fixed eval
    texts and pairs, with fixed batches and dropout seed, before training; ``None`` when
    ``eval_texts=0``."""
    final_loss: float | None
    eval_losses: dict[str, dict[str, float]]
    """``{"before"|"after": {"simcse": ..., "pairs": ..., "total": ...}}``."""
    train_loss_first: float
    train_loss_last: float
    seconds: float
    versions: dict[str, str]

    @model_validator(mode="before")
    @classmethod
    def _older_meta(cls, data: Any) -> Any:
        """Adapters written before ``frozen_params`` existed froze the whole base."""
        if isinstance(data, dict) and "frozen_params" not in data and "base_params" in data:
            data = {**data, "frozen_params": data["base_params"]}
        return data


def _target_regex(names: Sequence[str]) -> str:
    """Module names inside the encoder layers only (never the unused pooler)."""
    alternatives = [
        r"attention\.output\.dense|intermediate\.dense|output\.dense"
        if name == "dense"
        else rf"attention\.self\.{name}"
        for name in dict.fromkeys(names)
    ]
    return rf".*encoder\.layer\.\d+\.(?:{'|'.join(alternatives)})"


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "transformers", "sentence-transformers", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies here
            out[pkg] = "unknown"
    return out


def _info_nce(a: Any, b: Any, temperature: float, ids: tuple[Any, Any] | None = None) -> Any:
    """Symmetric in-batch InfoNCE between row-aligned views ``a`` and ``b``.

    ``ids``: an identity (int array) per row of ``a`` and of ``b``; a candidate equal to the
    row's positive or to the row's query is no negative and is masked out of that row.
    """
    import torch
    import torch.nn.functional as F

    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    logits = a @ b.T / temperature
    labels = torch.arange(len(a))
    logits_t = logits.T
    if ids is not None:
        id_a, id_b = (torch.as_tensor(np.asarray(x)) for x in ids)
        eye = torch.eye(len(a), dtype=torch.bool)
        # row k (query a_k, positive b_k) over candidates b_l
        same_ab = (id_b[None, :] == id_b[:, None]) | (id_b[None, :] == id_a[:, None])
        # row l (query b_l, positive a_l) over candidates a_k
        same_ba = (id_a[None, :] == id_a[:, None]) | (id_a[None, :] == id_b[:, None])
        logits = logits.masked_fill(same_ab & ~eye, float("-inf"))
        logits_t = logits_t.masked_fill(same_ba & ~eye, float("-inf"))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits_t, labels))


def _embed(model: Any, texts: Sequence[str]) -> Any:
    features = model.preprocess(list(texts))
    return model(features)["sentence_embedding"]


def simcse_loss(model: Any, texts: Sequence[str], temperature: float) -> Any:
    """SimCSE loss of one batch: both dropout views in one forward pass (model in train mode)."""
    z = _embed(model, [*texts, *texts])
    return _info_nce(z[: len(texts)], z[len(texts) :], temperature)


def _fixed_eval(model: Any, batches: Sequence[Any], loss: Any, seed: int) -> float:
    """Mean of ``loss(batch)`` over batches (weighted by size) with dropout on, no gradients
    and a fixed dropout seed: comparable before and after training."""
    import torch

    was_training = model.training
    model.train()
    losses, weights = [], []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for batch in batches:
            if len(batch) >= 2:
                losses.append(float(loss(batch)))
                weights.append(len(batch))
    model.train(was_training)
    return float(np.average(losses, weights=weights)) if losses else float("nan")


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def pair_batch_loss(model: Any, pairs: Sequence[tuple[str, str]], temperature: float) -> Any:
    """In-batch InfoNCE of one batch of related text pairs (the other pairs are negatives).

    Each distinct text of the batch is encoded once; a candidate with the same text as the
    positive or as the query is masked (no false negatives when items repeat).
    """
    distinct = list(dict.fromkeys(t for pair in pairs for t in pair))
    position = {t: k for k, t in enumerate(distinct)}
    id_a = np.array([position[a] for a, _ in pairs])
    id_b = np.array([position[b] for _, b in pairs])
    z = _embed(model, distinct)
    return _info_nce(z[id_a], z[id_b], temperature, ids=(id_a, id_b))


def contrastive_loss(
    model: Any, texts: Sequence[str], batch_size: int, temperature: float, seed: int = 0
) -> float:
    """Mean SimCSE loss over ``texts`` in fixed batches with a fixed dropout seed (no update)."""
    return _fixed_eval(
        model,
        _chunks(texts, batch_size),
        lambda batch: simcse_loss(model, batch, temperature),
        seed,
    )


def pair_loss(
    model: Any,
    pairs: Sequence[tuple[str, str]],
    batch_size: int,
    temperature: float,
    seed: int = 0,
) -> float:
    """Mean in-batch InfoNCE over text pairs in fixed batches with a fixed dropout seed."""
    return _fixed_eval(
        model,
        _chunks(pairs, batch_size),
        lambda batch: pair_batch_loss(model, batch, temperature),
        seed,
    )


def _check_pairs(pairs: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    out = []
    for k, pair in enumerate(pairs):
        try:
            i, j = (int(pair[0]), int(pair[1]))
        except (TypeError, ValueError, IndexError):
            raise DataError(
                f"expected a pair of text indices, got {pair!r}", file="<pairs>", line=k + 1
            ) from None
        if not (0 <= i < n and 0 <= j < n):
            raise DataError(
                f"text index out of range 0..{n - 1}: {pair!r}", file="<pairs>", line=k + 1
            )
        out.append((i, j))
    return out


def interaction_pairs(
    train: Interactions,
    max_pairs: int = 20000,
    seed: int = 0,
    popularity_power: float = 0.5,
) -> list[tuple[int, int]]:
    """Two-tower training pairs ``(query item, candidate item)``: two items one user had.

    Items are indices of ``train.item_map`` (texts: ``features.item_texts(dataset,
    train.item_map.ids())``); only the rows of ``train`` are read, so pass the train part of a
    split, never valid or test. Each unordered pair occurs once; order is random.

    When the users' item pairs number at most ``max_pairs`` in all, every distinct pair is
    returned. Otherwise pairs are sampled so that popular items do not dominate: in rounds,
    every item that shares a user with another item is a query once (seeded shuffle); its user
    is drawn uniformly among the item's users, and the candidate among that user's other items
    with probability proportional to ``popularity ** -popularity_power`` (0: uniform over the
    user's items, which favours popular items; 1: close to uniform over items). Sampling stops
    at ``max_pairs`` pairs or after a round that found no new pair. Deterministic given ``seed``.
    """
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    rng = np.random.default_rng(seed)
    matrix = train.matrix()  # binary users x items, duplicates once
    sizes = np.diff(matrix.indptr)
    matrix = matrix[sizes >= 2]
    if matrix.shape[0] == 0:
        return []
    sizes = np.diff(matrix.indptr)
    if int((sizes * (sizes - 1) // 2).sum()) <= max_pairs:  # few: all of them
        found: set[tuple[int, int]] = set()
        for u in range(matrix.shape[0]):
            items = matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]
            for x in range(len(items)):
                for y in range(x + 1, len(items)):
                    found.add((int(items[x]), int(items[y])))
        ordered = sorted(found)
        return [ordered[k] for k in rng.permutation(len(ordered))]

    by_item = matrix.tocsc()
    popularity = np.diff(by_item.indptr).astype(np.float64)
    weight = np.where(popularity > 0, np.maximum(popularity, 1.0) ** -popularity_power, 0.0)
    queries = np.flatnonzero(popularity > 0)
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(pairs) < max_pairs:
        added = 0
        for q in rng.permutation(queries):
            users = by_item.indices[by_item.indptr[q] : by_item.indptr[q + 1]]
            u = users[rng.integers(len(users))]
            items = matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]
            cumulative = np.cumsum(np.where(items == q, 0.0, weight[items]))
            j = int(items[np.searchsorted(cumulative, rng.random() * cumulative[-1], "right")])
            key = (min(int(q), j), max(int(q), j))
            if key in seen:
                continue
            seen.add(key)
            pairs.append((int(q), j))
            added += 1
            if len(pairs) >= max_pairs:
                break
        if added == 0:
            break
    return pairs


def _write_atomic(out_dir: Path, write: Any) -> None:
    """Build the folder beside ``out_dir`` with ``write(tmp)``, then swap it into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write(tmp)
        for f in tmp.iterdir():
            if f.is_file():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _lora_model(transformer: Any, config: AdaptConfig) -> tuple[Any, dict[str, Any]]:
    """Inject LoRA layers into ``transformer`` (in place); the trainable parameters by name."""
    from peft import LoraConfig, get_peft_model

    for p in transformer.parameters():
        p.requires_grad_(False)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.lora_dropout,
        target_modules=_target_regex(config.target_modules),
        bias="none",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        peft_model = get_peft_model(transformer, lora)
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    lora_names = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
    if not trainable or set(trainable) != lora_names:
        raise RuntimeError(
            "LoRA set-up left non-adapter weights trainable: "
            f"{sorted(set(trainable) ^ lora_names)[:5]}"
        )
    return peft_model, trainable


def _full_model(transformer: Any) -> dict[str, Any]:
    """Every weight trainable except the pooler (not part of a mean-pooled sentence embedding,
    so it would get no gradient)."""
    trainable = {}
    for name, p in transformer.named_parameters():
        train = not name.startswith("pooler.")
        p.requires_grad_(train)
        if train:
            trainable[name] = p
    return trainable


def adapt(
    encoder_path: Path | str,
    texts: Sequence[str],
    config: AdaptConfig | None = None,
    out_dir: Path | str = "adapter",
    pairs: Sequence[tuple[int, int]] | None = None,
) -> AdapterInfo:
    """Adapt the model in ``encoder_path`` on ``texts`` (and ``pairs``); save it in ``out_dir``.

    ``pairs`` are optional positive pairs of indices into ``texts`` (for example
    :func:`interaction_pairs` with texts in the train item order). With ``config.method ==
    "lora"`` ``out_dir`` becomes an adapter folder, with ``"full"`` a sentence-transformers
    model folder. Returns the :class:`AdapterInfo` that is also written there
    (``kinrec_adapter.json`` or ``kinrec_finetune.json``).
    """
    import torch

    config = config or AdaptConfig()
    out_dir = Path(out_dir).expanduser().resolve()
    encoder_path = Path(encoder_path).expanduser()
    texts = [t if isinstance(t, str) else ("" if t is None else str(t)) for t in texts]
    checked_pairs = _check_pairs(pairs or [], len(texts))
    # Duplicate texts would be false negatives of each other: train on distinct texts.
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    if len(unique) < 2:
        raise ValueError(f"need at least 2 distinct non-empty texts, got {len(unique)}")
    position = {t: k for k, t in enumerate(unique)}
    pair_index = [
        (position[texts[i]], position[texts[j]])
        for i, j in checked_pairs
        if texts[i] in position and texts[j] in position and texts[i] != texts[j]
    ]
    use_simcse = config.simcse_weight > 0
    use_pairs = len(pair_index) >= 2 and config.pair_weight > 0
    if not use_simcse and not use_pairs:
        raise ValueError(
            "nothing to train: simcse_weight is 0 and there are fewer than 2 usable pairs "
            f"({len(pair_index)}) or pair_weight is 0"
        )
    base_model_id = model_id_for(encoder_path)

    start = time.perf_counter()
    with torch_threads(resolve_threads(config.num_threads)), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model = load_sentence_transformer(encoder_path)
        saved_max_length = model.max_seq_length  # what a saved full model keeps
        model.max_seq_length = config.max_seq_length
        transformer = model[0].auto_model
        base_params = sum(p.numel() for p in transformer.parameters())
        peft_model = None
        if config.method == "lora":
            peft_model, trainable = _lora_model(transformer, config)  # injected in place
        else:
            trainable = _full_model(transformer)
        n_trainable = sum(p.numel() for p in trainable.values())
        n_frozen = base_params if config.method == "lora" else base_params - n_trainable

        eval_set = unique[: config.eval_texts]
        eval_batch = min(config.batch_size, max(2, len(eval_set)))
        eval_rng = np.random.default_rng(config.seed + 2)
        eval_pairs = [
            (unique[pair_index[k][0]], unique[pair_index[k][1]])
            for k in eval_rng.permutation(len(pair_index))[: config.eval_texts]
        ]

        def objective() -> dict[str, float]:
            """The training objective on fixed eval texts and pairs (empty: no eval set)."""
            if not eval_set:
                return {}
            out = {
                "simcse": contrastive_loss(
                    model, eval_set, eval_batch, config.temperature, config.seed + 1
                )
            }
            total = config.simcse_weight * out["simcse"]
            if len(eval_pairs) >= 2 and config.pair_weight > 0:
                out["pairs"] = pair_loss(
                    model, eval_pairs, eval_batch, config.temperature, config.seed + 3
                )
                total += config.pair_weight * out["pairs"]
            out["total"] = total
            return out

        before = objective()

        optimizer = torch.optim.AdamW(
            list(trainable.values()), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        # One epoch: a pass over the texts, or over the pairs for a pure pair objective.
        n_driver = len(unique) if use_simcse else len(pair_index)
        batch = min(config.batch_size, n_driver)
        steps_per_epoch = math.ceil(n_driver / batch)
        total = steps_per_epoch * config.epochs
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        pair_order = rng.permutation(len(pair_index)) if pair_index else np.array([], np.int64)
        pair_cursor = 0
        losses: list[float] = []
        stopped_by: Literal["epochs", "max_steps", "time_budget"] = "epochs"
        steps = 0
        model.train()
        bar = progress_bar(config.progress, total, "adapting", loss="-")
        with bar or contextlib.nullcontext():
            for _epoch in range(config.epochs):
                order = rng.permutation(n_driver)
                for s in range(steps_per_epoch):
                    idx = order[s * batch : (s + 1) * batch]
                    if len(idx) < 2:
                        continue
                    loss: Any = 0.0
                    if use_simcse:
                        texts_batch = [unique[i] for i in idx]
                        loss = config.simcse_weight * simcse_loss(
                            model, texts_batch, config.temperature
                        )
                        chosen: list[tuple[int, int]] = []
                        if use_pairs:
                            if pair_cursor + batch > len(pair_order):
                                pair_order, pair_cursor = rng.permutation(len(pair_index)), 0
                            window = pair_order[pair_cursor : pair_cursor + batch]
                            chosen = [pair_index[k] for k in window]
                            pair_cursor += batch
                    else:
                        chosen = [pair_index[k] for k in idx]
                    if len(chosen) >= 2:
                        texts_ab = [(unique[i], unique[j]) for i, j in chosen]
                        loss = loss + config.pair_weight * pair_batch_loss(
                            model, texts_ab, config.temperature
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    steps += 1
                    losses.append(loss.detach().item())
                    if bar is not None:
                        bar.update(bar.task_ids[0], advance=1, loss=f"{losses[-1]:.4f}")
                    if config.max_steps is not None and steps >= config.max_steps:
                        stopped_by = "max_steps"
                        break
                    elapsed = time.perf_counter() - start
                    if config.time_budget_s is not None and elapsed >= config.time_budget_s:
                        stopped_by = "time_budget"
                        break
                if stopped_by != "epochs":
                    break
        model.eval()
        after = objective()
    seconds = time.perf_counter() - start

    info_fields: dict[str, Any] = {
        "path": str(out_dir),
        "method": config.method,
        "base_model_id": base_model_id,
        "base_model_path": str(Path(encoder_path).resolve()),
        "config": config,
        "n_texts": len(unique),
        "n_pairs": len(pair_index),
        "steps": steps,
        "epochs_run": steps / steps_per_epoch,
        "stopped_by": stopped_by,
        "trainable_params": n_trainable,
        "frozen_params": n_frozen,
        "base_params": base_params,
        "initial_loss": before.get("total"),
        "final_loss": after.get("total"),
        "eval_losses": {"before": before, "after": after},
        "train_loss_first": losses[0] if losses else float("nan"),
        "train_loss_last": float(np.mean(losses[-10:])) if losses else float("nan"),
        "seconds": seconds,
        "versions": _versions(),
    }
    result: dict[str, AdapterInfo] = {}

    def finish(tmp: Path, weights: Path, prefix: str, meta_name: str) -> None:
        readme = tmp / "README.md"
        if readme.exists():  # hub model card; not needed offline
            readme.unlink()
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        info = AdapterInfo(adapter_id=f"{prefix}@{digest}", **info_fields)
        meta = {"format": ADAPTER_FORMAT, **info.model_dump(mode="json")}
        (tmp / meta_name).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        result["info"] = info

    def write_adapter(tmp: Path) -> None:
        peft_model.save_pretrained(str(tmp))
        finish(tmp, tmp / "adapter_model.safetensors", "lora", ADAPTER_META)

    def write_model(tmp: Path) -> None:
        model.max_seq_length = saved_max_length
        model.save(str(tmp), create_model_card=False)
        finish(tmp, tmp / "model.safetensors", "full", FINETUNE_META)

    _write_atomic(out_dir, write_adapter if config.method == "lora" else write_model)
    return result["info"]


def load_adapter_info(path: Path | str) -> AdapterInfo:
    """The :class:`AdapterInfo` saved in an adapter folder or a fully fine-tuned model folder."""
    from kinrec.knowledge.encoder import read_adapter_meta

    path = Path(path).expanduser()
    if (path / FINETUNE_META).is_file():
        meta = json.loads((path / FINETUNE_META).read_text(encoding="utf-8"))
    else:
        meta = read_adapter_meta(path)
    meta.pop("format", None)
    return AdapterInfo.model_validate(meta)
