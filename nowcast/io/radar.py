"""Open radar files as one xarray Dataset of rain rate in mm/h; the only code that reads them.

Each file is read by the reader of its format (:mod:`nowcast.io.formats`: CF netCDF natively,
KNMI/ODIM/OPERA HDF5, MeteoSwiss GIF, FMI PGM, MRMS GRIB2 and BoM Rainfields3 through pysteps'
importers), the frames are joined in time order, and the values are checked and repaired once,
here, after any reader.

Real archives are dirty; the policy (each repair logs one warning naming the file and the count):

* non-finite values (±inf) become no-data (NaN);
* negative values (processing left-overs, e.g. −0.1 mm) become 0; a frame whose valid pixels are
  mostly negative is refused;
* rates above :data:`MAX_RATE_MM_H` (clutter, hail; OPERA has 1,200 mm/h pixels) become no-data;
  a frame whose valid pixels are mostly above it is refused;
* identical duplicate frames: one is kept; duplicates that differ are refused, naming both files;
* a file whose metadata time differs from the time in its name: the metadata wins, with a warning
  (:func:`nowcast.io.pysteps_readers.checked_time`);
* with ``skip_bad=True`` (training, evaluation) unreadable files are skipped with a warning; by
  default (predict) they are refused.

The result has ``rainfall_rate`` ``(time, y, x)`` float32 in mm h-1 (NaN = no data), the
input's ``x``/``y`` coordinates, its grid-mapping variable when there is one, and the attribute
``source_files``.
"""

from __future__ import annotations

import glob
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from nowcast.errors import UserError
from nowcast.io.formats import READERS, is_radar_file, read_file
from nowcast.io.frames import ZR, Frames, ReadOptions

__all__ = ["ZR", "ReadOptions", "expand_paths", "open_radar", "split_sequences", "MAX_RATE_MM_H"]

log = logging.getLogger(__name__)

#: rain rates above this (mm/h) are clutter or hail, not rain: they become no-data
MAX_RATE_MM_H = 500.0
#: a frame is refused when more than this fraction of its valid pixels is negative or extreme
REFUSE_FRACTION = 0.5


