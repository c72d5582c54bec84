"""Storage on a real database through SQLAlchemy Core (SQLite by default, PostgreSQL by URL)."""

from kinrec.store.ingest import IngestReport, TableReport
from kinrec.store.repository import DEFAULT_URL, Event, Store, UnknownDatasetError, text_hash

__all__ = [
    "DEFAULT_URL",
    "Event",
    "IngestReport",
    "Store",
    "TableReport",
    "UnknownDatasetError",
    "text_hash",
]
