"""keras-serve: a REST model server for Keras models."""

__version__ = "0.1.0"
