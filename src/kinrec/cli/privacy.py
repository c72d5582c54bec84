"""``kinrec privacy report`` and the privacy steps of ``kinrec ingest`` (pseudonyms for user
ids, coarsened or dropped quasi-identifiers; docs/privacy.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from kinrec.cli.common import DbOption, err, out
from kinrec.cli.common import errors_as_messages as _errors_as_messages
from kinrec.config import DEFAULT_DB_URL, PipelineConfig, PrivacyConfig

if TYPE_CHECKING:
    from kinrec.data.dataset import Dataset
    from kinrec.privacy import AnonymityReport, Pseudonymiser

privacy_app = typer.Typer(
    help="What the store holds about users: k-anonymity of their attributes.",
    no_args_is_help=True,
)

PseudonymiseOption = Annotated[
    bool | None,
    typer.Option(
        "--pseudonymise/--no-pseudonymise",
        help="Replace user ids by keyed pseudonyms (HMAC-SHA256) before anything is stored; "
        "the key comes from --pseudonym-key-file or KINREC_PSEUDONYM_KEY (default: the "
        "config's [privacy] pseudonymise, else off).",
        show_default=False,
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--pseudonym-key-file",
        dir_okay=False,
        help="File holding the pseudonym key (wins over KINREC_PSEUDONYM_KEY and the "
        "config's [privacy] key_file).",
        show_default=False,
    ),
]


def privacy_settings(
    config: Path | None, pseudonymise: bool | None, key_file: Path | None
) -> PrivacyConfig:
    """The ``[privacy]`` section of ``config`` (defaults without one), the options winning."""
    section = PipelineConfig.from_toml(config).privacy if config else PrivacyConfig()
    update: dict[str, object] = {}
    if pseudonymise is not None:
        update["pseudonymise"] = pseudonymise
    if key_file is not None:
        update["key_file"] = key_file
    return section.model_copy(update=update)


def protect(dataset: Dataset, settings: PrivacyConfig) -> tuple[Dataset, Pseudonymiser | None]:
    """The dataset with its user attributes coarsened and dropped as configured, and the
    pseudonymiser that ingest applies to its user ids (None: ids are stored as given)."""
    from kinrec.privacy import load_pseudonymiser, protect_user_attributes

    pseudonymiser = load_pseudonymiser(settings.key_file) if settings.pseudonymise else None
    dataset = protect_user_attributes(dataset, settings.coarsen, settings.drop)
    if settings.coarsen or settings.drop:
        done = [f"{name} {rule}" for name, rule in settings.coarsen.items()]
        done += [f"{name} dropped" for name in settings.drop]
        err.print(f"user attributes: {', '.join(done)}", soft_wrap=True)
    if pseudonymiser is not None:
        err.print(f"user ids: pseudonymised (key from {pseudonymiser.source})", soft_wrap=True)
    return dataset, pseudonymiser


def _report_table(reports: dict[str, AnonymityReport]) -> Table:
    threshold = next(iter(reports.values())).threshold
    table = Table(title="k-anonymity of the user attributes")
    for column in (
        "user table",
        "users",
        "groups",
        "smallest group (k)",
        f"users in groups < {threshold}",
    ):
        table.add_column(column, justify="left" if column == "user table" else "right")
    table.add_column("quasi-identifiers")
    for name, r in reports.items():
        table.add_row(
            name,
            str(r.users),
            str(r.groups),
            str(r.smallest),
            str(r.below),
            ", ".join(r.columns) or "-",
        )
    return table


@privacy_app.command("report")
def report(
    source: Annotated[
        str | None,
        typer.Argument(
            help="The source the dataset was ingested from, as `kinrec ingest` takes it (a "
            "registry name or a path with --format), for the 'before' row; leave it out to "
            "report the store only.",
            show_default=False,
        ),
    ] = None,
    db: DbOption = DEFAULT_DB_URL,
    dataset: Annotated[
        str | None,
        typer.Option(help="Stored dataset (default: the store's only one).", show_default=False),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="recbole | ml-1m | unisrec | table")
    ] = "recbole",
    mapping: Annotated[
        Path | None,
        typer.Option("--map", exists=True, dir_okay=False, help="--format table: the mapping."),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(
            "-k", min=2, help="Count users in groups smaller than k (default: the config's, 5)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", exists=True, dir_okay=False, help="Pipeline TOML ([privacy])."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """k-anonymity of the stored user attributes: the smallest group of users who share every
    attribute value (every user attribute counts as a quasi-identifier), and how many users
    are in groups smaller than k; with SOURCE, the same for the source's users before ingest.

    Example: kinrec privacy report ml-100k --db sqlite:///kinrec.db -k 5
    """
    from kinrec.privacy import k_anonymity
    from kinrec.store import Store

    with _errors_as_messages():
        threshold = k or (PipelineConfig.from_toml(config).privacy.k if config else 5)
        with Store(db) as store:
            names = store.dataset_names()
            if dataset is None:
                if len(names) != 1:
                    raise ValueError(
                        f"{db} holds {len(names)} datasets ({', '.join(names) or 'none'}): "
                        "name one with --dataset"
                    )
                dataset = names[0]
            stored = store.load_dataset(dataset)
        reports: dict[str, AnonymityReport] = {}
        if source is not None or mapping is not None:
            from kinrec.cli import _load_for_ingest

            before = _load_for_ingest(source, fmt, None, mapping, None, None, None, None)
            reports["source (before)"] = k_anonymity(
                before.users, before.user_attribute_fields, threshold
            )
        reports["store (after)"] = k_anonymity(
            stored.users, stored.user_attribute_fields, threshold
        )
    if json_out:
        payload = {"dataset": dataset, **{n.split()[0]: r.as_dict() for n, r in reports.items()}}
        print(json.dumps(payload))
        return
    out.print(_report_table(reports))
