"""Model registry: names used on the command line, in TOML configs and in saved models ->
model classes (imported lazily).

A new model is one file: a :class:`~kinrec.models.base.Recommender` subclass with a ``name``,
registered with :func:`register_model` (``kinrec.register_model``), either as the class
itself or as ``"module:Class"`` (imported when first used)::

    register_model("mymodel", "mypackage.mymodel:MyModel")

Every name that reaches the registry (``kinrec train --model``, ``[model] name``,
:func:`create_model`, :meth:`Recommender.load <kinrec.models.base.Recommender.load>` reading a
saved model's manifest) finds it then.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from kinrec.models.base import ModelConfig, Recommender

# name -> "module:Class" (imported only when the model is used) or the class itself.
_MODELS: dict[str, str | type[Recommender]] = {
    "pop": "kinrec.models.popularity:Popularity",
    "itemknn": "kinrec.models.itemknn:ItemKNN",
    "ease": "kinrec.models.ease:EASE",
    "bpr": "kinrec.models.bpr:BPRMF",
    "lightgcn": "kinrec.models.lightgcn:LightGCN",
    "multvae": "kinrec.models.vae:MultVAE",
    "lm-knn": "kinrec.models.content:LMKNN",
    "kg-knn": "kinrec.models.content:KGKNN",
    "kinformer": "kinrec.models.transfer:TransferRecommender",
}

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def available_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_MODELS)


def register_model(name: str, target: str | type[Recommender], *, replace: bool = False) -> None:
    """Register a model class under ``name``.

    ``target`` is the class itself or ``"module:Class"`` (imported when the model is first
    used, so that registering costs no import). The class must subclass
    :class:`~kinrec.models.base.Recommender` and have ``name`` equal to the registered name:
    a saved model is found again by that name. Names are lower-case words (letters, digits,
    ``-``, ``_``, ``.``). A name already registered is refused (``ValueError``) unless
    ``replace=True``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"model name {name!r}: use a lower-case word (letters, digits, '-', '_', '.')"
        )
    if name in _MODELS and not replace:
        raise ValueError(
            f"model {name!r} is already registered (as {_describe(_MODELS[name])}); "
            "pass replace=True to replace it"
        )
    if isinstance(target, str):
        if not _TARGET.fullmatch(target):
            raise ValueError(f"model {name!r}: target {target!r} is not 'module:Class'")
    elif isinstance(target, type):
        _check_class(name, target, repr(target))
    else:
        raise TypeError(
            f"model {name!r}: target must be a Recommender subclass or 'module:Class', "
            f"got {type(target).__name__}"
        )
    _MODELS[name] = target


def _describe(target: str | type[Recommender]) -> str:
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def _check_class(name: str, cls: object, where: str) -> type[Recommender]:
    """``cls`` if it is a Recommender subclass named ``name``; a clear error otherwise."""
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise TypeError(f"model {name!r}: {where} is not a subclass of kinrec's Recommender")
    declared = getattr(cls, "name", None)
    if declared != name:
        raise ValueError(
            f"model {name!r}: {cls.__qualname__}.name is {declared!r}; set name = {name!r} "
            "(a saved model is found again by its name)"
        )
    return cls


def get_model_class(name: str) -> type[Recommender]:
    """The class registered as ``name``; ``KeyError`` listing the known names otherwise."""
    key = name.lower()
    try:
        target = _MODELS[key]
    except KeyError:
        known = ", ".join(available_models())
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None
    if not isinstance(target, str):
        return target
    module, cls = target.split(":")
    found = getattr(importlib.import_module(module), cls, None)
    if found is None:
        raise ImportError(f"model {key!r}: module {module!r} has no {cls!r} ({target})")
    return _check_class(key, found, target)


def create_model(name: str, config: ModelConfig | dict[str, Any] | None = None) -> Recommender:
    """Instantiate a registered model with a config (object, dict, or defaults)."""
    return get_model_class(name)(config)
