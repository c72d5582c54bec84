"""Recommendation models, all behind :class:`kinrec.models.base.Recommender`."""

from kinrec.models.base import ModelConfig, Recommender, Scored
from kinrec.models.registry import available_models, create_model, get_model_class

__all__ = [
    "ModelConfig",
    "Recommender",
    "Scored",
    "available_models",
    "create_model",
    "get_model_class",
]
