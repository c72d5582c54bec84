"""Typed pipeline configuration, loadable from TOML.

One section per component; defaults live here next to their meaning::

    [data]
    dataset = "ml-100k"            # a registry name (kinrec data list) ...
    # path = "my_data/"            # ... or a directory / file to load
    # format = "recbole"           # recbole | ml-1m | unisrec | table (path = data.toml)
    # text_template = "{title}. {description}"   # item text (default: the data's own)

    [store]
    url = "sqlite:///kinrec.db"    # any SQLAlchemy URL; PostgreSQL works the same way

    [split]
    method = "random"              # random | temporal | leave-one-out | cold-item | predefined
    ratios = [0.8, 0.1, 0.1]
    seed = 2026
    # dir = "splits/ml-100k"       # for method = "predefined"

    [model]
    name = "ease"
    [model.params]                 # validated against the model's own Config
    reg_weight = 250.0

    [evaluation]
    ks = [5, 10, 20, 50]
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kinrec.models.base import ModelConfig
from kinrec.models.registry import get_model_class

DEFAULT_DB_URL = "sqlite:///kinrec.db"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


DEFAULT_DATASET = "ml-100k"


class DataConfig(_Section):
    """Where the data comes from: a registry name or a path with its format; how item fields
    become text.

    ``dataset`` defaults to ml-100k only when neither it nor ``path`` is given; with a path it
    names the stored dataset (default: the data's own name). ``format = "table"``: ``path`` is
    a table mapping (TOML, see :mod:`kinrec.data.table`). ``text_template`` (e.g.
    ``"{title}. {description}"``) replaces the dataset's own template at training time.
    """

    dataset: str | None = None
    path: Path | None = None
    format: Literal["recbole", "ml-1m", "unisrec", "table"] = "recbole"
    text_template: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_dataset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dataset") is None and data.get("path") is None:
            return {**data, "dataset": DEFAULT_DATASET}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.dataset is None and self.path is None:
            raise ValueError("data: give either 'dataset' (a registry name) or 'path'")
        if self.text_template is not None:
            from kinrec.knowledge.text import ItemTemplate

            ItemTemplate(template=self.text_template)  # a syntax error names the template
        return self


class StoreConfig(_Section):
    url: str = DEFAULT_DB_URL


class SplitConfig(_Section):
    """How interactions are split into train / valid / test."""

    method: Literal["random", "temporal", "leave-one-out", "cold-item", "predefined"] = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2026
    cold_fraction: float = Field(0.15, gt=0, lt=1)
    dir: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if abs(sum(self.ratios) - 1.0) > 1e-6:
            raise ValueError(f"split.ratios must sum to 1, got {list(self.ratios)}")
        if self.method == "predefined" and self.dir is None:
            raise ValueError("split.method = 'predefined' needs split.dir")
        return self


class ModelSection(_Section):
    """Which model to train and its parameters (checked against the model's Config)."""

    name: str = "ease"
    params: dict[str, Any] = Field(default_factory=dict)

    def build_config(self, seed: int | None = None) -> ModelConfig:
        cls = get_model_class(self.name)
        params = dict(self.params)
        if seed is not None:
            params["seed"] = seed
        return cls.Config.model_validate(params)

    @model_validator(mode="after")
    def _validate_params(self) -> ModelSection:
        self.build_config()
        return self


class EvaluationConfig(_Section):
    ks: tuple[int, ...] = (5, 10, 20, 50)


class PrivacyConfig(_Section):
    """What ingest does to personal data before it is stored (docs/privacy.md): user ids
    replaced by keyed pseudonyms, quasi-identifiers in user attributes coarsened or dropped.

    ::

        [privacy]
        pseudonymise = true
        key_file = "secrets/pseudonym.key"   # or KINREC_PSEUDONYM_KEY
        coarsen = { zip_code = "prefix:3", age = "bucket:10" }
        drop = ["occupation"]
    """

    pseudonymise: bool = Field(
        False,
        description=(
            "replace user ids by HMAC-SHA256 pseudonyms at ingest (`kinrec ingest "
            "--pseudonymise`); the key comes from `key_file` or KINREC_PSEUDONYM_KEY"
        ),
    )
    key_file: Path | None = Field(
        None,
        description=(
            "a file holding the pseudonym key (at least 32 characters; it wins over "
            "KINREC_PSEUDONYM_KEY); the key is never stored"
        ),
    )
    coarsen: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'user attribute -> rule, applied at ingest: "prefix:N" keeps N characters, '
            '"bucket:W" turns a number into its bucket of width W ("37" -> "30-39")'
        ),
    )
    drop: list[str] = Field(
        default_factory=list, description="user attributes left out of the store at ingest"
    )
    k: int = Field(
        5, ge=2, description="`kinrec privacy report` counts the users in groups smaller than k"
    )

    @model_validator(mode="after")
    def _rules(self) -> PrivacyConfig:
        from kinrec.privacy.quasi import parse_rule

        for name, rule in self.coarsen.items():
            parse_rule(rule, f"privacy.coarsen.{name}")
        both = sorted(set(self.coarsen) & set(self.drop))
        if both:
            raise ValueError(f"privacy: {both[0]!r} is both in coarsen and in drop")
        return self


class PipelineConfig(_Section):
    """The whole pipeline: data -> store -> split -> model -> evaluation."""

    data: DataConfig = Field(default_factory=DataConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        """Load and validate a TOML file; errors name the file and the offending field."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML: {exc}") from None
        try:
            return cls.model_validate(raw)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def model_params_from_toml(path: str | Path, model: str) -> dict[str, Any]:
    """Parameters for ``model`` from a TOML file: ``[models.NAME]`` or ``[model.params]``."""
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    if model in raw.get("models", {}):
        return dict(raw["models"][model])
    section = raw.get("model", {})
    if section.get("name", model) == model:
        return dict(section.get("params", {}))
    return {}


def text_template_from_toml(path: str | Path) -> str | None:
    """``[data] text_template`` of a TOML file (None when unset): how item texts are rendered,
    e.g. ``"{title}"`` for a title-only catalogue (checked by :class:`DataConfig`)."""
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    template = raw.get("data", {}).get("text_template")
    if template is None:
        return None
    try:
        return DataConfig(text_template=template).text_template
    except ValueError as exc:
        raise ValueError(f"{path}: data.text_template: {exc}") from None
