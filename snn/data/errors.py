"""The error types the training stack raises for bad input, shared by every data set family (defined
in :mod:`snn.errors`; re-exported here)."""

from snn.errors import DataError

__all__ = ["DataError"]
