"""The error types the training stack raises for bad input, shared by every data set family."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset file that is corrupt, truncated or inconsistent with the others or the config."""
