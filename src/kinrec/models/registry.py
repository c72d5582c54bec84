"""Model registry: names used on the command line -> model classes (imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

from kinrec.models.base import ModelConfig, Recommender

# name -> "module:Class"; modules are imported only when the model is used.
_MODELS: dict[str, str] = {
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


def available_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_MODELS)


def get_model_class(name: str) -> type[Recommender]:
    """The class registered as ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        target = _MODELS[name.lower()]
    except KeyError:
        known = ", ".join(available_models())
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, config: ModelConfig | dict[str, Any] | None = None) -> Recommender:
    """Instantiate a registered model with a config (object, dict, or defaults)."""
    return get_model_class(name)(config)
