"""The main job as functions: load -> ingest -> split -> train -> evaluate -> save.

The CLI is a thin layer over these; notebooks and services can call them directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinrec.config import DataConfig, PipelineConfig, SplitConfig
from kinrec.data.dataset import Dataset, Split
from kinrec.evaluation.benchmark import fit_with_validation
from kinrec.evaluation.protocol import EvaluationResult, evaluate
from kinrec.models.base import ProgressCallback, Recommender
from kinrec.models.registry import create_model

SPLIT_FILE = "split.json"


def load_source(data: DataConfig) -> Dataset:
    """Read a dataset from the registry (fetching it if needed) or from a path; ``[data]
    text_template``, when set, replaces the dataset's own template."""
    from kinrec.data import loaders, table
    from kinrec.data.registry import load_dataset

    if data.path is None:
        dataset = load_dataset(data.dataset)
    else:
        path = Path(data.path)
        if data.format == "recbole":
            # ``dataset`` picks the files (NAME.inter ...) where the folder has them; otherwise
            # it only names the dataset, read from the folder's one NAME.inter and renamed below
            named = data.dataset and (path / f"{data.dataset}.inter").exists()
            dataset = loaders.load_recbole_atomic(path, name=data.dataset if named else None)
        elif data.format == "ml-1m":
            dataset = loaders.load_movielens_1m(path)
        elif data.format == "unisrec":
            dataset = loaders.load_unisrec(path)
        elif path.suffix.lower() == ".toml" and table.is_table_mapping(path):
            dataset = table.load_tables(path, name=data.dataset)
        else:
            raise ValueError(
                "data.format = 'table' needs path = a table mapping (TOML with [interactions], "
                "see docs/data.md)"
            )
        if data.dataset:
            dataset.name = data.dataset
    return apply_text_template(dataset, data.text_template)


def apply_text_template(dataset: Dataset, template: str | None) -> Dataset:
    """``dataset`` with its text template replaced by ``template`` (unchanged when None);
    ``ValueError`` when a placeholder names no item field."""
    if template is None:
        return dataset
    from kinrec.knowledge.text import check_template

    try:
        check_template(template, [*dataset.text_fields, *dataset.attribute_fields])
    except ValueError as exc:
        raise ValueError(f"data.text_template {template!r}: {exc}") from None
    dataset.text_template = template
    return dataset


def dataset_name(data: DataConfig) -> str:
    """The name a dataset is stored under."""
    if data.dataset:
        return data.dataset
    path = Path(data.path)
    if data.format == "table" and path.suffix.lower() == ".toml":
        from kinrec.data.table import TableMapping

        return TableMapping.from_toml(path).name or path.stem
    return path.name


def make_split(dataset: Dataset | None, split: SplitConfig) -> Split:
    """Split a dataset as configured (or read predefined split files: ``dataset`` unused)."""
    from kinrec.data import splits

    if split.method == "predefined":
        return load_split_folder(split.dir)
    if dataset is None:
        raise ValueError(f"split.method = {split.method!r} needs a dataset")
    if split.method == "random":
        return splits.random_split(dataset, ratios=split.ratios, seed=split.seed)
    if split.method == "temporal":
        return splits.temporal_split(dataset, ratios=split.ratios)
    if split.method == "leave-one-out":
        return splits.leave_one_out(dataset)
    return splits.cold_item_split(dataset, fraction=split.cold_fraction, seed=split.seed)


def load_split_folder(directory: Path) -> Split:
    """A folder of predefined split files: RecBole benchmark files (``NAME.train.inter`` ...)
    or UniSRec leave-one-out files (``NAME.text`` + ``NAME.train.inter`` with histories)."""
    from kinrec.data.loaders import load_split_dir, load_unisrec_split

    directory = Path(directory)
    texts = sorted(directory.glob("*.text"))
    if texts and (directory / f"{texts[0].stem}.item2index").exists():
        return load_unisrec_split(directory, texts[0].stem)
    return load_split_dir(directory)


def open_store(url: str):
    """Open the store at a SQLAlchemy URL (creating the schema if needed)."""
    from kinrec.store import Store

    return Store(url)


def stored_dataset(config: PipelineConfig) -> Dataset:
    """The configured dataset as read back from the store (ingest it first)."""
    store = open_store(config.store.url)
    name = dataset_name(config.data)
    if name not in store.dataset_names():
        raise LookupError(
            f"dataset {name!r} is not in {config.store.url}; run `kinrec ingest {name}` first"
        )
    return apply_text_template(store.load_dataset(name), config.data.text_template)


@dataclass
class TrainOutcome:
    model: Recommender
    split: Split
    valid: EvaluationResult | None
    test: EvaluationResult


def train_and_evaluate(
    config: PipelineConfig,
    dataset: Dataset | None,
    out_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    ray_workers: int | None = None,
) -> TrainOutcome:
    """Split, train with early stopping on valid, evaluate on test, save to ``out_dir``.

    ``ray_workers``: train on the connected Ray cluster
    (:func:`kinrec.distributed.train.fit_distributed`) with that many data-parallel workers
    for models trained in epochs."""
    split = make_split(dataset, config.split)
    model = create_model(config.model.name, config.model.build_config())
    if ray_workers:
        from kinrec.distributed.train import fit_distributed

        model = fit_distributed(model, split, ray_workers, progress)
    else:
        fit_with_validation(model, split, progress)
    ks = config.evaluation.ks
    valid = None
    if len(split.valid):
        valid = evaluate(model, split.valid, exclude=[split.train], ks=ks, segments=False)
    test = evaluate(model, split.test, exclude=[split.train, split.valid], ks=ks, train=split.train)
    model.fit_info["test_metrics"] = test.metrics
    if out_dir is not None:
        record: dict[str, Any] = {
            "config": config.model_dump(mode="json"),
            "dataset": dataset_name(config.data),
        }
        model.save(out_dir, extra_files={SPLIT_FILE: json.dumps(record, indent=2)})
    return TrainOutcome(model, split, valid, test)


def split_for_model_dir(model_dir: Path) -> tuple[PipelineConfig, Split]:
    """Rebuild the exact split a saved model was trained on (splits are seeded)."""
    record = json.loads((Path(model_dir) / SPLIT_FILE).read_text())
    config = PipelineConfig.model_validate(record["config"])
    if config.split.method == "predefined":
        return config, load_split_folder(config.split.dir)
    return config, make_split(stored_dataset(config), config.split)
