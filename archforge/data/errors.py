"""The one error the data layer raises: a dataset that cannot be found or read."""

from __future__ import annotations

from archforge.errors import one_line


class DatasetError(ValueError):
    """A dataset name that resolves to nothing, or data that cannot be read; the message is one line."""

    def __init__(self, message: str):
        self.message = one_line(message)
        super().__init__(self.message)