def expand_paths(paths: str | Path | list) -> list[Path]:
    """Files named by ``paths``: files, directories (their radar files) or glob patterns."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        item = str(item)
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_radar_file(p))
            if not found:
                raise UserError(f"{path}: directory has no radar files (formats: {', '.join(READERS)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not found:
                raise UserError(f"{item}: pattern matches no file")
            files.extend(found)
        else:
            raise UserError(f"{path}: no such file or directory")
    if not files:
        raise UserError("no input files given")
    return files


def open_radar(
    paths: str | Path | list,
    variable: str | None = None,
    zr: ZR | None = None,
    lazy: bool = False,
    fmt: str | None = None,
    region: tuple[float, float, float, float] | None = None,
    skip_bad: bool = False,
) -> xr.Dataset:
    """Open radar frames as rain rate (mm/h), sorted by time, checked and repaired.

    Parameters
    ----------
    paths
        Files, directories or glob patterns.
    variable
        Name of the precipitation variable of CF netCDF files; None finds it by ``standard_name``.
    zr
        Z–R relation for reflectivity input (default Marshall–Palmer).
    lazy
        Keep netCDF data dask-backed (one chunk per file) instead of loading it.
    fmt
        Format name (a key of :data:`nowcast.io.formats.READERS`); None sniffs each file.
    region
        ``(x_min, x_max, y_min, y_max)`` in the data's coordinates; only that box is kept.
    skip_bad
        Skip unreadable files with a warning instead of refusing the input.

    """
    files = expand_paths(paths)
    options = ReadOptions(variable=variable, zr=zr or ZR(), lazy=lazy, region=region)
    bar = tqdm(files, desc="read radar", unit="file", disable=len(files) < 20 or not sys.stderr.isatty(), leave=False)
    frames = []
    for path in bar:
        try:
            frames.append(read_file(path, options, fmt))
        except UserError as err:
            if not skip_bad or len(files) == 1:
                raise
            log.warning("warning: skipped %s", err)
    if not frames:
        raise UserError(f"{files[0]}: no readable radar file among {len(files)}")
    _check_same_grid(frames)
    rate = xr.concat([fr.rate for fr in frames], dim="time", coords="minimal", compat="override", join="override")
    counts = [fr.rate.sizes["time"] for fr in frames]
    order = np.argsort(rate["time"].values, kind="stable")
    rate = rate.isel(time=order)
    sources = [p for fr, n in zip(frames, counts, strict=True) for p in [fr.path] * n]
    sources = [sources[i] for i in order]  # the file of each frame, in time order
    pending = np.repeat([fr.pending_accumulation for fr in frames], counts)[order]
    rate, sources, pending = _drop_duplicates(rate, sources, pending)
    rate = _fill_missing_intervals(rate, pending, sources)
    rate = rate.astype(np.float32)
    rate.attrs = {"standard_name": "rainfall_rate", "long_name": "rainfall rate", "units": "mm h-1"}
    if not lazy:
        rate = _repair_values(rate, sources)
    ds = xr.Dataset({"rainfall_rate": rate})
    grid_mapping = frames[0].grid_mapping
    if grid_mapping is not None:
        ds[grid_mapping.name] = grid_mapping
        ds["rainfall_rate"].attrs["grid_mapping"] = grid_mapping.name
    ds.attrs["source_files"] = list(dict.fromkeys(str(p) for p in sources))
    _check_not_empty(ds, sources)
    return ds


def _drop_duplicates(rate: xr.DataArray, sources: list[Path], pending: np.ndarray) -> tuple:
    """Keep one of identical frames at the same time (warn); refuse different ones."""
    times = rate["time"].values
    duplicate = np.nonzero(times[1:] == times[:-1])[0]
    if not duplicate.size:
        return rate, sources, pending
    drop = []
    for i in duplicate:
        a, b = rate.isel(time=i).values, rate.isel(time=i + 1).values
        if not np.array_equal(a, b, equal_nan=True):
            raise UserError(
                f"{sources[i + 1]}: duplicate time {pd.Timestamp(times[i])} with different values "
                f"(also in {sources[i]})"
            )
        log.warning(
            "warning: %s repeats the frame of %s at %s; kept one", sources[i + 1], sources[i], pd.Timestamp(times[i])
        )
        drop.append(i + 1)
    keep = np.setdiff1d(np.arange(len(times)), drop)
    return rate.isel(time=keep), [sources[i] for i in keep], pending[keep]


def _repair_values(rate: xr.DataArray, sources: list[Path]) -> xr.DataArray:
    """Apply the dirt policy of this module to every frame (see the module docstring)."""
    values = rate.values  # (T, H, W), a float32 copy owned by this array
    for i, path in enumerate(sources):
        frame = values[i]
        infinite = np.isinf(frame)
        if infinite.any():
            log.warning("warning: %s: %d non-finite pixel(s) set to no-data", path, int(infinite.sum()))
            frame[infinite] = np.nan
        valid = np.isfinite(frame)
        n_valid = max(int(valid.sum()), 1)
        negative = valid & (frame < 0)
        extreme = valid & (frame > MAX_RATE_MM_H)
        if negative.sum() > REFUSE_FRACTION * n_valid:
            raise UserError(f"{path}: mostly negative precipitation (min {np.nanmin(frame):.3g} mm/h); not rain data")
        if extreme.sum() > REFUSE_FRACTION * n_valid:
            raise UserError(f"{path}: mostly absurd rain rates (above {MAX_RATE_MM_H:g} mm/h); not rain data")
        if negative.any():
            log.warning(
                "warning: %s: %d negative pixel(s) (min %.3g mm/h) set to 0",
                path,
                int(negative.sum()),
                float(frame[negative].min()),
            )
            frame[negative] = 0.0
        if extreme.any():
            log.warning(
                "warning: %s: %d pixel(s) above %g mm/h (max %.3g; clutter or hail) set to no-data",
                path,
                int(extreme.sum()),
                MAX_RATE_MM_H,
                float(frame[extreme].max()),
            )
            frame[extreme] = np.nan
    return rate.copy(data=values)


def _check_not_empty(ds: xr.Dataset, sources: list[Path]) -> None:
    rate = ds["rainfall_rate"]
    if not bool(np.isfinite(rate).any()):
        raise UserError(f"{sources[0]}: all values are missing (NaN)" + (" in every file" if len(sources) > 1 else ""))


def _fill_missing_intervals(rate: xr.DataArray, pending: np.ndarray, sources: list[Path]) -> xr.DataArray:
    """Divide accumulations with no stated interval (``pending`` frames) by the frame spacing."""
    if not pending.any():
        return rate
    times = rate["time"].values
    if len(times) < 2:
        raise UserError(f"{sources[0]}: accumulation without time bounds needs two or more frames")
    spacing = float(np.min(np.diff(times) / np.timedelta64(1, "m")))
    factor = np.where(pending, 60.0 / spacing, 1.0)
    return rate * xr.DataArray(factor, dims="time")


def _check_same_grid(frames: list[Frames]) -> None:
    first = frames[0]
    for other in frames[1:]:
        a, b = first.rate, other.rate
        if a.shape[1:] != b.shape[1:]:
            raise UserError(f"{other.path}: grid {b.shape[1:]} differs from {first.path} {a.shape[1:]}")
        for axis in ("x", "y"):
            if axis in a.coords and axis in b.coords and not np.allclose(a[axis].values, b[axis].values):
                raise UserError(f"{other.path}: {axis} coordinates differ from {first.path}")


def split_sequences(ds: xr.Dataset) -> list[tuple[xr.Dataset, float]]:
    """Split at gaps or irregular steps into regular sequences ``[(dataset, step_minutes)]``.

    The nominal step is the smallest spacing between frames; wherever the spacing differs
    from it a new sequence starts, so frames are never bridged over a gap. A single frame
    forms a sequence with step NaN.
    """
    times = ds["time"].values
    if len(times) == 1:
        return [(ds, float("nan"))]
    minutes = np.diff(times) / np.timedelta64(1, "m")
    step = float(minutes.min())
    breaks = np.nonzero(~np.isclose(minutes, step))[0] + 1
    bounds = [0, *breaks.tolist(), len(times)]
    return [(ds.isel(time=slice(a, b)), step) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
