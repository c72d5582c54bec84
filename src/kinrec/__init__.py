"""kinrec: transfer what a language model and a knowledge graph know into collaborative
filtering, and serve the result in real time."""

__version__ = "0.1.0"
