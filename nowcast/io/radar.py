"""Open radar files as one xarray Dataset of rain rate in mm/h; the only code that reads them.

CF netCDF is read natively with xarray; the precipitation variable is found by its CF
``standard_name`` (or a name the user gives) and converted with its ``units``:

* accumulations (``precipitation_amount``…, mm or kg m-2 per interval) ÷ interval, where the
  interval comes from the time bounds, a ``start_time`` variable, or the frame spacing;
* rates (``rainfall_rate``, ``precipitation_flux``…, mm h-1, mm s-1, kg m-2 s-1…);
* reflectivity (``equivalent_reflectivity_factor``, dBZ) through Z = a·R^b.

Other formats (KNMI HDF5, ODIM HDF5) go through pysteps' importers (``nowcast[formats]``).
Every problem a user can cause raises :class:`nowcast.errors.UserError` naming the file.

The result has ``rainfall_rate`` ``(time, y, x)`` float32 in mm h-1 (NaN = no data), the
input's ``x``/``y`` coordinates, its grid-mapping variable when there is one, and the attribute
``source_files``.
"""

from __future__ import annotations

import glob
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from nowcast.errors import UserError

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

#: rain rates above this (mm/h) are rejected as corrupt input
MAX_RATE_MM_H = 1000.0
#: reflectivity is capped here before conversion (hail and clutter), as is common practice
MAX_DBZ = 60.0

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NETCDF3_MAGIC = b"CDF"
RADAR_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5", ".hdf", ".cdf")


@dataclass(frozen=True)
class ZR:
    """Z–R relation Z = a·R^b (Z in mm⁶ m⁻³, R in mm/h); Marshall–Palmer by default."""

    a: float = 200.0
    b: float = 1.6

    def rain_rate(self, dbz: np.ndarray) -> np.ndarray:
        """Rain rate (mm/h) from reflectivity (dBZ), capped at :data:`MAX_DBZ`."""
        z = 10.0 ** (np.minimum(dbz, MAX_DBZ) / 10.0)
        return (z / self.a) ** (1.0 / self.b)


