"""Item text for the language-model encoder: a small template language over item fields.

A template is plain text with ``{field}`` placeholders and optional ``[...]`` sections::

    "{title}[ ({year})].[ Genres: {genres}.]"

* ``{name}`` is replaced by the item's value of the column ``name`` or, when the frame has no
  such column, by the first column listed for ``name`` in :attr:`ItemTemplate.aliases` (so one
  template serves ML-100K's ``movie_title``/``release_year``/``class`` and ML-1M's
  ``title``/``year``/``genres``).
* A value that is missing (absent column, ``None``, NaN, empty tuple) renders as an empty
  string; a tuple of tokens renders joined with :attr:`ItemTemplate.joiner`; an integral float
  renders without ``.0``.
* A ``[...]`` section is kept only when every placeholder inside it is non-empty, so that a
  missing year gives ``"Toy Story."`` rather than ``"Toy Story ()."``. Sections do not nest;
  ``[[``, ``]]``, ``{{`` and ``}}`` are literal brackets and braces.

Rendering never fails on missing or odd values: the output is whitespace-normalised text,
without leading punctuation, and ``""`` when nothing but punctuation is left.

Which template a dataset gets (:func:`template_for`): its own ``Dataset.text_template`` (set
by a loader that knows its format, by a table mapping's ``[items] text_template``, or by the
pipeline's ``[data] text_template``), else :func:`default_template` of its declared fields.
Nothing depends on the dataset's name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kinrec.data.dataset import Dataset

_PLACEHOLDER = re.compile(r"\{([^{}\[\]]*)\}")
_SPACES = re.compile(r"\s+")

MOVIE_ALIASES: dict[str, list[str]] = {
    "title": ["movie_title", "title", "name"],
    "year": ["release_year", "year"],
    "genres": ["class", "genre", "genres"],
}


class ItemTemplate(BaseModel):
    """How an item's fields become one text (see the module docstring for the syntax)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    joiner: str = ", "

    @field_validator("template")
    @classmethod
    def _check(cls, value: str) -> str:
        _parse(value)  # raises ValueError on unbalanced brackets or braces
        return value

    def placeholders(self) -> list[str]:
        """Placeholder names in template order (each once)."""
        names: list[str] = []
        for part in _parse(self.template):
            for kind, text in part:
                if kind == "field" and text not in names:
                    names.append(text)
        return names

    def resolve(self, columns: Iterable[str]) -> dict[str, str | None]:
        """Which column each placeholder reads from ``columns`` (``None``: none, renders empty)."""
        available = set(columns)
        out: dict[str, str | None] = {}
        for name in self.placeholders():
            candidates = [name, *self.aliases.get(name, [])]
            out[name] = next((c for c in candidates if c in available), None)
        return out

    def render(self, values: Mapping[str, Any]) -> str:
        """The text for one item given ``{column: value}`` (placeholders resolved via aliases)."""
        columns = self.resolve(values.keys())
        rendered = {
            name: (render_value(values[col], self.joiner) if col is not None else "")
            for name, col in columns.items()
        }
        return self._fill(rendered)

    def render_frame(self, items: pd.DataFrame) -> list[str]:
        """One text per row of an items frame, in row order."""
        columns = self.resolve(items.columns)
        per_field: dict[str, list[str]] = {}
        for name, col in columns.items():
            if col is None:
                per_field[name] = [""] * len(items)
            else:
                per_field[name] = [render_value(v, self.joiner) for v in items[col].tolist()]
        return [
            self._fill({name: values[i] for name, values in per_field.items()})
            for i in range(len(items))
        ]

    def _fill(self, rendered: Mapping[str, str]) -> str:
        out: list[str] = []
        for section in _parse(self.template):
            optional = section[0] == ("open", "")
            tokens = section[1:] if optional else section
            values = [rendered[text] for kind, text in tokens if kind == "field"]
            if optional and values and not all(values):
                continue
            out.append("".join(text if kind == "text" else rendered[text] for kind, text in tokens))
        text = _SPACES.sub(" ", "".join(out)).strip().lstrip(".,;: ")
        return text if any(ch.isalnum() for ch in text) else ""


def _parse(template: str) -> list[list[tuple[str, str]]]:
    """Split a template into sections; a section is a list of ("text"|"field", value) tokens.

    An optional section starts with the marker token ("open", "").
    """
    sections: list[list[tuple[str, str]]] = [[]]
    in_optional = False
    i = 0
    literal: list[str] = []

    def flush() -> None:
        if literal:
            sections[-1].append(("text", "".join(literal)))
            literal.clear()

    while i < len(template):
        ch = template[i]
        pair = template[i : i + 2]
        if pair in ("[[", "]]", "{{", "}}"):
            literal.append(ch)
            i += 2
            continue
        if ch == "[":
            if in_optional:
                raise ValueError(f"nested '[' at position {i} in template {template!r}")
            flush()
            sections.append([("open", "")])
            in_optional = True
        elif ch == "]":
            if not in_optional:
                raise ValueError(f"unmatched ']' at position {i} in template {template!r}")
            flush()
            sections.append([])
            in_optional = False
        elif ch == "{":
            match = _PLACEHOLDER.match(template, i)
            if match is None:
                raise ValueError(f"unmatched '{{' at position {i} in template {template!r}")
            name = match.group(1).strip()
            if not name:
                raise ValueError(f"empty placeholder at position {i} in template {template!r}")
            flush()
            sections[-1].append(("field", name))
            i = match.end()
            continue
        elif ch == "}":
            raise ValueError(f"unmatched '}}' at position {i} in template {template!r}")
        else:
            literal.append(ch)
        i += 1
    if in_optional:
        raise ValueError(f"unclosed '[' in template {template!r}")
    flush()
    return [s for s in sections if s]


