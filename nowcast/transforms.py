"""Reversible maps between physical values (rain rate in mm/h) and model space.

Pure functions: ``encode`` and ``decode`` return new arrays and never modify their input. The
transform's parameters are saved in each checkpoint so that ``predict`` inverts exactly what
training applied.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

KINDS = ("identity", "log1p")

#: Rain rates below this (mm/h) are no rain: radars report none below about this rate, and what
#: some report there is their noise floor, not rain (FMI's reflectivity composite, converted by
#: Z-R, is 0.0004–0.1 mm/h on nine pixels in ten where it does not rain). The baselines' dB
#: transform, the network's inputs and training windows, and its forecasts all use it.
RAIN_FLOOR_MM_H = 0.1


def dry_below_floor(rates: np.ndarray, floor: float = RAIN_FLOOR_MM_H) -> np.ndarray:
    """A copy of ``rates`` (mm/h, any shape) with values below ``floor`` set to 0; NaN stays NaN."""
    return np.where(rates < floor, np.zeros((), dtype=rates.dtype), rates)


@dataclass(frozen=True)
class Transform:
    """Value transform.

    ``identity``: model value = physical value (Moving-MNIST intensities in [0, 1]).
    ``log1p``: model value ``x = log(1 + R) / log(1 + scale_mm_h)``, R in mm/h, so ``R = scale``
    maps to 1; ``decode`` is the exact inverse, clipped at 0 mm/h.
    """

    kind: str = "identity"
    scale_mm_h: float = 100.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown transform {self.kind!r}; choose one of {KINDS}")
        if self.scale_mm_h <= 0:
            raise ValueError(f"scale_mm_h must be positive, got {self.scale_mm_h}")

    def encode(self, values: ArrayT) -> ArrayT:
        """Physical values to model space (NaN stays NaN)."""
        if self.kind == "identity":
            return values * 1.0
        log1p = torch.log1p if isinstance(values, torch.Tensor) else np.log1p
        return log1p(values) / math.log1p(self.scale_mm_h)

    def decode(self, values: ArrayT) -> ArrayT:
        """Model space to physical values."""
        if self.kind == "identity":
            return values * 1.0
        if isinstance(values, torch.Tensor):
            return torch.expm1(values * math.log1p(self.scale_mm_h)).clamp_min(0.0)
        return np.maximum(np.expm1(values * math.log1p(self.scale_mm_h)), 0.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Transform:
        """Inverse of :meth:`to_dict`."""
        return cls(kind=str(values["kind"]), scale_mm_h=float(values["scale_mm_h"]))
