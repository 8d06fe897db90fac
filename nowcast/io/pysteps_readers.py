"""Radar formats read through pysteps' importers, one small function each.

Each reader takes a path and :class:`~nowcast.io.frames.ReadOptions` and returns
:class:`~nowcast.io.frames.Frames` of rain rate on the file's grid. Importer settings are those of
the pysteps examples (the ``pystepsrc`` file in the pysteps package). The valid time comes from the
file's metadata where the format has it (KNMI, ODIM), else from the file name.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from nowcast.errors import UserError
from nowcast.io.frames import Frames, ReadOptions, crop_to_region, first_line

log = logging.getLogger(__name__)


def _pysteps_io():
    from nowcast._quiet import import_pysteps

    return import_pysteps().io


def _import(path: Path, fmt: str, importer: Callable, **kwargs) -> tuple[np.ndarray, dict]:
    """Call a pysteps importer; any failure becomes one line naming the file and the format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            precip, _, meta = importer(str(path), **kwargs)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - importer failures are bad files
        raise UserError(f"{path}: cannot read as {fmt} ({first_line(err)})") from None
    return np.asarray(precip, dtype=np.float64), meta


def to_frames(path: Path, precip: np.ndarray, meta: dict, time: np.datetime64, options: ReadOptions) -> Frames:
    """Turn an importer's ``(precip, metadata)`` into rain-rate frames with CF coordinates."""
    unit = str(meta.get("unit", ""))
    if unit == "mm":
        values = precip * 60.0 / float(meta["accutime"])
    elif unit == "dBZ":
        values = options.zr.rain_rate(precip)
    elif unit == "mm/h":
        values = precip
    else:
        raise UserError(f"{path}: unknown units {unit!r} from the pysteps importer")
    ny, nx = values.shape
    x = meta["x1"] + (np.arange(nx) + 0.5) * meta["xpixelsize"]
    if meta.get("yorigin", "upper") == "upper":
        y = meta["y2"] - (np.arange(ny) + 0.5) * meta["ypixelsize"]
    else:
        y = meta["y1"] + (np.arange(ny) + 0.5) * meta["ypixelsize"]
    projection = str(meta.get("projection", ""))
    lonlat = "longlat" in projection or "latlong" in projection
    if lonlat:
        x_attrs = {"standard_name": "longitude", "units": "degrees_east"}
        y_attrs = {"standard_name": "latitude", "units": "degrees_north"}
    else:
        unit = str(meta.get("cartesian_unit", "m"))
        x_attrs = {"standard_name": "projection_x_coordinate", "units": unit}
        y_attrs = {"standard_name": "projection_y_coordinate", "units": unit}
    rate = xr.DataArray(
        values[None].astype(np.float32),
        dims=("time", "y", "x"),
        coords={"time": [time], "y": ("y", y, y_attrs), "x": ("x", x, x_attrs)},
        name="rainfall_rate",
    )
    rate = crop_to_region(rate, options.region)
    crs = xr.DataArray(np.int8(0), name="crs", attrs=cf_grid_mapping(projection))
    return Frames(path, rate, crs)


def cf_grid_mapping(proj4: str) -> dict:
    """CF grid-mapping attributes for a PROJ string (with pyproj), else the PROJ string alone."""
    attrs = {"proj4_params": proj4}
    try:
        from pyproj import CRS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attrs.update(CRS.from_proj4(proj4).to_cf())
    except Exception:  # noqa: BLE001 - pyproj is optional; keep the PROJ string
        pass
    return attrs


# ---------------------------------------------------------------- times
#: (regex on the file name, strptime format of the captured text)
NAME_TIMES = (
    (r"(\d{8}-\d{6})", "%Y%m%d-%H%M%S"),
    (r"(?<!\d)(\d{14})(?!\d)", "%Y%m%d%H%M%S"),
    (r"(?<!\d)(\d{12})(?!\d)", "%Y%m%d%H%M"),
    (r"(\d{8}_\d{6})", "%Y%m%d_%H%M%S"),
)


def time_from_name(path: Path, patterns=NAME_TIMES) -> np.datetime64:
    """The valid time written in a file name (the first pattern that parses)."""
    for regex, fmt in patterns:
        match = re.search(regex, path.name)
        if match:
            try:
                return np.datetime64(pd.to_datetime(match.group(1), format=fmt), "ns")
            except ValueError:
                continue
    raise UserError(f"{path}: no date and time in the file name (expected e.g. YYYYmmddHHMM)")


def checked_time(path: Path, time: np.datetime64) -> np.datetime64:
    """The time from the file's metadata; one warning when its name says another time.

    Archives get renamed and re-stamped; the metadata is what the radar wrote, so it wins. A name
    without a date and time is not checked.
    """
    try:
        named = time_from_name(path)
    except UserError:
        return time
    if named != time:
        log.warning(
            "warning: %s: the file's metadata says %s, its name %s; using the metadata",
            path,
            pd.Timestamp(time).strftime("%Y-%m-%d %H:%M:%S"),
            pd.Timestamp(named).strftime("%Y-%m-%d %H:%M:%S"),
        )
    return time


