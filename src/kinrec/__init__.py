"""kinrec: transfer what a language model and a knowledge graph know into collaborative filtering."""

__version__ = "0.1.0"
