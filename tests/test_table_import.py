"""Your own data from the CLI: five tables (interactions, items, users, triples, links) named by
one TOML mapping, from CSV, TSV or Parquet; bad rows name file, line and field and store
nothing; the store keeps every table, the catalogue and the text template; training reads it."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from kinrec.cli import app
from kinrec.config import DataConfig, PipelineConfig, StoreConfig
from kinrec.data.errors import DataError
from kinrec.data.loaders import ColumnMapping, TableMapping, load_table, load_tables
from kinrec.knowledge.text import render_item_texts
from kinrec.store import Store
from kinrec.store import schema as s

runner = CliRunner()

# Each table as rows of text cells; the header is the first row.
INTERACTIONS = [
    ["who", "what", "stars", "when"],
    *[
        [f"u{u}", f"i{i}", str(1 + (u + i) % 5), f"2024-01-{1 + u + i:02d}"]
        for u in range(1, 7)
        for i in ((1, 2, 3, 4) if u % 2 else (3, 4, 5, 6))
    ],
]
ITEMS = [
    ["sku", "title", "description", "category", "kg"],
    ["i1", "Blue mug", "A stoneware mug", "kitchen|cups", "E1"],
    ["i2", "Red kettle", "A steel kettle", "kitchen", ""],
    ["i3", "Green tea", "Sencha from Shizuoka", "tea|green", "E3"],
    ["i4", "Black tea", "", "tea", ""],
    ["i5", "Teapot", "Cast iron", "kitchen", ""],
    ["i6", "Oolong", "Roasted oolong", "tea", ""],
    ["i7", "Matcha", "Stone-ground", "tea|green", ""],  # no interactions yet
]
USERS = [["user", "country"], *[[f"u{u}", "FR" if u % 2 else "JP"] for u in range(1, 7)]]
TRIPLES = [
    ["h", "r", "t"],
    ["E3", "grown_in", "Japan"],
    ["E8", "grown_in", "Japan"],
    ["E1", "made_by", "Acme"],
    ["E2", "made_by", "Acme"],
]
# i8 is in no other table: a link makes it a catalogue item (ranked through its graph)
LINKS = [["item", "entity"], ["i2", "E2"], ["i8", "E8"]]

TEXT_LIST = 'text = ["title", "description"]'
MAPPING = """
name = "shop"

[interactions]
path = "interactions.{ext}"
user = "who"
item = "what"
rating = "stars"
timestamp = "when"

[items]
path = "items.{ext}"
id = "sku"
text = ["title", "description"]
attributes = ["category"]
entity = "kg"
text_template = "{{title}}: {{description}}[ ({{category}})]"

[users]
path = "users.{ext}"
id = "user"
attributes = ["country"]

[triples]
path = "triples.{ext}"
head = "h"
relation = "r"
tail = "t"

