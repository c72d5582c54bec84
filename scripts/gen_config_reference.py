"""Write docs/configuration.md from kinrec's typed (pydantic) configuration classes.

    python scripts/gen_config_reference.py           # rewrite docs/configuration.md
    python scripts/gen_config_reference.py --check   # exit 1 when the file is out of date

Every table row is one field: its name, type (with its bounds), default and description. The
description is the field's ``Field(description=...)``, else the docstring written under the
attribute in the class body. ``tests/test_docs_reference.py`` fails when the committed page
differs from what this script writes, so a changed config field shows up in review together
with its documentation.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "configuration.md"


# ------------------------------------------------------------------------------ rendering
def _type_name(tp: Any) -> str:
    """A short, readable name of a type annotation (TOML-ish literals)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "None"
    if origin is typing.Annotated:
        return _type_name(args[0]) + _bounds(args[1:])
    if origin is typing.Literal:
        return " or ".join(_value(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{name}[{inner}]"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def _bounds(metadata: typing.Iterable[Any]) -> str:
    """`` (>= 1, < 1)`` from annotated-types constraints (also inside FieldInfo objects)."""
    found = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            found += [_bounds(item.metadata).strip(" ()")]
            continue
        for cls, attr, sign in _BOUNDS:
            if isinstance(item, cls):
                found.append(f"{sign} {_number(getattr(item, attr))}")
        if isinstance(item, annotated_types.Interval):
            found += [
                f"{sign} {_number(getattr(item, attr))}"
                for _, attr, sign in _BOUNDS
                if getattr(item, attr, None) is not None
            ]
    found = [f for f in found if f]
    return f" ({', '.join(found)})" if found else ""


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _value(value: Any) -> str:
    """A default as it is written in a TOML file (None: unset)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Path):
        return f'"{value}"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        return _value(field.default)
    if field.default_factory is not None:
        made = field.default_factory()
        if isinstance(made, BaseModel):
            return "(section)"
        if isinstance(made, Path):
            return "(bundled)"
        return _value(made)
    return "required"


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return text.replace("|", "\\|")


def _clean_doc(text: str) -> str:
    """Docstring markup (reStructuredText roles, double backticks) as Markdown."""
    role = re.compile(r":(\w+):`~?([^`<]+?)(?:\s*<[^>]+>)?`")
    text = role.sub(
        lambda m: f"`{m.group(2) if m.group(1) == 'mod' else m.group(2).split('.')[-1]}`", text
    )
    return text.replace("``", "`")


def _attribute_docs(cls: type) -> dict[str, str]:
    """Docstrings written under the attributes of ``cls`` and its bases (the nearest wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, BaseModel) or not issubclass(klass, BaseModel):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _summary(cls: type) -> str:
    """The class's own docstring (not one it inherits), as Markdown."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    doc = doc.split("::")[0].strip()  # drop a literal block (a TOML example) at the end
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
    return _clean_doc("\n\n".join(paragraphs))


# Descriptions for fields whose class gives none (the class's own text wins once it has one).
NOTES: dict[str, str] = {
    "DataConfig.dataset": "a registered dataset (`kinrec data list`) or, with `path`, the name "
    "the data is stored under",
    "DataConfig.path": "a folder or file to load instead of a registered dataset",
    "DataConfig.format": "how `path` is read: RecBole atomic files, the original MovieLens 1M "
    "files, a UniSRec folder, or a table mapping (data.md)",
    "DataConfig.text_template": "item text template for this run, e.g. "
    '`"{title}. {description}"` (default: the dataset\'s own)',
    "StoreConfig.url": "the store's SQLAlchemy URL: SQLite by default, or "
    "`postgresql+psycopg://user:password@host/dbname`",
    "SplitConfig.method": "random: per user, a seeded random cut by `ratios`; temporal: one "
    "cut of all rows by timestamp (the latest go to test); leave-one-out: per user, the last "
    "row by time to test and the one before to valid; cold-item: `cold_fraction` of the items "
    "(with at least 5 rows) held out entirely into test as new items, the rest random; "
    "predefined: the split files in `dir`",
    "SplitConfig.ratios": "train, valid and test shares (random, temporal, cold-item); they "
    "sum to 1",
    "SplitConfig.seed": "seed of the random and cold-item splits",
    "SplitConfig.cold_fraction": "cold-item: share of the eligible items held out as new items",
    "SplitConfig.dir": "predefined: a folder of `NAME.train.inter`, `NAME.valid.inter`, "
    "`NAME.test.inter` (optionally `NAME.cold_items.txt`)",
    "ModelSection.name": "a registered model (`kinrec models`)",
    "ModelSection.params": "the model's fields (below), checked against its configuration",
    "EvaluationConfig.ks": "cut-offs of the reported metrics (Recall@k, NDCG@k, MRR@k, Hit@k, "
    "Precision@k)",
    "ModelConfig.seed": "seed of everything random in the fit (initialisation, sampling, "
    "dropout); `kinrec benchmark --seeds N` uses 2026, 2027, ...",
    "IterativeConfig.max_epochs": "most training epochs",
    "IterativeConfig.batch_size": "training examples per step",
    "IterativeConfig.learning_rate": "the optimiser's learning rate",
    "EASEConfig.reg_weight": "L2 weight of the closed form (RecBole's default, 250)",
    "PairwiseEmbeddingConfig.embedding_size": "size of the user and item vectors",
    "TransferConfig.n_experts": "experts of the mixture-of-experts text adapter",
    "TransferConfig.temperature": "temperature of the sampled-softmax training loss",
    "TransferConfig.cl_noise": "noise scale of the layer contrast",
    "TransferConfig.cl_temperature": "temperature of the layer contrast",
    "TransferConfig.weight_decay": "AdamW weight decay",
    "TransferConfig.similarity": "how user and item vectors are compared",
    "ServingConfig.model_dir": "the model folder written by `kinrec train` (or `kinrec.save`)",
    "ServingConfig.db": "the store's SQLAlchemy URL (`KINREC_DB`)",
    "ServingConfig.hnsw_m": "HNSW graph degree (faiss `M`)",
    "ServingConfig.hnsw_ef_search": "HNSW search breadth (faiss `efSearch`)",
    "ServingConfig.event_weights": "weight of each event type in a user's fold-in; a rating is "
    "also scaled by its value",
    "ServingConfig.log_requests": "one JSON log line per request (method, path, route, status, "
    "milliseconds)",
    "EncoderConfig.batch_size": "texts per forward pass",
    "EncoderConfig.sort_by_length": "encode texts of similar length together (little padding); "
    "vectors come back in the caller's order",
    "EncoderConfig.precision": "bfloat16 runs the matrix products in bfloat16 on CPUs that "
    "have it (vectors differ from float32 in the 4th-5th digit)",
    "EncoderConfig.device": "the encoder runs on the CPU",
    "AdaptConfig.rank": "LoRA rank",
    "AdaptConfig.alpha": "LoRA scaling numerator (the update is scaled by alpha / rank)",
    "AdaptConfig.lora_dropout": "dropout on the LoRA path",
    "AdaptConfig.temperature": "temperature of the contrastive losses",
    "AdaptConfig.epochs": "passes over the texts (or, with simcse_weight 0, the pairs)",
    "AdaptConfig.max_steps": "stop after this many steps",
    "AdaptConfig.batch_size": "texts or pairs per step",
    "AdaptConfig.learning_rate": "AdamW learning rate (2e-5 by default for method full)",
    "AdaptConfig.weight_decay": "AdamW weight decay",
    "AdaptConfig.max_seq_length": "token limit per text while training",
    "AdaptConfig.seed": "seed of pair sampling, batches and dropout",
    "AdaptConfig.progress": "show a progress bar (stderr)",
    "KGEConfig.model": "TransE or RotatE",
    "KGEConfig.dim": "embedding size (complex numbers for RotatE)",
    "KGEConfig.gamma": "the score margin: a triple scores gamma minus its distance",
    "KGEConfig.loss": "self-adversarial negative sampling (RotatE's) or a margin ranking loss",
    "KGEConfig.adversarial_temperature": "sharpness of the self-adversarial weights of negatives",
    "KGEConfig.margin": "margin of the margin ranking loss",
    "KGEConfig.negatives": "corrupted triples per true triple",
    "KGEConfig.negative_chunk": "consecutive triples that share their negatives (chunked "
    "sampling, several times faster)",
    "KGEConfig.batch_size": "triples per step",
    "KGEConfig.epochs": "passes over the training triples",
    "KGEConfig.lr": "Adam learning rate",
    "KGEConfig.seed": "seed of the initialisation and the negatives",
}


def _description(cls: type[BaseModel], name: str, attr_docs: dict[str, str]) -> str:
    """The field's description: its own, an attribute docstring, a base's, then NOTES."""
    for klass in cls.__mro__:
        fields = getattr(klass, "__pydantic_fields__", None) or {}
        if name in fields and fields[name].description:
            return fields[name].description
        if klass is cls and name in attr_docs:
            return attr_docs[name]
    for klass in cls.__mro__:
        if f"{klass.__name__}.{name}" in NOTES:
            return NOTES[f"{klass.__name__}.{name}"]
    return ""


def field_rows(
    cls: type[BaseModel], names: typing.Iterable[str] | None = None, option: Any = None
) -> list[str]:
    """Markdown table rows of ``cls``'s fields (``names``: only those)."""
    attr_docs = _attribute_docs(cls)
    rows = []
    for name, field in cls.model_fields.items():
        if names is not None and name not in names:
            continue
        kind = _type_name(field.annotation) + _bounds(field.metadata)
        description = _description(cls, name, attr_docs)
        cells = [f"`{name}`", f"`{_cell(kind)}`", f"`{_cell(_default(field))}`"]
        if option is not None:
            cells.append(option(name))
        cells.append(_cell(_clean_doc(description)))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def table(
    cls: type[BaseModel], names: typing.Iterable[str] | None = None, option: Any = None
) -> list[str]:
    head = ["field", "type", "default"] + (["`kinrec serve` option"] if option else [])
    head.append("description")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + field_rows(cls, names, option)


def _own_fields(cls: type[BaseModel], base: type[BaseModel]) -> list[str]:
    """Fields of ``cls`` that ``base`` lacks or that ``cls`` gives another default or type."""
    own = []
    for name, field in cls.model_fields.items():
        inherited = base.model_fields.get(name)
        if (
            inherited is None
            or _default(inherited) != _default(field)
            or inherited.annotation != field.annotation
            or inherited.description != field.description
        ):
            own.append(name)
    return own


# ------------------------------------------------------------------------------ the page
INTRO = """\
# Configuration reference

Every setting kinrec reads is a field of a typed configuration class: values are checked
when they are read (a wrong name or a value out of range is an error that names the field),
and every class refuses fields it does not know. This page is generated from those classes
by `python scripts/gen_config_reference.py`; the test suite checks that it is current.

In the tables, a default of `unset` means the field is left out (Python: `None`): the model
then decides from the data or chooses on validation, as the description says. Bounds such as
`(>= 1)` are enforced.

## Where settings go

| where | what it sets |
|---|---|
| a pipeline file, `kinrec train --config pipeline.toml` | the sections below: `[data]`, `[store]`, `[split]`, `[model]` with `[model.params]`, `[evaluation]` |
| `kinrec ingest --config FILE`, `kinrec privacy report --config FILE` | the file's `[privacy]` section |
| `kinrec benchmark --config FILE` | one `[models.NAME]` table per model, with that model's fields |
| `kinrec.fit(model, split, params={...})` ([Python](python.md)) | a model's fields |
| `kinrec serve` options | the service's fields that have an option ([below](#the-service-kinrec-serve)) |
| environment variables | the store URL, data and cache folders, the memory limit ([below](#environment-variables)) |

A pipeline file:

```toml
[data]
dataset = "ml-100k"
# text_template = "{title}. {description}"   # item text; default: the data's own (data.md)
[store]
url = "sqlite:///kinrec.db"        # or postgresql+psycopg://...
[split]
method = "random"                  # random | temporal | leave-one-out | cold-item | predefined
ratios = [0.8, 0.1, 0.1]
seed = 2026
[model]
name = "kinformer"
[model.params]
dim = 64
use_kg = true
```

Command-line options win over the file: `kinrec train --config pipeline.toml --model ease`
trains EASE on the file's data and split.
"""  # noqa: E501

ENVIRONMENT = """\
## Environment variables

| variable | what |
|---|---|
| `KINREC_DB` | the store's SQLAlchemy URL, for every command's `--db` (default `sqlite:///kinrec.db`; PostgreSQL: `postgresql+psycopg://user:password@host/dbname`) |
| `KINREC_DATA_DIR` | a folder of datasets (`<folder>/<name>`) used instead of downloading them |
| `KINREC_CACHE_DIR` | where fetched datasets are cached (default: the user's cache directory) |
| `KINREC_PSEUDONYM_KEY` | the pseudonym key, for `kinrec ingest --pseudonymise` and `kinrec serve` over a pseudonymised store, when no key file is given ([privacy](privacy.md)) |
| `KINREC_MEMORY_LIMIT` | the most memory one dense step may hold, e.g. `6GiB` ([memory](memory.md)) |
"""  # noqa: E501


def _serve_option(name: str) -> str:
    """The `kinrec serve` option that sets field ``name``, or a dash."""
    from kinrec.serving.cli import serve

    params = inspect.signature(serve).parameters
    alias = {"log_requests": "access_log"}.get(name, name)
    if alias not in params:
        return "-"
    flag = "--" + alias.replace("_", "-")
    if alias == "access_log":
        return f"`{flag}` / `--no-{flag[2:]}`"
    return f"`{flag}`"


def render() -> str:
    from kinrec.config import (
        DataConfig,
        EvaluationConfig,
        ModelSection,
        PrivacyConfig,
        SplitConfig,
        StoreConfig,
    )
    from kinrec.knowledge.adapt import AdaptConfig
    from kinrec.knowledge.encoder import EncoderConfig
    from kinrec.knowledge.kge import KGEConfig
    from kinrec.models.base import CAPABILITIES, ModelConfig
    from kinrec.models.registry import available_models, get_model_class
    from kinrec.serving.config import ServingConfig
    from kinrec.training.loop import IterativeConfig

    out = [INTRO]
    out.append("## The pipeline file\n")
    for section, cls in (
        ("data", DataConfig),
        ("store", StoreConfig),
        ("split", SplitConfig),
        ("model", ModelSection),
        ("evaluation", EvaluationConfig),
        ("privacy", PrivacyConfig),
    ):
        out.append(f"### `[{section}]`\n")
        if summary := _summary(cls):
            out.append(summary + "\n")
        out.append("\n".join(table(cls)) + "\n")

    models = [(name, get_model_class(name)) for name in available_models()]
    iterative = [name for name, cls in models if issubclass(cls.Config, IterativeConfig)]
    out.append("## Models\n")
    out.append(
        "A model's fields go in `[model.params]` (with `[model] name`), in `[models.NAME]` "
        "for `kinrec benchmark --config`, or in `params=` from Python. `kinrec models` lists "
        "them with their defaults; [models](models.md) says what each model is for.\n"
    )
    out.append("### Every model\n")
    out.append("\n".join(table(ModelConfig)) + "\n")
    out.append("### Models trained in epochs\n")
    out.append(
        f"{', '.join(f'`{n}`' for n in iterative)}: early stopping on validation NDCG@10 "
        "and a time budget. A model's own table repeats a field where its default differs.\n"
    )
    out.append("\n".join(table(IterativeConfig, _own_fields(IterativeConfig, ModelConfig))) + "\n")
    for name, cls in models:
        config = cls.Config
        base = IterativeConfig if issubclass(config, IterativeConfig) else ModelConfig
        own = _own_fields(config, base)
        out.append(f"### `{name}`\n")
        needs = "; ".join(r.describe() for r in cls().requirements())
        uses = ", ".join(CAPABILITIES[c] for c in cls.uses if c in CAPABILITIES)
        line = f"`{cls.__module__}.{cls.__name__}`: "
        line += f"needs {needs} besides interactions" if needs else "interactions"
        if uses:
            line += f"; uses {uses} where the data holds them"
        out.append(line + ".\n")
        if own:
            out.append("\n".join(table(config, own)) + "\n")
        else:
            out.append("No fields besides those of every model above.\n")

    out.append("## The service (`kinrec serve`)\n")
    out.append(
        _summary(ServingConfig) + " Fields without an option are set from Python: "
        "`kinrec.serving.app.create_app(ServingConfig(...))`.\n"
    )
    out.append("\n".join(table(ServingConfig, option=_serve_option)) + "\n")

    out.append("## Text encoder, its adaptation and graph embeddings\n")
    out.append(
        "`kinrec encode`, `kinrec adapt` and `kinrec kg embed` set the main fields through "
        "their options (`--help`); the classes below take them all from Python.\n"
    )
    for title, cls in (
        ("`EncoderConfig` (the bundled MiniLM, `kinrec encode`)", EncoderConfig),
        ("`AdaptConfig` (`kinrec adapt`)", AdaptConfig),
        ("`KGEConfig` (`kinrec kg embed`)", KGEConfig),
    ):
        out.append(f"### {title}\n")
        if summary := _summary(cls):
            out.append(summary + "\n")
        out.append("\n".join(table(cls)) + "\n")

    out.append(ENVIRONMENT)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render()
    undocumented = re.findall(r"^\| `(\w+)` \|.*\|  \|$", text, re.MULTILINE)
    if undocumented and not args.check:
        print(f"fields without a description: {', '.join(undocumented)}", file=sys.stderr)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python scripts/gen_config_reference.py")
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
