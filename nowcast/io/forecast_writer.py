"""Write a forecast as CF-1.8 netCDF, atomically."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast import __version__
from nowcast.checkpoint import atomic_write


def forecast_dataset(
    observed: xr.Dataset,
    forecast: np.ndarray,
    step_minutes: float,
    attrs: dict[str, str],
) -> xr.Dataset:
    """Wrap a forecast as a CF-1.8 Dataset on the input's grid.

    Parameters
    ----------
    observed
        The input (from :func:`nowcast.io.radar.open_radar`); its last time is the analysis time,
        and its x/y coordinates and grid mapping are copied.
    forecast
        Rain rate in mm/h, ``(n_out, H, W)``.
    step_minutes
        Time between forecast frames.
    attrs
        Extra global attributes (model, checkpoint hash, input files…).

    """
    n_out = forecast.shape[0]
    analysis = observed["time"].values[-1]
    lead = (np.arange(1, n_out + 1) * step_minutes).astype("float64")
    valid = analysis + (lead * 60e9).astype("timedelta64[ns]")
    rate = xr.DataArray(
        forecast.astype(np.float32),
        dims=("time", "y", "x"),
        coords={"time": valid, "y": observed["y"], "x": observed["x"]},
        attrs={
            "standard_name": "rainfall_rate",
            "long_name": "forecast rainfall rate",
            "units": "mm h-1",
        },
    )
    ds = xr.Dataset({"rainfall_rate": rate})
    ds["time"].attrs.update({"standard_name": "time", "long_name": "valid time", "axis": "T"})
    ds = ds.assign_coords(
        lead_time=(
            "time",
            lead,
            {"long_name": "forecast lead time", "units": "minutes", "standard_name": "forecast_period"},
        ),
        forecast_reference_time=((), analysis, {"standard_name": "forecast_reference_time"}),
    )
    gm = observed["rainfall_rate"].attrs.get("grid_mapping")
    if gm and gm in observed:
        ds[gm] = observed[gm]
        ds["rainfall_rate"].attrs["grid_mapping"] = gm
    ds["rainfall_rate"].encoding.update({"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)})
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": "Precipitation nowcast",
        "source": f"nowcast {__version__}",
        "history": f"{now} created by nowcast {__version__}",
        **attrs,
    }
    return ds


def add_probabilities(ds: xr.Dataset, probability: np.ndarray, thresholds: list[float]) -> xr.Dataset:
    """Add ``probability`` ``(threshold, time, y, x)``: P(rain rate ≥ threshold), in [0, 1].

    The ``threshold`` coordinate carries the thresholded quantity's standard name and units (mm/h),
    the CF way of writing threshold-exceedance probabilities; ``probability`` has units ``1`` and
    the forecast's grid mapping. See :mod:`nowcast.probability` for how it is computed.
    """
    threshold = xr.DataArray(
        np.asarray(thresholds, dtype=np.float32),
        dims="threshold",
        attrs={"standard_name": "rainfall_rate", "long_name": "rain rate threshold", "units": "mm h-1"},
    )
    prob = xr.DataArray(
        probability.astype(np.float32),
        dims=("threshold", "time", "y", "x"),
        coords={"threshold": threshold},
        attrs={
            "long_name": "probability of rainfall rate at or above threshold",
            "units": "1",
            "valid_range": np.array([0.0, 1.0], dtype=np.float32),
            "comment": "from the deterministic forecast: fraction of neighbouring pixels at or above the "
            "threshold, the neighbourhood growing with lead time (nowcast.probability)",
        },
    )
    if "grid_mapping" in ds["rainfall_rate"].attrs:
        prob.attrs["grid_mapping"] = ds["rainfall_rate"].attrs["grid_mapping"]
    prob.encoding.update({"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)})
    return ds.assign(probability=prob)


def write_forecast(ds: xr.Dataset, path: str | Path) -> None:
    """Write ``ds`` to netCDF via a temporary file renamed into place."""
    encoding = {"time": {"units": "minutes since 1970-01-01 00:00:00", "dtype": "float64"}}
    atomic_write(path, lambda tmp: ds.to_netcdf(tmp, encoding=encoding, format="NETCDF4"))
