"""The error raised for bad input data; its message always names the file, row or field."""


class DataError(ValueError):
    """Bad input data: a missing or corrupt image, an empty caption, a malformed CSV."""
