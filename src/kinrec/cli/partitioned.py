"""``kinrec train --partitions P``: a model fitted on every interaction, read in partitions
by the workers of a Ray cluster (:mod:`kinrec.distributed.partitions`), for data that does
not pass through one process's memory.

The options are declared here and used in ``kinrec train``'s signature, which hands over
to :func:`train_partitioned` when ``--partitions`` is given."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kinrec.cli.common import err, errors_as_messages, fail, out

if TYPE_CHECKING:
    from kinrec.config import PipelineConfig

PARTITIONED_MODELS = ("ease",)
"""Models whose fit is a sum over users (read in partitions) and one solve on the driver."""

PartitionsOption = Annotated[
    int | None,
    typer.Option(
        "--partitions",
        min=1,
        help="With --ray: read the interactions in this many partitions by user on the "
        "cluster's workers and fit on all of them (no split, no evaluation: the model to "
        f"serve). Models: {', '.join(PARTITIONED_MODELS)}. Source: the store (--db, "
        "--dataset), or --parquet.",
        show_default=False,
    ),
]
ParquetOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--parquet",
        exists=True,
        metavar="PATH",
        help="With --partitions: read Parquet files (a file or a folder; repeatable; columns "
        "user_id, item_id) instead of the store.",
        show_default=False,
    ),
]


def train_partitioned(
    cfg: PipelineConfig,
    *,
    private: bool,
    parquet: list[Path] | None,
    partitions: int,
    address: str | None,
    out_dir: Path,
) -> None:
    """The ``--partitions`` branch of ``kinrec train``: the model and store of ``cfg``;
    ``private``: ``--dp-epsilon`` was given."""
    from kinrec.distributed.cluster import connect
    from kinrec.distributed.partitions import fit_ease_partitioned
    from kinrec.pipeline import dataset_name

    model_name, db = cfg.model.name, cfg.store.url
    if model_name not in PARTITIONED_MODELS:
        raise fail(
            f"--partitions fits {', '.join(PARTITIONED_MODELS)} (a sum over users and one "
            f"solve), not {model_name!r}; train {model_name} with --ray and without "
            "--partitions (the split passes through this process)"
        )
    if address is None:
        raise fail("--partitions reads on a Ray cluster: give --ray ADDRESS (or local)")
    with errors_as_messages():
        params = cfg.model.build_config().model_dump(mode="json")
        dataset = dataset_name(cfg.data)
    if private or params.get("dp_epsilon") is not None:
        raise fail("--partitions does not train privately; drop --dp-epsilon or --partitions")
    source: Any = [str(p) for p in parquet] if parquet else db
    with errors_as_messages():
        connect(address)
        start = time.perf_counter()
        model = fit_ease_partitioned(
            source,
            dataset=None if parquet else dataset,
            partitions=partitions,
            config=params,
        )
        seconds = time.perf_counter() - start
        record = {
            "dataset": None if parquet else dataset,
            "partitioned": {
                "model": model_name,
                "params": params,
                "source": source if parquet else "store",
                "partitions": partitions,
                "split": "none: fitted on every interaction",
            },
        }
        model.save(out_dir, extra_files={"split.json": json.dumps(record, indent=2)})
    err.print(
        f"{len(model.user_map):,} users, {len(model.item_map):,} items, "
        f"{model.seen.nnz:,} user-item pairs in {partitions} partitions, {seconds:.1f} s",
        soft_wrap=True,
    )
    out.print(
        f"wrote {out_dir}: {model_name} on every interaction (no split, no evaluation)",
        soft_wrap=True,
    )
    if parquet:
        out.print("serve it with --dataset NAME: the store that holds the items' catalogue")
