"""Storage on a real database through SQLAlchemy Core (SQLite by default, PostgreSQL by URL)."""
