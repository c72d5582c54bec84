"""docs/python.md, run as written: its ```python blocks, in page order, in one namespace.

The page loads ``"ml-100k"`` by its registered name. Here that name finds a small stand-in
(MovieLens-like RecBole atomic files written by the test) through the registry's documented
local source, ``$KINREC_DATA_DIR/ml-100k``: no network, no shared datasets. The test then
checks what the page says its variables hold."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import kinrec
from kinrec.models import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
GENRES = ("Action", "Comedy", "Drama", "Sci-Fi", "Romance")
STAR_WARS = {"50", "172", "181"}  # the page's items: Sci-Fi here, as in MovieLens


def python_blocks() -> list[str]:
    blocks = FENCE.findall(DOC.read_text(encoding="utf-8"))
    assert blocks, f"{DOC} has no python example"
    return blocks


def write_small_ml100k(folder: Path, users: int = 80, items: int = 200) -> dict[str, str]:
    """A MovieLens-100K look-alike in RecBole's atomic layout (``ml-100k.inter``,
    ``ml-100k.item`` with ``class`` genres): users keep mostly to one genre. Returns each
    item's genre."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    ids = [str(i) for i in range(1, items + 1)]
    genre = {i: GENRES[int(i) % len(GENRES)] for i in ids}
    genre.update(dict.fromkeys(STAR_WARS, "Sci-Fi"))
    by_genre = {g: [i for i in ids if genre[i] == g] for g in GENRES}
    popularity = {i: 1.0 / (1 + n) ** 0.7 for n, i in enumerate(rng.permutation(ids))}
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, users + 1):
        liked = by_genre[GENRES[u % len(GENRES)]]
        p = np.array([popularity[i] for i in liked])
        picks = set(rng.choice(liked, size=18, replace=False, p=p / p.sum()))
        picks |= set(rng.choice(ids, size=4, replace=False))
        for t, item in enumerate(sorted(picks)):
            rows.append(f"{u}\t{item}\t{rng.integers(1, 6)}\t{880000000 + 1000 * u + t}")
    (folder / "ml-100k.inter").write_text("\n".join(rows) + "\n", encoding="utf-8")
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for i in ids:
        lines.append(f"{i}\tMovie {i}\t{1950 + int(i) % 48}\t{genre[i]}")
    (folder / "ml-100k.item").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return genre


def test_the_python_page_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    genre = write_small_ml100k(tmp_path / "datasets" / "ml-100k")
    monkeypatch.setenv("KINREC_DATA_DIR", str(tmp_path / "datasets"))
    monkeypatch.setenv("KINREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))  # the page registers one
    monkeypatch.chdir(tmp_path)
    page: dict[str, object] = {"__name__": "docs_python"}
    for block in python_blocks():
        exec(compile(block, str(DOC), "exec"), page)

    data, split, model = page["data"], page["split"], page["model"]
    assert data.name == "ml-100k" and len(data.interactions) == len(split.train) + len(
        split.valid
    ) + len(split.test)
    assert 0 < page["result"].metrics["ndcg@10"] <= 1
    assert model.fit_info["history_prior"]["search"]  # the prior was chosen on validation
    trained = set(split.train.item_map.ids(split.train.items[split.train.users == 0]))
    assert split.train.user_map.ids([0]) == ["1"]
    for name in ("for_user", "for_history", "sci_fi", "like_star_wars"):
        recs = page[name]
        assert len(recs) == 5 and len({s.item_id for s in recs}) == 5, name
        assert [s.score for s in recs] == sorted((s.score for s in recs), reverse=True), name
    assert not {s.item_id for s in page["for_user"]} & trained  # training items left out
    assert not {s.item_id for s in page["for_history"]} & {"50", "172"}
    assert {genre[s.item_id] for s in page["sci_fi"]} == {"Sci-Fi"}
    assert not {s.item_id for s in page["sci_fi"]} & {"50", "181"}
    assert "50" not in {s.item_id for s in page["like_star_wars"]}
    assert (tmp_path / "runs" / "ease-ml-100k" / "manifest.json").exists()
    # the model of one's own: registered by name, and it ranks by training counts
    baseline = page["baseline"]
    assert registry.get_model_class("most-rated") is page["MostRated"]
    counts = np.bincount(split.train.items, minlength=split.n_items)
    top = kinrec.recommend(baseline, user="1", k=3, exclude_seen=False)
    assert [s.score for s in top] == sorted(counts, reverse=True)[:3]


def test_the_page_documents_every_public_function() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in kinrec.__all__:
        if name != "__version__":
            assert f"`{name}(" in text, f"docs/python.md does not document kinrec.{name}"
