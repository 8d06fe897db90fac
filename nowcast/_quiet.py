"""Import pysteps without its start-up banner on stdout."""

from __future__ import annotations

import contextlib
import io


def import_pysteps():
    """Return the ``pysteps`` module, importing it quietly the first time."""
    with contextlib.redirect_stdout(io.StringIO()):
        import pysteps
    return pysteps
