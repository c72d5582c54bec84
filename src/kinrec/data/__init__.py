"""Dataset model, loaders per format, dataset registry and splits."""

from kinrec.data.dataset import Dataset, IdMap, Interactions, Split
from kinrec.data.errors import DataError

__all__ = ["DataError", "Dataset", "IdMap", "Interactions", "Split"]
