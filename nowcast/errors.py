"""The error type for user mistakes: reported as one line, exit status 2, no traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (a path, a file, a flag); the message names the file and the problem."""
