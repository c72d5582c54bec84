"""Speed of store ingestion on ml-1m (1,000,209 ratings + items, users, KG), target < 60 s.

Loads ml-1m, ingests it into a fresh SQLite file, ingests it again (must add 0 rows), then
reads it back. Prints rows and seconds per phase and writes benchmarks/results/ingest.{md,json}.

    python benchmarks/ingest.py            # data from $KINREC_DATA_DIR or ../shared/datasets
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import sqlalchemy
from rich.console import Console
from rich.table import Table

from kinrec.data.loaders import load_movielens_1m
from kinrec.store import IngestReport, Store

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("KINREC_DATA_DIR", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results"
TARGET_S = 60.0


def _row(phase: str, rows: int | None, added: int | None, seconds: float) -> dict[str, object]:
    return {"phase": phase, "rows": rows, "added": added, "seconds": seconds}


def _phase_rows(label: str, report: IngestReport) -> list[dict[str, object]]:
    rows = [_row(f"{label}: validate", None, None, report.validate_seconds)]
    rows += [_row(f"{label}: {n}", t.rows, t.added, t.seconds) for n, t in report.tables.items()]
    total = sum(t.rows for t in report.tables.values())
    rows.append(_row(f"{label}: total", total, report.added, report.seconds))
    return rows


COLUMNS = ("phase", "rows", "added", "seconds", "rows/s")


def _format(row: dict[str, object]) -> tuple[str, ...]:
    n, added, sec = row["rows"], row["added"], float(row["seconds"])  # type: ignore[arg-type]
    rate = f"{n / sec:,.0f}" if isinstance(n, int) and n and sec > 0 else ""
    return (
        str(row["phase"]),
        "" if n is None else f"{n:,}",
        "" if added is None else f"{added:,}",
        f"{sec:.3f}",
        rate,
    )


def main() -> None:
    directory = DATA / "ml-1m"
    if not (directory / "ratings.dat").exists():
        raise SystemExit(f"ml-1m not found under {directory} (set KINREC_DATA_DIR)")
    t0 = time.perf_counter()
    dataset = load_movielens_1m(directory)
    load_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kinrec.db"
        store = Store(f"sqlite:///{path}")
        first = store.ingest(dataset)
        second = store.ingest(dataset)
        t1 = time.perf_counter()
        back = store.load_dataset(dataset.name)
        read_s = time.perf_counter() - t1
        stats = store.stats(dataset.name)
        store.close()
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20

    if second.added:
        raise SystemExit(f"re-ingestion added {second.added} rows; it must add none")
    for name in ("interactions", "items", "users", "triples", "links"):
        # exact round trip: values, order and dtypes
        pd.testing.assert_frame_equal(getattr(back, name), getattr(dataset, name), obj=name)

    rows = [_row("load_movielens_1m (read files)", len(dataset.interactions), None, load_s)]
    rows += _phase_rows("ingest", first)
    rows += _phase_rows("re-ingest", second)
    rows.append(_row("load_dataset (read back)", len(back.interactions), None, read_s))

    formatted = [_format(r) for r in rows]
    table = Table(title=f"Store ingestion, ml-1m into SQLite (target < {TARGET_S:.0f} s)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "phase" else "right")
    for cells in formatted:
        table.add_row(*cells)
    console = Console()
    console.print(table)
    verdict = "PASS" if first.seconds < TARGET_S else "FAIL"
    console.print(
        f"ingest {first.seconds:.1f} s ({verdict}, target < {TARGET_S:.0f} s); re-ingest "
        f"{second.seconds:.1f} s, added {second.added}; database {size_mb:.0f} MiB"
    )

    env = {
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "pandas": pd.__version__,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs sharing the cores
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "dataset": "ml-1m",
        "target_seconds": TARGET_S,
        "ingest_seconds": first.seconds,
        "reingest_seconds": second.seconds,
        "reingest_added": second.added,
        "load_files_seconds": load_s,
        "read_back_seconds": read_s,
        "database_mib": round(size_mb, 1),
        "stats": stats,
        "ingest": first.as_dict(),
        "reingest": second.as_dict(),
        "environment": env,
    }
    (RESULTS / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Store ingestion benchmark: ml-1m into a fresh SQLite file",
        "",
        "`python benchmarks/ingest.py` "
        f"(Python {env['python']}, SQLite {env['sqlite']}, SQLAlchemy {env['sqlalchemy']}, "
        f"{env['cpus']} CPUs, 1-min load average {env['load_average_1min']} at the end; data "
        "read by `kinrec.data.loaders.load_movielens_1m`).",
        "",
        f"Ingest: **{first.seconds:.1f} s** (target < {TARGET_S:.0f} s). Re-ingest of the same "
        f"data: {second.seconds:.1f} s, {second.added} rows added. Database: {size_mb:.0f} MiB.",
        "",
        "| phase | rows | added | seconds | rows/s |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in formatted]
    (RESULTS / "ingest.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
