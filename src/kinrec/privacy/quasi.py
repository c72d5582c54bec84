"""Quasi-identifiers in user attributes: coarsen or drop them at ingest, and measure
k-anonymity (the smallest group of users who share every attribute value).

A rule is written as text in ``[privacy] coarsen = {FIELD = "RULE"}``:

* ``prefix:N``: keep the first N characters (``"85364"`` -> ``"853"`` with ``prefix:3``);
* ``bucket:W``: a number becomes its bucket of width W (``"37"`` -> ``"30-39"`` with
  ``bucket:10``; a non-integer width or value gives ``"[2.5,5)"``); a value that is not a
  number is an error naming the file, line and field.

``[privacy] drop = [FIELD, ...]`` leaves fields out of the store altogether. Missing values stay
missing. Nothing depends on a field's name: the configuration names the fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd

from kinrec.data.dataset import Dataset
from kinrec.data.errors import DataError


@dataclass(frozen=True)
class CoarsenRule:
    """One coarsening: ``prefix`` keeps ``size`` characters, ``bucket`` rounds down to a
    multiple of ``size``."""

    kind: Literal["prefix", "bucket"]
    size: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.size:g}"

    def apply(self, value: str) -> str:
        """The coarsened value; ValueError (no location) for a non-number under ``bucket``."""
        if self.kind == "prefix":
            return value[: int(self.size)]
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"not a finite number: {value!r}")
        low = math.floor(number / self.size) * self.size
        if float(self.size).is_integer() and float(low).is_integer():
            return f"{int(low)}-{int(low + self.size) - 1}"
        return f"[{low:g},{low + self.size:g})"


def parse_rule(text: str, field: str = "coarsen") -> CoarsenRule:
    """``"prefix:3"`` or ``"bucket:10"`` as a :class:`CoarsenRule`; ValueError naming
    ``field`` otherwise."""
    kind, sep, size_text = str(text).partition(":")
    kind = kind.strip()
    if not sep or kind not in ("prefix", "bucket"):
        raise ValueError(f"{field}: unknown rule {text!r} (use 'prefix:N' or 'bucket:WIDTH')")
    try:
        size = float(size_text)
    except ValueError:
        raise ValueError(f"{field}: {text!r}: {size_text.strip()!r} is not a number") from None
    if not math.isfinite(size) or size <= 0:
        raise ValueError(f"{field}: {text!r}: the size must be a positive number")
    if kind == "prefix" and not size.is_integer():
        raise ValueError(f"{field}: {text!r}: a prefix length is a whole number of characters")
    return CoarsenRule(kind, size)  # type: ignore[arg-type]


def _location(frame: pd.DataFrame, pos: int) -> tuple[str, int]:
    """``(file, line)`` of row ``pos`` of a loader's frame (``<users>``, 1-based row without
    source information)."""
    attrs = frame.attrs
    parts = attrs.get("parts")
    if parts is None and attrs.get("source") is not None:
        parts = [(attrs["source"], attrs.get("first_line"), len(frame))]
    offset = pos
    for i, (source, first, rows) in enumerate(parts or []):
        if offset < rows or i == len(parts) - 1:
            return str(source), offset + 1 if first is None else int(first) + offset
        offset -= rows
    return "<users>", pos + 1


def protect_user_attributes(
    dataset: Dataset, coarsen: Mapping[str, str], drop: Sequence[str]
) -> Dataset:
    """A copy of ``dataset`` whose user attributes are coarsened by ``coarsen`` (field ->
    rule text) and without the fields in ``drop``. A field named that the user table does not
    declare is an error (a typo would otherwise leave the field as it was)."""
    if not coarsen and not drop:
        return dataset
    declared = list(dataset.user_attribute_fields)
    for where, names in (("privacy.coarsen", list(coarsen)), ("privacy.drop", list(drop))):
        for name in names:
            if name not in declared:
                known = ", ".join(declared) or "none"
                raise DataError(
                    f"{where} names {name!r}, which is not a user attribute field (the user "
                    f"table has: {known})",
                    file=_location(dataset.users, 0)[0] if len(dataset.users) else None,
                    field=name,
                )
    both = sorted(set(coarsen) & set(drop))
    if both:
        raise DataError("a field is both coarsened and dropped", field=both[0])
    users = dataset.users.drop(columns=list(drop)).copy()
    users.attrs = dict(dataset.users.attrs)
    for name, text in coarsen.items():
        rule = parse_rule(text, f"privacy.coarsen.{name}")
        values = users[name].to_numpy(dtype=object)
        out: list[Any] = []
        for pos, value in enumerate(values):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                out.append(value)
                continue
            try:
                out.append(rule.apply(str(value)))
            except ValueError:
                file, line = _location(dataset.users, pos)
                raise DataError(
                    f"{rule} needs a number, got {value!r}", file=file, line=line, field=name
                ) from None
        users[name] = pd.Series(out, index=users.index, dtype=object)
    kept = [f for f in declared if f not in set(drop)]
    return replace(dataset, users=users, user_attribute_fields=kept)


@dataclass(frozen=True)
class AnonymityReport:
    """k-anonymity of a user table over ``columns``: users, groups of identical values,
    the smallest group (k) and how many users are in groups smaller than ``threshold``."""

    users: int
    columns: tuple[str, ...]
    groups: int
    smallest: int
    threshold: int
    below: int  # users in groups smaller than threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "columns": list(self.columns),
            "groups": self.groups,
            "k": self.smallest,
            "threshold": self.threshold,
            "users_below_threshold": self.below,
        }


def k_anonymity(users: pd.DataFrame, columns: Sequence[str], threshold: int = 5) -> AnonymityReport:
    """Group ``users`` by ``columns`` (a missing value is a value of its own): the smallest
    group's size is the table's k. No columns: one group of everyone; no users: k = 0."""
    columns = tuple(columns)
    n = len(users)
    if n == 0:
        return AnonymityReport(0, columns, 0, 0, threshold, 0)
    if not columns:
        sizes = pd.Series([n])
    else:
        frame = users[list(columns)].astype(object).fillna("\x00missing")
        sizes = frame.groupby(list(columns), dropna=False).size()
    small = sizes[sizes < threshold]
    return AnonymityReport(n, columns, len(sizes), int(sizes.min()), threshold, int(small.sum()))
