"""Storage on a real database through SQLAlchemy Core (SQLite by default, PostgreSQL by URL)."""

from kinrec.store.ingest import IngestProgress, IngestReport, TableReport
from kinrec.store.repository import DEFAULT_URL, Event, Store, UnknownDatasetError, text_hash

__all__ = [
    "DEFAULT_URL",
    "Event",
    "IngestProgress",
    "IngestReport",
    "Store",
    "TableReport",
    "UnknownDatasetError",
    "text_hash",
]
