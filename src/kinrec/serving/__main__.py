"""``python -m kinrec.serving serve|keys ...``."""

from kinrec.serving.cli import app

if __name__ == "__main__":
    app()