[links]
path = "links.{ext}"
item = "item"
entity = "entity"
"""

TABLES = {
    "interactions": INTERACTIONS,
    "items": ITEMS,
    "users": USERS,
    "triples": TRIPLES,
    "links": LINKS,
}


def write_table(path: Path, rows: list[list[str]]) -> Path:
    """``rows`` (header first) as CSV, TSV or Parquet, by ``path``'s suffix."""
    if path.suffix == ".parquet":
        frame = pd.DataFrame(rows[1:], columns=rows[0]).replace("", None)
        frame.to_parquet(path)
    else:
        sep = "," if path.suffix == ".csv" else "\t"
        path.write_text("".join(sep.join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_shop(root: Path, ext: str = "csv", mapping: str = MAPPING, **tables) -> Path:
    """The five tables (``tables`` replaces some) and ``data.toml``; returns the TOML path."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in {**TABLES, **tables}.items():
        write_table(root / f"{name}.{ext}", rows)
    toml = root / "data.toml"
    toml.write_text(mapping.format(ext=ext), encoding="utf-8")
    return toml


def counts(url: str) -> dict[str, int]:
    with Store(url) as store, store.engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in s.metadata.sorted_tables
        }


# ------------------------------------------------------------------------ five tables


@pytest.mark.parametrize("ext", ["csv", "tsv", "parquet"])
def test_five_tables_load_from_each_format(tmp_path: Path, ext: str) -> None:
    ds = load_tables(write_shop(tmp_path / ext, ext))
    assert ds.name == "shop"
    inter = ds.interactions
    assert len(inter) == 24 and inter["user_id"].iloc[0] == "u1" and inter["item_id"][0] == "i1"
    assert inter["rating"].iloc[0] == 3.0
    assert inter["timestamp"].iloc[0] == pd.Timestamp("2024-01-03", tz="UTC").timestamp()
    items = ds.items.set_index("item_id")
    assert ds.text_fields == ["title", "description"] and ds.attribute_fields == ["category"]
    assert items.loc["i1", "category"] == ("kitchen", "cups")
    assert items.loc["i4", "description"] == ""
    assert ds.users["country"].tolist()[:2] == ["FR", "JP"]
    assert ds.user_attribute_fields == ["country"]
    assert ds.triples.values.tolist() == [r for r in TRIPLES[1:]]
    # the links file first, then the items table's entity column
    assert ds.links.values.tolist() == [["i2", "E2"], ["i8", "E8"], ["i1", "E1"], ["i3", "E3"]]
    assert ds.all_item_ids() == [f"i{i}" for i in range(1, 9)]  # i7, i8: no interactions
    assert ds.new_items == []  # no interactions does not mean new (no new-item offset)
    texts = dict(render_item_texts(ds))
    assert texts["i1"] == "Blue mug: A stoneware mug (kitchen, cups)"
    assert texts["i4"] == "Black tea: (tea)" and "i8" not in texts  # no text: ranked by its graph


def test_store_keeps_every_table_and_training_reads_it(tmp_path: Path) -> None:
    from kinrec.pipeline import stored_dataset, train_and_evaluate

    ds = load_tables(write_shop(tmp_path / "shop"))
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with Store(url) as store:
        report = store.ingest(ds)
        assert report.tables["triples"].added == 4 and report.tables["links"].added == 4
        assert report.tables["items"].added == 8  # i8 from the links too
        assert report.tables["users"].added == 6
    cfg = PipelineConfig(data=DataConfig(dataset="shop"), store=StoreConfig(url=url))
    back = stored_dataset(cfg)
    assert back.all_item_ids() == ds.all_item_ids()
    assert back.text_template == ds.text_template
    assert render_item_texts(back)[:7] == render_item_texts(ds)[:7]
    for table in ("interactions", "triples", "links"):
        pd.testing.assert_frame_equal(
            getattr(back, table), getattr(ds, table).reset_index(drop=True), obj=table
        )
    assert back.users.values.tolist() == ds.users.values.tolist()
    # the knowledge-graph model trains on items known only from links (issue: "link to
    # unknown item") and ranks the whole catalogue
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": "kg-knn"})})
    outcome = train_and_evaluate(cfg, back)
    assert outcome.split.train.item_map.ids() == ds.all_item_ids()
    assert len(outcome.model.score(pd.Series([0]).to_numpy())[0]) == 8


def test_text_template_from_the_pipeline_config_replaces_the_stored_one(tmp_path: Path) -> None:
    from kinrec.pipeline import stored_dataset

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with Store(url) as store:
        store.ingest(load_tables(write_shop(tmp_path / "shop")))
    cfg = PipelineConfig.model_validate(
        {"data": {"dataset": "shop", "text_template": "{title}"}, "store": {"url": url}}
    )
    assert dict(render_item_texts(stored_dataset(cfg)))["i1"] == "Blue mug"
    cfg = PipelineConfig.model_validate(
        {"data": {"dataset": "shop", "text_template": "{titel}"}, "store": {"url": url}}
    )
    with pytest.raises(ValueError, match="titel"):
        stored_dataset(cfg)
    with pytest.raises(ValueError, match="template"):
        DataConfig(dataset="shop", text_template="{title")


def test_default_text_comes_from_the_fields(tmp_path: Path) -> None:
    mapping = MAPPING.replace('text_template = "{{title}}: {{description}}[ ({{category}})]"', "")
    ds = load_tables(write_shop(tmp_path / "shop", mapping=mapping))
    assert ds.text_template is None
    texts = dict(render_item_texts(ds))
    assert texts["i1"] == "Blue mug. A stoneware mug. Category: kitchen, cups."
    assert texts["i4"] == "Black tea. Category: tea."


def test_pipeline_loads_a_mapping_as_its_data_source(tmp_path: Path) -> None:
    from kinrec.pipeline import dataset_name, load_source, stored_dataset

    toml = write_shop(tmp_path / "shop")
    data = DataConfig(path=toml, format="table")
    assert data.dataset is None and dataset_name(data) == "shop"
    assert load_source(data).all_item_ids() == [f"i{i}" for i in range(1, 9)]
    url = f"sqlite:///{tmp_path / 'k.db'}"
    with Store(url) as store:
        store.ingest(load_source(data))
    cfg = PipelineConfig(data=data, store=StoreConfig(url=url))
    assert stored_dataset(cfg).name == "shop"  # train --config finds what the mapping names
    assert DataConfig().dataset == "ml-100k"
    assert DataConfig(dataset="ml-100k", path=tmp_path).dataset == "ml-100k"  # kept with a path


def test_entity_column_alone_and_minimal_mapping(tmp_path: Path) -> None:
    root = tmp_path / "min"
    root.mkdir()
    write_table(root / "events.csv", [["user_id", "item_id"], ["a", "x"], ["b", "y"]])
    write_table(root / "items.csv", [["item_id", "entity"], ["x", "E1"], ["z", "E2"]])
    write_table(root / "kg.csv", [["head", "relation", "tail"], ["E1", "r", "E2"]])
    toml = root / "m.toml"
    toml.write_text(
        '[interactions]\npath = "events.csv"\n[items]\npath = "items.csv"\nentity = "entity"\n'
        '[triples]\npath = "kg.csv"\n'
    )
    ds = load_tables(toml)
    assert ds.name == "m"  # the mapping file's stem
    assert ds.links.values.tolist() == [["x", "E1"], ["z", "E2"]]
    assert ds.links.attrs == {"source": str(root / "items.csv"), "first_line": 2}
    assert ds.all_item_ids() == ["x", "z", "y"]
    assert math.isnan(ds.interactions["rating"][0])


# ------------------------------------------------------------------------ bad rows

BAD_ROWS = {
    # case: (table replaced, its rows, file, line, field, message)
    "missing column": (
        "interactions",
        [["who", "what", "when"], ["u1", "i1", "2024-01-01"]],
        "interactions",
        1,
        "stars",
        "missing required column",
    ),
    "blank user id": (
        "interactions",
        [INTERACTIONS[0], INTERACTIONS[1], ["", "i2", "4", "2024-01-02"]],
        "interactions",
        3,
        "who",
        "missing user id",
    ),
    "non-numeric rating": (
        "interactions",
        [INTERACTIONS[0], INTERACTIONS[1], ["u1", "i2", "five", "2024-01-02"]],
        "interactions",
        3,
        "stars",
        "not a number",
    ),
    "bad date": (
        "interactions",
        [INTERACTIONS[0], ["u1", "i2", "4", "soon"]],
        "interactions",
        2,
        "when",
        "not a number or date",
    ),
    "blank item id": (
        "items",
        [*ITEMS[:3], ["", "Cup", "", "kitchen", ""]],
        "items",
        4,
        "sku",
        "missing item id",
    ),
    "duplicate item id": (
        "items",
        [*ITEMS, ["i3", "Green tea again", "", "tea", ""]],
        "items",
        9,
        "sku",
        "duplicate id 'i3'",
    ),
    "missing item column": (
        "items",
        [["sku", "title", "category", "kg"], ["i1", "Mug", "kitchen", ""]],
        "items",
        1,
        "description",
        "missing required column",
    ),
    "duplicate user id": (
        "users",
        [*USERS, ["u2", "FR"]],
        "users",
        8,
        "user",
        "duplicate id 'u2'",
    ),
    "blank relation": (
        "triples",
        [*TRIPLES, ["E1", " ", "Acme"]],
        "triples",
        6,
        "r",
        "missing relation",
    ),
    "blank entity": (
        "links",
        [*LINKS, ["i5", ""]],
        "links",
        4,
        "entity",
        "missing entity id",
    ),
    "entity linked to two items": (
        "links",
        [*LINKS, ["i5", "E2"]],
        "links",
        4,
        "entity",
        "already linked to item 'i2'",
    ),
    "entity column repeats a link": (
        "links",
        [*LINKS, ["i1", "E1"]],
        "items",
        2,
        "kg",
        "duplicate link 'i1' -> 'E1'",
    ),
}


@pytest.mark.parametrize("ext", ["csv", "parquet"])
@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_names_file_line_and_field(tmp_path: Path, case: str, ext: str) -> None:
    table, rows, file, line, field, message = BAD_ROWS[case]
    toml = write_shop(tmp_path / "shop", ext, **{table: rows})
    with pytest.raises(DataError) as info:
        load_tables(toml)
    err = info.value
    first = 1 if ext == "parquet" and line != 1 else 0  # Parquet: line = row number
    assert (err.file, err.line, err.field) == (
        str(tmp_path / "shop" / f"{file}.{ext}"),
        line - first,
        field,
    ), str(err)
    assert message in str(err)


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda m: m.replace("[links]", "[link]"), "link", "unknown key"),
        (lambda m: m.replace(TEXT_LIST, 'text = "title"'), "items.text", ""),
        (lambda m: m.replace("{{description}}", "{{descr}}"), "items.text_template", "{descr}"),
        (lambda m: m.replace("{{description}}", "{{descr"), "items.text_template", "unmatched"),
        (lambda m: m.replace('attributes = ["category"]', 'attributes = ["title"]'), "title", ""),
        (lambda m: m.replace('path = "links.{ext}"', 'path = "nope.csv"'), None, "not found"),
    ],
)
def test_bad_mapping_names_the_key(tmp_path: Path, edit, field: str | None, message: str) -> None:
    toml = write_shop(tmp_path / "shop", mapping=edit(MAPPING))
    with pytest.raises(DataError) as info:
        load_tables(toml)
    assert info.value.field == field, str(info.value)
    assert message in str(info.value)


def test_failing_ingest_stores_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    good = write_shop(tmp_path / "good")
    res = runner.invoke(app, ["ingest", "--format", "table", "--map", str(good), "--db", url])
    assert res.exit_code == 0, res.output
    before = counts(url)
    assert before["items"] == 8 and before["dataset_settings"] == 1
    # another dataset whose last table has a bad row: nothing of it is stored
    bad = write_shop(tmp_path / "bad", links=[*LINKS, ["i5", ""]])
    res = runner.invoke(
        app, ["ingest", "--format", "table", "--map", str(bad), "--db", url, "--name", "other"]
    )
    assert res.exit_code == 2
    assert f"{tmp_path / 'bad' / 'links.csv'}:4" in res.output.replace("\n", "")
    assert counts(url) == before
    with Store(url) as store:
        assert store.dataset_names() == ["shop"]
    # a store-level contradiction (another template for the same dataset) also stores nothing
    other = write_shop(tmp_path / "again", mapping=MAPPING.replace("{{title}}: ", "{{title}} - "))
    res = runner.invoke(app, ["ingest", "--format", "table", "--map", str(other), "--db", url])
    assert res.exit_code == 2 and "text_template" in res.output
    assert counts(url) == before
    # the same input again adds nothing
    res = runner.invoke(app, ["ingest", "--format", "table", "--map", str(good), "--db", url])
    assert res.exit_code == 0, res.output
    assert counts(url) == before


def test_cli_options_and_the_single_file_form(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    toml = write_shop(tmp_path / "shop")
    res = runner.invoke(app, ["ingest", "x.csv", "--format", "table", "--map", str(toml)])
    assert res.exit_code == 2 and "give no SOURCE" in res.output
    res = runner.invoke(app, ["ingest", "--format", "table", "--db", url])
    assert res.exit_code == 2 and "--map" in res.output
    res = runner.invoke(app, ["ingest", "--map", str(toml), "--db", url])
    assert res.exit_code == 2 and "--format table" in res.output
    # the flat mapping of one interactions file still works
    flat = tmp_path / "flat.toml"
    flat.write_text('user = "who"\nitem = "what"\nrating = "stars"\n')
    inter = tmp_path / "shop" / "interactions.csv"
    res = runner.invoke(
        app, ["ingest", str(inter), "--format", "table", "--map", str(flat), "--db", url]
    )
    assert res.exit_code == 0, res.output
    with Store(url) as store:
        assert store.load_dataset("interactions").summary()["interactions"] == 24
    ds = load_table(inter, ColumnMapping(user="who", item="what", timestamp="when"))
    assert ds.interactions["timestamp"].notna().all()
    assert TableMapping.from_toml(toml).resolve("items.csv") == tmp_path / "shop" / "items.csv"
    assert (
        "kinrec ingest --format table --map data.toml"
        in runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "120"}).output
    )
