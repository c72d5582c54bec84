"""How much memory a dense step may take, and a clear refusal before it takes more.

Some steps allocate dense matrices that grow with the square of the catalogue (EASE's
item-item Gram matrix and its inverse, kinformer's linear head) or with users x items
(score batches). Before such an allocation a model asks :func:`require` (refuse) or
:func:`fits` (choose another path) whether it fits in the memory it may use, which is the
smallest of:

* ``KINREC_MEMORY_LIMIT``: a size such as ``6GiB``, ``500MB``, ``1.5G`` or a number of bytes.
  It caps what one dense step holds at once (the matrices it keeps alive together), not the
  process's total: the model, the data and earlier steps come on top;
* the headroom of the process's control group: its limit (``memory.max``, or cgroup v1's
  ``memory.limit_in_bytes``) minus its usage, reclaimable file cache not counted as used;
* ``MemAvailable`` in ``/proc/meminfo``, read at the time of the check.

Where none of them is known (no ``/proc``, no variable), there is no bound. A step that
does not fit either switches to a path that needs less (smaller blocks or batches, a model
part skipped, with a logged warning and a ``fit_info`` entry) or raises
:class:`MemoryLimitError`, whose message names the step, the matrix sizes, the memory they
need, the memory that may be used and how to raise it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV = "KINREC_MEMORY_LIMIT"
GIB = 1024**3

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number


class MemoryLimitError(MemoryError):
    """A dense step needs more memory than it may use (see the module docstring)."""


def parse_size(text: str | int | float) -> int:
    """Bytes in ``"6GiB"``, ``"500MB"``, ``"1.5G"``, ``"2e9"`` or ``1024`` (k/M/G/T are
    powers of 1000, Ki/Mi/Gi/Ti powers of 1024, case-insensitive); ``ValueError`` otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"not a memory size: {text!r} (examples: 6GiB, 500MB, 1.5G, 2000000000)"
            )
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return size


def format_bytes(n: float) -> str:
    """``n`` bytes in GiB with two decimals (MiB below 0.1 GiB, bytes below 1 MiB)."""
    if n >= 0.1 * GIB:
        return f"{n / GIB:,.2f} GiB"
    if n >= 1024**2:
        return f"{n / 1024**2:,.1f} MiB"
    return f"{int(n):,} bytes"


