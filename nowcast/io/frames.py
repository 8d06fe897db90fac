"""What every radar reader returns, and the settings every reader takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

#: reflectivity is capped here before conversion (hail and clutter), as is common practice
MAX_DBZ = 60.0


@dataclass(frozen=True)
class ZR:
    """Z–R relation Z = a·R^b (Z in mm⁶ m⁻³, R in mm/h); Marshall–Palmer by default."""

    a: float = 200.0
    b: float = 1.6

    def rain_rate(self, dbz):
        """Rain rate (mm/h) from reflectivity (dBZ), capped at :data:`MAX_DBZ`."""
        z = 10.0 ** (np.minimum(dbz, MAX_DBZ) / 10.0)
        return (z / self.a) ** (1.0 / self.b)


@dataclass(frozen=True)
class ReadOptions:
    """Settings for every reader.

    Attributes
    ----------
    variable
        Precipitation variable of a CF netCDF file; None finds it by ``standard_name``.
    zr
        Z–R relation for reflectivity.
    lazy
        Keep netCDF data dask-backed instead of loading it.
    region
        ``(x_min, x_max, y_min, y_max)`` in the data's coordinates (metres, or degrees on a lon/lat
        grid); only that box is kept (and, for MRMS, only that box is decoded).

    """

    variable: str | None = None
    zr: ZR = ZR()
    lazy: bool = False
    region: tuple[float, float, float, float] | None = None


@dataclass
class Frames:
    """Frames read from one file before they are joined.

    ``rate`` is ``(time, y, x)`` in mm/h (or an accumulation in mm when ``pending_accumulation``:
    its interval is the frame spacing, known only once files are joined).
    """

    path: Path
    rate: xr.DataArray
    grid_mapping: xr.DataArray | None
    pending_accumulation: bool = False


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def crop_to_region(rate: xr.DataArray, region: tuple[float, float, float, float] | None) -> xr.DataArray:
    """Keep the pixels whose centres lie in ``region`` ``(x_min, x_max, y_min, y_max)``."""
    if region is None:
        return rate
    from nowcast.errors import UserError

    if "x" not in rate.coords or "y" not in rate.coords:
        raise UserError("--region needs x/y coordinates, and this file has none")
    x_min, x_max, y_min, y_max = region
    x, y = rate["x"].values, rate["y"].values
    keep_x = np.nonzero((x >= x_min) & (x <= x_max))[0]
    keep_y = np.nonzero((y >= y_min) & (y <= y_max))[0]
    if keep_x.size == 0 or keep_y.size == 0:
        raise UserError(
            f"region {region} lies outside the data (x {x.min():g} to {x.max():g}, y {y.min():g} to {y.max():g})"
        )
    return rate.isel(x=slice(keep_x[0], keep_x[-1] + 1), y=slice(keep_y[0], keep_y[-1] + 1))
