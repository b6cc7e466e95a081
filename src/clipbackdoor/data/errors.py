"""The error raised for bad input data; its message always names the file, row or field."""

from clipbackdoor.errors import DataError

__all__ = ["DataError"]
