"""Draw every benchmark picture again from the committed JSON records, without running a
benchmark.

For each ``<name>.json`` in the results folder that has a picture, writes ``<name>.png``
beside it with the function the benchmark itself calls when it runs (``benchmarks/_plots.py``;
scale.py's own ``plot``), and prints which records got a picture and which did not, and why.
``--link`` also appends the picture's line (``![...](<name>.png)``) to ``<name>.md`` where the
Markdown does not show it yet.

    python benchmarks/plot_results.py [NAME ...] [--results-dir DIR] [--out DIR] [--link]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _plots

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Picture:
    pattern: str  # record names (fnmatch), e.g. "baselines-*"
    kind: str  # the key of its link text in _plots.WHAT
    script: str  # the benchmark that writes the record and draws the picture
    draw: Callable[[Any, Path], Any]


def _baselines(report: Any, path: Path) -> Any:
    from baselines import RECBOLE

    split = path.stem.removeprefix("baselines-")
    reference = {m: v[1] for m, v in RECBOLE.get(split, {}).items()}
    return _plots.plot_baselines(report, path, reference=reference)


def _transfer(report: Any, path: Path) -> Any:
    from transfer import COLD_TARGET, LIGHTFM_COLD, RECBOLE_NDCG10

    return _plots.plot_transfer(
        report, path, recbole=RECBOLE_NDCG10, lightfm=LIGHTFM_COLD, cold_target=COLD_TARGET
    )


def _content(report: Any, path: Path) -> Any:
    from content import COLD_REFERENCES

    return _plots.plot_content(report, path, references=COLD_REFERENCES)


def _scale(report: Any, path: Path) -> Any:
    from scale import plot

    return plot(report, path)


def _privacy(report: Any, path: Path) -> Any:
    from privacy import plot_privacy

    return plot_privacy(report, path)


def _privacy_ceiling(report: Any, path: Path) -> Any:
    from privacy_ceiling import plot_privacy_ceiling

    return plot_privacy_ceiling(report, path)


PICTURES = [  # the first pattern a name matches decides
    Picture("serving*", "serving", "serving.py", _plots.plot_serving),
    Picture("baselines-*", "baselines", "baselines.py", _baselines),
    Picture("transfer-search", "transfer-search", "tune_transfer.py", _plots.plot_transfer_search),
    Picture("transfer-*", "transfer", "transfer.py", _transfer),
    Picture("new-users-*", "new-users", "new_users.py", _plots.plot_new_users),
    Picture("linear-ceiling-*", "linear-ceiling", "linear_ceiling.py", _plots.plot_linear_ceiling),
    Picture("kg", "kg", "kg.py", _plots.plot_kg),
    Picture("kg-gain", "kg-gain", "kg_gain.py", _plots.plot_kg_gain),
    Picture("encoder*", "encoder", "encoder.py", _plots.plot_encoder),
    Picture("adapt", "adapt", "adapt.py", _plots.plot_adapt),
    Picture("content", "content", "content.py", _content),
    Picture("ann_serving", "ann-serving", "ann_serving.py", _plots.plot_ann_serving),
    Picture("replicas", "replicas", "replicas.py", _plots.plot_replicas),
    Picture("scale*", "scale", "scale.py", _scale),
    Picture("privacy", "privacy", "privacy.py", _privacy),
    Picture("privacy-ceiling", "privacy-ceiling", "privacy_ceiling.py", _privacy_ceiling),
]
"""Records with a picture, and what draws it."""

NO_PICTURE = {
    "ann-*": "two rows (exact scoring, the index path) with the same NDCG@10 and Recall@20 "
    "and two latencies each: the table says it at a glance",
    "evaluation": "two timings against a target: nothing to look at",
    "ingest": "one time against a target; the per-phase rows are a breakdown read in the table "
    "(interactions take three quarters)",
    "large-catalogue*": "one or two runs whose outcome is a sentence (fitted, or the refusal's "
    "message) rather than a number",
    "propagation": "two rows (full, cached): their ratio is the result, a column of the table",
    "ray-train": "per model one Ray fit beside the single-process mean ± sd and the same seed's "
    "fit: a difference column of the table says it",
    "sparse-head": "two dense/sparse pairs: their ratios are the result, a column of the table",
}
"""Records without a picture, and why."""


def picture_for(name: str) -> Picture | None:
    return next((p for p in PICTURES if fnmatch.fnmatchcase(name, p.pattern)), None)


def reason_for(name: str) -> str:
    """Why the record ``name`` has no picture."""
    for pattern, reason in NO_PICTURE.items():
        if fnmatch.fnmatchcase(name, pattern):
            return reason
    return "no picture known for this record: add it to PICTURES or NO_PICTURE here"


def add_link(md: Path, picture: Picture, report: Any) -> bool:
    """Append the picture's line to ``md`` unless it shows the picture already."""
    png = f"{md.stem}.png"
    text = md.read_text(encoding="utf-8")
    if f"]({png})" in text:
        return False
    kind = picture.kind
    if kind == "scale":
        what = "fit time and peak RSS against items"
    elif kind == "privacy":
        from privacy import WHAT as what
    elif kind == "privacy-ceiling":
        from privacy_ceiling import WHAT as what
    else:
        what = _plots.what(kind, report)
    md.write_text(text.rstrip("\n") + f"\n\n![{what}]({png})\n", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="record names (default: every record)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=None, help="write the pictures here instead")
    parser.add_argument("--link", action="store_true", help="link missing pictures from the .md")
    args = parser.parse_args(argv)
    records = sorted(args.results_dir.glob("*.json"))
    if args.names:
        records = [r for r in records if r.stem in args.names]
        missing = set(args.names) - {r.stem for r in records}
        if missing:
            parser.error(f"no record named {', '.join(sorted(missing))} in {args.results_dir}")
    out = args.out or args.results_dir
    failed = 0
    drawn, skipped = [], []
    for record in records:
        picture = picture_for(record.stem)
        if picture is None:
            skipped.append((record.name, reason_for(record.stem)))
            continue
        report = json.loads(record.read_text(encoding="utf-8"))
        png = out / f"{record.stem}.png"
        try:
            picture.draw(report, png)
        except Exception as exc:  # report it, draw the others
            failed += 1
            print(f"FAILED  {record.name} ({picture.script}): {type(exc).__name__}: {exc}")
            continue
        linked = ""
        md = args.results_dir / f"{record.stem}.md"
        if args.link and md.exists() and add_link(md, picture, report):
            linked = f"; linked from {md.name}"
        drawn.append(f"{png.name:<48} <- {record.name} ({picture.script}){linked}")
    print(f"pictures ({len(drawn)}):")
    for line in drawn:
        print(f"  {line}")
    print(f"records without a picture ({len(skipped)}):")
    for name, reason in skipped:
        print(f"  {name}: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