def configured_limit() -> int | None:
    """``KINREC_MEMORY_LIMIT`` in bytes (None when unset or empty)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ValueError(f"{ENV}: {exc}") from None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path, *keys: str) -> int:
    """The first of ``keys`` found in a cgroup ``memory.stat`` file (0 when none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    values = dict(line.split(maxsplit=1) for line in lines if " " in line)
    for key in keys:
        if key in values:
            try:
                return int(values[key])
            except ValueError:
                return 0
    return 0


def _cgroup_dirs(root: Path = Path("/sys/fs/cgroup")) -> list[tuple[Path, str]]:
    """Candidate cgroup folders with their version: the process's own (from
    ``/proc/self/cgroup``) and the mount's root, v2 and v1."""
    own_v2, own_v1 = "", ""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hier, controllers, path = [*line.split(":", 2), "", ""][:3]
            if hier == "0" and not controllers:
                own_v2 = path
            elif "memory" in controllers.split(","):
                own_v1 = path
    except OSError:
        pass
    dirs = [(root / own_v2.lstrip("/"), "v2"), (root, "v2")]
    dirs += [(root / "memory" / own_v1.lstrip("/"), "v1"), (root / "memory", "v1")]
    return dirs


def cgroup_headroom() -> int | None:
    """Bytes the process's control group may still take (None: no cgroup limit found)."""
    best = None
    for folder, version in _cgroup_dirs():
        if version == "v2":
            limit = _read_int(folder / "memory.max")
            usage = _read_int(folder / "memory.current")
            cache = _stat(folder / "memory.stat", "inactive_file")
        else:
            limit = _read_int(folder / "memory.limit_in_bytes")
            usage = _read_int(folder / "memory.usage_in_bytes")
            cache = _stat(folder / "memory.stat", "total_inactive_file", "inactive_file")
        if limit is None or limit >= _UNLIMITED:
            continue
        headroom = max(limit - max((usage or 0) - cache, 0), 0)
        best = headroom if best is None else min(best, headroom)
    return best


def available_memory() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class Allowance:
    """The memory a dense step may use now (``None``: no bound known) and which bound set it."""

    bytes: int | None
    source: str
    remedy: str

    def describe(self) -> str:
        if self.bytes is None:
            return "no limit"
        return f"{format_bytes(self.bytes)} ({self.source})"


def allowance() -> Allowance:
    """The smallest of the configured limit, the cgroup's headroom and MemAvailable, now."""
    bounds: list[tuple[int, str, str]] = []
    limit = configured_limit()
    if limit is not None:
        bounds.append(
            (
                limit,
                f"{ENV}={os.environ[ENV].strip()}",
                f"raise {ENV} (e.g. {ENV}=32GiB) if the machine has the memory",
            )
        )
    headroom = cgroup_headroom()
    if headroom is not None:
        bounds.append(
            (
                headroom,
                "the headroom of this process's cgroup memory limit",
                "raise the container's memory limit (cgroup memory.max) or stop what else "
                "runs in it",
            )
        )
    available = available_memory()
    if available is not None:
        bounds.append(
            (
                available,
                "MemAvailable in /proc/meminfo",
                "free memory (stop other jobs) or run on a machine with more",
            )
        )
    if not bounds:
        return Allowance(None, "no bound known", "")
    size, source, remedy = min(bounds, key=lambda b: b[0])
    return Allowance(size, source, remedy)


@dataclass(frozen=True)
class Dense:
    """A dense array a step is about to hold: what it is, its shape and dtype, and how many
    arrays of that size live at once."""

    label: str
    shape: tuple[int, ...]
    dtype: np.dtype | type | str = np.float64
    copies: float = 1.0

    @property
    def nbytes(self) -> int:
        size = int(np.prod([int(s) for s in self.shape], dtype=np.float64))
        return int(size * np.dtype(self.dtype).itemsize * self.copies)

    def describe(self) -> str:
        dims = " x ".join(f"{int(s):,}" for s in self.shape)
        text = f"{self.label} ({dims} {np.dtype(self.dtype).name}"
        if self.copies != 1:
            text += f", {self.copies:g} at once"
        return text + ")"


def needed(*arrays: Dense) -> int:
    """Bytes the arrays take together."""
    return sum(a.nbytes for a in arrays)


def fits(*arrays: Dense, spare: int = 0) -> bool:
    """Whether the arrays (plus ``spare`` bytes) fit in what may be used now."""
    limit = allowance().bytes
    return limit is None or needed(*arrays) + spare <= limit


def shortfall(step: str, *arrays: Dense, hint: str = "") -> str | None:
    """None when the arrays fit now; otherwise the one-line explanation
    :func:`require` raises."""
    room = allowance()
    need = needed(*arrays)
    if room.bytes is None or need <= room.bytes:
        return None
    described = [a.describe() for a in arrays]
    parts = described[0] if len(described) == 1 else ", ".join(described[:-1])
    if len(described) > 1:
        parts += f" and {described[-1]}"
    message = (
        f"{step} needs {format_bytes(need)} of memory for {parts}, and may use "
        f"{room.describe()}: {room.remedy}"
    )
    return message + (f", or {hint}" if hint else "")


def require(step: str, *arrays: Dense, hint: str = "") -> None:
    """Raise :class:`MemoryLimitError` unless the arrays fit in what may be used now."""
    message = shortfall(step, *arrays, hint=hint)
    if message is not None:
        raise MemoryLimitError(message)


def short_reason(*arrays: Dense) -> str:
    """``"needs X GiB, may use Y GiB (source)"``: for ``fit_info`` and warnings."""
    return f"needs {format_bytes(needed(*arrays))}, may use {allowance().describe()}"


def rows_that_fit(row_bytes: int, wanted: int, share: float = 0.5) -> int:
    """How many rows of ``row_bytes`` each, at most ``wanted``, take no more than ``share``
    of what may be used now (at least 1): the size of a score batch."""
    limit = allowance().bytes
    if limit is None or row_bytes <= 0:
        return max(int(wanted), 1)
    return int(max(1, min(int(wanted), int(limit * share) // int(row_bytes))))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks on this platform
        return max(1, os.cpu_count() or 1)
