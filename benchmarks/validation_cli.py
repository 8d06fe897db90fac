"""The command line of the scripts that score fold models on the validation radar (RMI)."""

from __future__ import annotations

import argparse
from pathlib import Path

#: The validation radar: every post-processing and member choice is made there, never on a reported radar.
VALIDATION_RADAR = Path("../shared/radar/rmi-2021-07-04")


def validation_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``checkpoints`` (one or more), ``--radar`` (RMI) and ``--every`` (every third window)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--radar", type=Path, default=VALIDATION_RADAR)
    parser.add_argument("--every", type=int, default=3, help="start a window every N frames")
    return parser