def expand_paths(paths: str | Path | list) -> list[Path]:
    """Files named by ``paths``: files, directories (their radar files) or glob patterns."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        item = str(item)
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RADAR_SUFFIXES)
            if not found:
                raise UserError(f"{path}: directory has no radar files ({', '.join(RADAR_SUFFIXES)})")
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
    zr: ZR = ZR(),
    lazy: bool = False,
) -> xr.Dataset:
    """Open radar frames as rain rate (mm/h), sorted by time.

    Parameters
    ----------
    paths
        Files, directories or glob patterns.
    variable
        Name of the precipitation variable; None finds it by CF ``standard_name``.
    zr
        Z–R relation for reflectivity input.
    lazy
        Keep netCDF data dask-backed (one chunk per file) instead of loading it.

    """
    files = expand_paths(paths)
    bar = tqdm(files, desc="read radar", unit="file", disable=len(files) < 20 or not sys.stderr.isatty(), leave=False)
    frames = [read_file(f, variable, zr, lazy) for f in bar]
    _check_same_grid(frames)
    rate = xr.concat([fr.rate for fr in frames], dim="time", coords="minimal", compat="override", join="override")
    counts = [fr.rate.sizes["time"] for fr in frames]
    order = np.argsort(rate["time"].values, kind="stable")
    rate = rate.isel(time=order)
    sources = [p for fr, n in zip(frames, counts, strict=True) for p in [fr.path] * n]
    sources = [sources[i] for i in order]  # the file of each frame, in time order
    pending = np.repeat([fr.pending_accumulation for fr in frames], counts)[order]
    times = rate["time"].values
    duplicate = np.nonzero(times[1:] == times[:-1])[0]
    if duplicate.size:
        i = duplicate[0]
        raise UserError(f"{sources[i + 1]}: duplicate time {pd.Timestamp(times[i])} (also in {sources[i]})")
    rate = _fill_missing_intervals(rate, pending, sources)
    rate = rate.astype(np.float32)
    rate.attrs = {
        "standard_name": "rainfall_rate",
        "long_name": "rainfall rate",
        "units": "mm h-1",
    }
    ds = xr.Dataset({"rainfall_rate": rate})
    grid_mapping = frames[0].grid_mapping
    if grid_mapping is not None:
        ds[grid_mapping.name] = grid_mapping
        ds["rainfall_rate"].attrs["grid_mapping"] = grid_mapping.name
    ds.attrs["source_files"] = list(dict.fromkeys(str(p) for p in sources))
    _check_values(ds, sources)
    return ds


@dataclass
class _Frames:
    """Frames read from one file before they are joined."""

    path: Path
    rate: xr.DataArray  # (time, y, x), mm/h, or accumulation (mm) if interval is unknown
    grid_mapping: xr.DataArray | None
    pending_accumulation: bool = False


def read_file(path: Path, variable: str | None, zr: ZR, lazy: bool) -> _Frames:
    """Read one radar file into rain-rate frames (see :func:`open_radar`)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    if not (magic.startswith(NETCDF3_MAGIC) or magic == HDF5_MAGIC):
        raise UserError(f"{path}: not a netCDF or HDF5 file")
    if magic == HDF5_MAGIC:
        kind = _hdf5_kind(path)
        if kind != "netcdf":
            return _read_with_pysteps(path, kind, zr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_dataset(path, chunks={} if lazy else None, decode_timedelta=False)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
        raise UserError(f"{path}: cannot read as netCDF ({_first_line(err)})") from None
    try:
        return _from_cf(path, ds, variable, zr, lazy)
    except UserError:
        raise
    except (OSError, RuntimeError) as err:
        raise UserError(f"{path}: truncated or corrupt ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


def _from_cf(path: Path, ds: xr.Dataset, variable: str | None, zr: ZR, lazy: bool) -> _Frames:
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
    grid_mapping = None
    gm_name = ds[name].attrs.get("grid_mapping")
    if gm_name and gm_name in ds.variables:
        grid_mapping = ds[gm_name].load().rename(gm_name)
    rate.name = "rainfall_rate"
    return _Frames(path, rate, grid_mapping, pending)


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


def _check_same_grid(frames: list[_Frames]) -> None:
    first = frames[0]
    for other in frames[1:]:
        a, b = first.rate, other.rate
        if a.shape[1:] != b.shape[1:]:
            raise UserError(f"{other.path}: grid {b.shape[1:]} differs from {first.path} {a.shape[1:]}")
        for axis in ("x", "y"):
            if axis in a.coords and axis in b.coords and not np.allclose(a[axis].values, b[axis].values):
                raise UserError(f"{other.path}: {axis} coordinates differ from {first.path}")


def _check_values(ds: xr.Dataset, sources: list[Path]) -> None:
    rate = ds["rainfall_rate"]
    finite_per_frame = np.asarray(np.isfinite(rate).any(dim=("y", "x")))
    if not finite_per_frame.any():
        raise UserError(f"{sources[0]}: all values are missing (NaN)" + (" in every file" if len(sources) > 1 else ""))
    low = np.asarray(rate.min(dim=("y", "x")))
    high = np.asarray(rate.max(dim=("y", "x")))
    for i, path in enumerate(sources):
        if np.isfinite(low[i]) and low[i] < -1e-3:
            raise UserError(f"{path}: negative precipitation ({low[i]:.3g} mm/h)")
        if np.isfinite(high[i]) and high[i] > MAX_RATE_MM_H:
            raise UserError(f"{path}: absurd rain rate {high[i]:.3g} mm/h (limit {MAX_RATE_MM_H:g})")


def _hdf5_kind(path: Path) -> str:
    """``netcdf``, ``knmi`` or ``odim`` for an HDF5 file."""
    try:
        import h5py
    except ImportError:
        return "netcdf"
    try:
        with h5py.File(path, "r") as f:
            if "overview" in f and "image1" in f:
                return "knmi"
            if "what" in f and "object" in f["what"].attrs:
                return "odim"
    except OSError as err:
        raise UserError(f"{path}: truncated or corrupt HDF5 ({_first_line(err)})") from None
    return "netcdf"


def _read_with_pysteps(path: Path, kind: str, zr: ZR) -> _Frames:
    """KNMI or ODIM HDF5 through pysteps' importers, as rain rate on the file's grid."""
    try:
        from nowcast._quiet import import_pysteps

        pio = import_pysteps().io
    except ImportError:  # pragma: no cover - pysteps is a core dependency
        raise UserError(f"{path}: {kind.upper()} HDF5 needs pysteps (pip install 'nowcast[formats]')") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "knmi":
                precip, _, meta = pio.import_knmi_hdf5(str(path), qty="ACRR", accutime=5.0, pixelsize=1000.0)
            else:
                precip, meta = _import_odim(pio, path)
    except Exception as err:  # noqa: BLE001 - importer failures are bad files
        raise UserError(f"{path}: cannot read as {kind.upper()} HDF5 ({_first_line(err)})") from None
    time = _hdf5_time(path, kind)
    values = np.asarray(precip, dtype=np.float64)
    unit = str(meta.get("unit", ""))
    if unit == "mm":
        values = values * 60.0 / float(meta["accutime"])
    elif unit == "dBZ":
        values = zr.rain_rate(values)
    elif unit != "mm/h":
        raise UserError(f"{path}: unknown units {unit!r} from the {kind.upper()} importer")
    ny, nx = values.shape
    x = meta["x1"] + (np.arange(nx) + 0.5) * meta["xpixelsize"]
    if meta.get("yorigin", "upper") == "upper":
        y = meta["y2"] - (np.arange(ny) + 0.5) * meta["ypixelsize"]
    else:
        y = meta["y1"] + (np.arange(ny) + 0.5) * meta["ypixelsize"]
    rate = xr.DataArray(
        values[None],
        dims=("time", "y", "x"),
        coords={
            "time": [time],
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"}),
        },
        name="rainfall_rate",
    )
    crs = xr.DataArray(np.int8(0), name="crs", attrs=_cf_grid_mapping(meta.get("projection", "")))
    return _Frames(path, rate, crs)


def _import_odim(pio, path: Path) -> tuple[np.ndarray, dict]:
    """ODIM HDF5 through pysteps, trying rain rate, then reflectivity, then accumulation."""
    for qty in ("RATE", "DBZH", "ACRR"):
        try:
            precip, _, meta = pio.import_odim_hdf5(str(path), qty=qty)
        except OSError as err:
            if "not found" in str(err):
                continue
            raise
        if qty == "ACRR":
            meta["accutime"] = _odim_accumulation_minutes(path, meta["accutime"])
        return precip, meta
    raise UserError(f"{path}: ODIM file has none of the quantities RATE, DBZH, ACRR")


def _odim_accumulation_minutes(path: Path, default: float) -> float:
    import h5py

    with h5py.File(path, "r") as f:
        what = f["what"].attrs
        if "startdate" in what and "enddate" in what:
            start = pd.to_datetime(_text(what["startdate"]) + _text(what["starttime"]), format="%Y%m%d%H%M%S")
            end = pd.to_datetime(_text(what["enddate"]) + _text(what["endtime"]), format="%Y%m%d%H%M%S")
            return (end - start).total_seconds() / 60.0
    return default


def _hdf5_time(path: Path, kind: str) -> np.datetime64:
    import h5py

    with h5py.File(path, "r") as f:
        if kind == "knmi":
            raw = f["overview"].attrs["product_datetime_end"]
            text = (raw[0] if np.ndim(raw) else raw).decode()
            return np.datetime64(pd.to_datetime(text, format="%d-%b-%Y;%H:%M:%S.%f"), "ns")
        what = f["what"].attrs
        text = _text(what["date"]) + _text(what["time"])
        return np.datetime64(pd.to_datetime(text, format="%Y%m%d%H%M%S"), "ns")


def _text(value) -> str:
    """An HDF5 string attribute as str (h5py returns bytes or str depending on how it was written)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _cf_grid_mapping(proj4: str) -> dict:
    """CF grid-mapping attributes for a PROJ string (with pyproj), else the PROJ string alone."""
    attrs = {"proj4_params": proj4}
    try:
        from pyproj import CRS

        attrs.update(CRS.from_proj4(proj4).to_cf())
    except Exception:  # noqa: BLE001 - pyproj is optional; keep the PROJ string
        pass
    return attrs


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