def attr_text(value) -> str:
    """An HDF5 string attribute as str (h5py gives bytes or str, depending on how it was written)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _h5_attrs(path: Path, group: str) -> dict:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return dict(f[group].attrs)
    except (OSError, KeyError) as err:
        raise UserError(f"{path}: truncated or corrupt HDF5 ({first_line(err)})") from None


def _odim_datetime(what: dict, date_key: str, time_key: str) -> pd.Timestamp:
    """An ODIM ``what`` group's date and time attributes (``YYYYmmdd``, ``HHMMSS``) as one timestamp."""
    return pd.to_datetime(attr_text(what[date_key]) + attr_text(what[time_key]), format="%Y%m%d%H%M%S")


def odim_time(path: Path) -> np.datetime64:
    """Nominal time of an ODIM HDF5 file (``what/date`` + ``what/time``), checked against its name."""
    return checked_time(path, np.datetime64(_odim_datetime(_h5_attrs(path, "what"), "date", "time"), "ns"))


# ---------------------------------------------------------------- readers
def read_knmi_hdf5(path: Path, options: ReadOptions) -> Frames:
    """KNMI composite HDF5 (5-minute accumulation, mm)."""
    precip, meta = _import(
        path, "KNMI HDF5", _pysteps_io().import_knmi_hdf5, qty="ACRR", accutime=5.0, pixelsize=1000.0
    )
    raw = _h5_attrs(path, "overview")["product_datetime_end"]
    text = attr_text(raw[0] if np.ndim(raw) else raw)
    time = np.datetime64(pd.to_datetime(text, format="%d-%b-%Y;%H:%M:%S.%f"), "ns")
    return to_frames(path, precip, meta, checked_time(path, time), options)


def read_odim_hdf5(path: Path, options: ReadOptions) -> Frames:
    """ODIM HDF5 composite: rain rate, else reflectivity, else accumulation."""
    importer = _pysteps_io().import_odim_hdf5
    for qty in ("RATE", "DBZH", "ACRR"):
        try:
            precip, meta = _import(path, "ODIM HDF5", importer, qty=qty)
        except UserError as err:
            if "not found" in str(err):
                continue
            raise
        if qty == "ACRR":
            meta["accutime"] = _odim_accumulation_minutes(path, meta["accutime"])
        return to_frames(path, precip, meta, odim_time(path), options)
    raise UserError(f"{path}: ODIM file has none of the quantities RATE, DBZH, ACRR")


def _odim_accumulation_minutes(path: Path, default: float) -> float:
    what = _h5_attrs(path, "what")
    if "startdate" in what and "enddate" in what:
        start = _odim_datetime(what, "startdate", "starttime")
        return (_odim_datetime(what, "enddate", "endtime") - start).total_seconds() / 60.0
    return default


def read_opera_hdf5(path: Path, options: ReadOptions) -> Frames:
    """EUMETNET OPERA composite (ODIM HDF5 rain rate, mm/h)."""
    precip, meta = _import(path, "OPERA HDF5", _pysteps_io().import_opera_hdf5, qty="RATE")
    return to_frames(path, precip, meta, odim_time(path), options)


def read_mch_gif(path: Path, options: ReadOptions) -> Frames:
    """MeteoSwiss AQC GIF (5-minute accumulation, mm); the time is in the name (``AQC%y%j%H%M``)."""
    precip, meta = _import(path, "MeteoSwiss GIF", _pysteps_io().import_mch_gif, product="AQC", unit="mm", accutime=5)
    time = time_from_name(path, ((r"AQC(\d{9})", "%y%j%H%M"), *NAME_TIMES))
    return to_frames(path, precip, meta, time, options)


def read_fmi_pgm(path: Path, options: ReadOptions) -> Frames:
    """FMI composite PGM (reflectivity, dBZ; gzipped when the name ends in .gz)."""
    gzipped = path.suffix.lower() == ".gz"
    precip, meta = _import(path, "FMI PGM", _pysteps_io().import_fmi_pgm, gzipped=gzipped)
    return to_frames(path, precip, meta, time_from_name(path), options)


def read_bom_rf3(path: Path, options: ReadOptions) -> Frames:
    """BoM Rainfields 3 netCDF through pysteps (accumulation over the frame interval, mm)."""
    precip, meta = _import(path, "BoM Rainfields3", _pysteps_io().import_bom_rf3)
    return to_frames(path, precip, meta, time_from_name(path), options)


def read_mrms_grib(path: Path, options: ReadOptions) -> Frames:
    """NOAA MRMS GRIB2 rain rate (needs pygrib); with a region only that box is decoded."""
    try:
        import pygrib  # noqa: F401
    except ImportError:
        raise UserError(f"{path}: MRMS GRIB2 needs pygrib (pip install 'nowcast[grib]')") from None
    kwargs: dict = {"window_size": 1}
    if options.region is not None:
        x_min, x_max, y_min, y_max = options.region
        # pysteps compares the extent with longitudes in 0..360
        kwargs["extent"] = (x_min % 360.0, x_max % 360.0, y_min, y_max)
    precip, meta = _import(path, "MRMS GRIB2", _pysteps_io().import_mrms_grib, **kwargs)
    if precip.size == 0:
        raise UserError(f"{path}: region {options.region} holds no MRMS pixel (lon/lat degrees)")
    if meta["x1"] > 180.0:
        meta = {**meta, "x1": meta["x1"] - 360.0}
    meta["projection"] = "+proj=longlat +ellps=WGS84"
    return to_frames(path, precip, meta, time_from_name(path), ReadOptions(zr=options.zr))
