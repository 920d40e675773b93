"""The one exception type for problems in the data a user hands to training.

Every loader in `training.datasets` and the vocabulary files raise `DataError`
when a file is missing, malformed or empty, so a command line can catch this
one type and show its message without a traceback. It subclasses `ValueError`
because a bad input value is what it is; code that already catches
`ValueError` keeps working.
"""

from __future__ import annotations

import os


class DataError(ValueError):
    """A user-caused problem with training data: a bad path, line or split.

    The message names the file and, where one applies, the 1-based line number
    in the `path:line: message` form that editors and terminals turn into a
    link, e.g. `/x/stsa.binary.train:17: expected '<label> <sentence>' with
    label 0 or 1, got 'foo bar'`.

    Args:
        message: What is wrong, written for the person who owns the data.
        path: The file (or directory) the problem is in, if any.
        line_number: The 1-based line within `path`, if the problem is on one
            line.

    Attributes:
        path: As given, or `None`.
        line_number: As given, or `None`.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        line_number: int | None = None,
    ):
        self.path = None if path is None else os.fspath(path)
        self.line_number = line_number
        if self.path is not None and line_number is not None:
            message = f"{self.path}:{line_number}: {message}"
        elif self.path is not None:
            message = f"{self.path}: {message}"
        super().__init__(message)