def render_value(value: Any, joiner: str = ", ") -> str:
    """One field value as text; missing values are ``""``."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value) or math.isinf(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, (tuple, list, np.ndarray, pd.Series)):
        parts = [render_value(v, joiner) for v in list(value)]
        return joiner.join(p for p in parts if p)
    return str(value).strip()


# ------------------------------------------------------------------------- default templates

MOVIELENS = ItemTemplate(template="{title}[ ({year})].[ Genres: {genres}.]", aliases=MOVIE_ALIASES)
"""Titles with a release year and genres: ``"Toy Story (1995). Genres: Animation, Comedy."``
(the form :func:`default_template` gives the text field ``title`` with the attributes
``year`` and ``genres``; usable as a template for data whose fields have other names)."""

TITLE_FIELDS = ("title", "movie_title")
YEAR_FIELDS = ("year", "release_year")
GENRE_FIELDS = ("genres", "genre", "class")


def _label(field: str) -> str:
    words = field.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def derived_template(text_fields: Sequence[str], attribute_fields: Sequence[str]) -> ItemTemplate:
    """A template from declared fields: text fields as sentences, then ``Label: a, b.`` each.

    ``(["title"], ["color", "tags"])`` gives ``"[{title}. ][Color: {color}. ][Tags: {tags}. ]"``
    (each part optional, so missing fields drop out).
    """
    parts = [f"[{{{f}}}. ]" for f in text_fields]
    parts += [f"[{_label(f)}: {{{f}}}. ]" for f in attribute_fields]
    return ItemTemplate(template="".join(parts) if parts else "")


def default_template(text_fields: Sequence[str], attribute_fields: Sequence[str]) -> ItemTemplate:
    """The template for a dataset that declares none, from its fields alone.

    As :func:`derived_template` (text fields first, then attributes), with one convention for
    titled releases: a title text field (``title``, ``movie_title``) with a year attribute
    (``year``, ``release_year``) reads ``"Title (Year)."``, and the genre attribute that goes
    with them (``genres``, ``genre``, ``class``) ``"Genres: a, b."``. MovieLens data, in its
    original files or RecBole's, so reads ``"Toy Story (1995). Genres: Animation, Comedy."``
    """
    title = next((f for f in text_fields if f in TITLE_FIELDS), None)
    year = next((f for f in attribute_fields if f in YEAR_FIELDS), None)
    if title is None or year is None:
        return derived_template(text_fields, attribute_fields)
    genre = next((f for f in attribute_fields if f in GENRE_FIELDS), None)
    parts = [f"{{{title}}}[ ({{{year}}})]. "]
    parts += [f"[{{{f}}}. ]" for f in text_fields if f != title]
    parts += [
        f"[{'Genres' if f == genre else _label(f)}: {{{f}}}. ]"
        for f in attribute_fields
        if f != year
    ]
    return ItemTemplate(template="".join(parts))


def template_for(dataset: Dataset) -> ItemTemplate:
    """The dataset's own ``text_template``, else :func:`default_template` of its fields.

    With no declared fields at all, every non-id column of the items frame is used as an
    attribute. Nothing depends on the dataset's name.
    """
    if dataset.text_template is not None:
        return ItemTemplate(template=dataset.text_template, aliases=MOVIE_ALIASES)
    text, attrs = list(dataset.text_fields), list(dataset.attribute_fields)
    if not text and not attrs:
        attrs = [c for c in dataset.items.columns if c != "item_id"]
    return default_template(text, attrs)


def check_template(template: str, fields: Sequence[str]) -> ItemTemplate:
    """Parse ``template`` and check that each placeholder names one of ``fields`` (directly or
    through :data:`MOVIE_ALIASES`); ``ValueError`` naming the first that does not."""
    parsed = ItemTemplate(template=template, aliases=MOVIE_ALIASES)
    missing = [name for name, column in parsed.resolve(fields).items() if column is None]
    if missing:
        known = ", ".join(fields) or "none"
        raise ValueError(
            f"template placeholder {{{missing[0]}}} is not an item field (fields: {known})"
        )
    return parsed


def render_item_texts(
    dataset: Dataset, template: ItemTemplate | str | None = None
) -> list[tuple[str, str]]:
    """``(item_id, text)`` for every row of ``dataset.items``, in table order.

    ``template`` may be an :class:`ItemTemplate`, a template string (aliases of
    :data:`MOVIE_ALIASES` apply), or ``None`` for :func:`template_for` (the dataset's
    ``text_template``, else the default of its fields).
    """
    if template is None:
        template = template_for(dataset)
    elif isinstance(template, str):
        template = ItemTemplate(template=template, aliases=MOVIE_ALIASES)
    items = dataset.items
    if "item_id" not in items.columns or len(items) == 0:
        return []
    ids = [str(i) for i in items["item_id"].tolist()]
    return list(zip(ids, template.render_frame(items), strict=True))
