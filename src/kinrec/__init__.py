"""kinrec: transfer what a language model and a knowledge graph know into collaborative
filtering, and serve the result in real time.

The Python API (docs/python.md), imported on first use so that ``import kinrec`` stays fast::

    import kinrec

    split = kinrec.split(kinrec.load_dataset("ml-100k"))
    model = kinrec.fit("ease", split)
    kinrec.recommend(model, user="1", k=10)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from kinrec.api import (
        add_items,
        evaluate,
        fit,
        load,
        load_dataset,
        load_split,
        recommend,
        register_model,
        save,
        similar_items,
        split,
    )

__all__ = [
    "__version__",
    "add_items",
    "evaluate",
    "fit",
    "load",
    "load_dataset",
    "load_split",
    "recommend",
    "register_model",
    "save",
    "similar_items",
    "split",
]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from kinrec import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kinrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
