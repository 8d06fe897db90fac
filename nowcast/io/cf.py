"""CF netCDF radar files, read natively with xarray.

The precipitation variable is found by its CF ``standard_name`` (or a name the user gives) and
converted with its ``units``:

* accumulations (``precipitation_amount``…, mm or kg m-2 per interval) ÷ interval, where the
  interval comes from the time bounds, a ``start_time`` variable, or the frame spacing;
* rates (``rainfall_rate``, ``precipitation_flux``…, mm h-1, mm s-1, kg m-2 s-1…);
* reflectivity (``equivalent_reflectivity_factor``, dBZ) through Z = a·R^b.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast.errors import UserError
from nowcast.io.frames import ZR, Frames, ReadOptions, crop_to_region, first_line

RATE_NAMES = ("rainfall_rate", "precipitation_flux", "lwe_precipitation_rate", "precipitation_rate")
ACCUMULATION_NAMES = ("precipitation_amount", "rainfall_amount", "lwe_thickness_of_precipitation_amount")
REFLECTIVITY_NAMES = ("equivalent_reflectivity_factor",)

#: units → factor to mm/h (rates) or to mm (accumulations)
RATE_UNITS = {
    "mm h-1": 1.0, "mm/h": 1.0, "mm hr-1": 1.0, "mm/hr": 1.0, "mm h**-1": 1.0, "kg m-2 h-1": 1.0,
    "mm s-1": 3600.0, "mm/s": 3600.0, "kg m-2 s-1": 3600.0, "m s-1": 3.6e6,
}  # fmt: skip
ACCUMULATION_UNITS = {"mm": 1.0, "kg m-2": 1.0, "kg/m2": 1.0, "kg m**-2": 1.0, "m": 1000.0}
REFLECTIVITY_UNITS = ("dbz",)


def read_cf_netcdf(path: Path, options: ReadOptions) -> Frames:
    """Read one CF netCDF file (netCDF-3 or netCDF-4) into rain-rate frames."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_dataset(path, chunks={} if options.lazy else None, decode_timedelta=False)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        raise UserError(f"{path}: cannot read as netCDF ({first_line(err)})") from None
    try:
        frames = _from_cf(path, ds, options.variable, options.zr, options.lazy, options.region)
    except UserError:
        raise
    except (OSError, RuntimeError) as err:
        raise UserError(f"{path}: truncated or corrupt ({first_line(err)})") from None
    return frames


def _find_variable(path: Path, ds: xr.Dataset, variable: str | None) -> tuple[str, str]:
    if variable is not None:
        if variable not in ds.data_vars:
            raise UserError(f"{path}: no variable {variable!r} (has {sorted(map(str, ds.data_vars))})")
        standard = ds[variable].attrs.get("standard_name", "")
        kind = _kind_of(standard) or _kind_from_units(ds[variable].attrs.get("units", ""))
        if kind is None:
            raise UserError(f"{path}: cannot tell whether {variable!r} is a rate, accumulation or dBZ")
        return variable, kind
    for name, var in ds.data_vars.items():
        kind = _kind_of(var.attrs.get("standard_name", ""))
        if kind is not None and var.ndim >= 2:
            return str(name), kind
    raise UserError(
        f"{path}: no precipitation variable (no standard_name of "
        f"{', '.join(RATE_NAMES + ACCUMULATION_NAMES + REFLECTIVITY_NAMES)}; name one with --variable)"
    )


def _kind_of(standard_name: str) -> str | None:
    if standard_name in RATE_NAMES:
        return "rate"
    if standard_name in ACCUMULATION_NAMES:
        return "accumulation"
    if standard_name in REFLECTIVITY_NAMES:
        return "reflectivity"
    return None


def _kind_from_units(units: str) -> str | None:
    units = units.strip()
    if units in RATE_UNITS:
        return "rate"
    if units in ACCUMULATION_UNITS:
        return "accumulation"
    if units.lower() in REFLECTIVITY_UNITS:
        return "reflectivity"
    return None


def _time_values(path: Path, ds: xr.Dataset, var: xr.DataArray) -> tuple[np.ndarray, np.ndarray | None]:
    """Valid times of the frames, and accumulation start times when the file states them."""
    time_dim = next((d for d in var.dims if np.issubdtype(ds[d].dtype, np.datetime64)), None) if var.ndim == 3 else None
    if time_dim is not None:
        times = ds[time_dim].values
        bounds_name = ds[time_dim].attrs.get("bounds")
        starts = ds[bounds_name].values[:, 0] if bounds_name in ds else None
        return times, starts
    for name in ("time", "valid_time"):
        if name in ds.variables and np.issubdtype(ds[name].dtype, np.datetime64) and ds[name].size == 1:
            start = ds["start_time"].values.reshape(1) if "start_time" in ds.variables else None
            return ds[name].values.reshape(1), start
    raise UserError(f"{path}: no time information (a time dimension or a time/valid_time variable)")


def _from_cf(
    path: Path, ds: xr.Dataset, variable: str | None, zr: ZR, lazy: bool, region: tuple | None = None
) -> Frames:
    name, kind = _find_variable(path, ds, variable)
    var = ds[name]
    if var.ndim not in (2, 3):
        raise UserError(f"{path}: {name} has dims {var.dims}, expected (y, x) or (time, y, x)")
    times, starts = _time_values(path, ds, var)
    units = str(var.attrs.get("units", "")).strip()
    if var.ndim == 2:
        var = var.expand_dims(time=1)
    y_dim, x_dim = var.dims[-2:]
    var = var.rename({var.dims[0]: "time", y_dim: "y", x_dim: "x"}).assign_coords(time=("time", times))
    var = var.drop_vars([c for c in var.coords if c not in ("time", "y", "x")])
    if region is not None:
        var = crop_to_region(var, region)
    if not lazy:
        var = var.load()
    pending = False
    if kind == "rate":
        if units not in RATE_UNITS:
            raise UserError(f"{path}: unknown units {units!r} for rain rate {name} (known: {list(RATE_UNITS)})")
        rate = var * RATE_UNITS[units]
    elif kind == "accumulation":
        if units not in ACCUMULATION_UNITS:
            raise UserError(
                f"{path}: unknown units {units!r} for accumulation {name} (known: {list(ACCUMULATION_UNITS)})"
            )
        rate = var * ACCUMULATION_UNITS[units]
        if starts is not None:
            minutes = (times - starts) / np.timedelta64(1, "m")
            if np.any(minutes <= 0):
                raise UserError(f"{path}: accumulation interval is not positive")
            rate = rate * xr.DataArray(60.0 / minutes, dims="time")
        else:
            pending = True
    else:
        if units.lower() not in REFLECTIVITY_UNITS:
            raise UserError(f"{path}: unknown units {units!r} for reflectivity {name} (expected dBZ)")
        rate = zr.rain_rate(var)
    rate.name = "rainfall_rate"
    return Frames(path, rate, _grid_mapping(ds, name), pending)


def _grid_mapping(ds: xr.Dataset, name: str) -> xr.DataArray | None:
    gm_name = ds[name].attrs.get("grid_mapping")
    if gm_name and gm_name in ds.variables:
        return ds[gm_name].load().rename(gm_name)
    return None
