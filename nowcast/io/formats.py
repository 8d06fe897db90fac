"""One registry of radar readers, format name → function, and the sniffer that picks one.

A new format is one reader function (path, :class:`~nowcast.io.frames.ReadOptions`) →
:class:`~nowcast.io.frames.Frames` and one line in :data:`READERS`; validation and repair happen
once, after any reader, in :func:`nowcast.io.radar.open_radar`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nowcast.errors import UserError
from nowcast.io import pysteps_readers as ps
from nowcast.io.cf import read_cf_netcdf
from nowcast.io.frames import Frames, ReadOptions, first_line

Reader = Callable[[Path, ReadOptions], Frames]

READERS: dict[str, Reader] = {
    "cf_netcdf": read_cf_netcdf,
    "knmi_hdf5": ps.read_knmi_hdf5,
    "odim_hdf5": ps.read_odim_hdf5,
    "opera_hdf5": ps.read_opera_hdf5,
    "mch_gif": ps.read_mch_gif,
    "fmi_pgm": ps.read_fmi_pgm,
    "mrms_grib": ps.read_mrms_grib,
    "bom_rf3": ps.read_bom_rf3,
}

#: File name endings of radar files, for listing a directory.
RADAR_SUFFIXES = (
    ".nc",
    ".nc4",
    ".netcdf",
    ".h5",
    ".hdf5",
    ".hdf",
    ".cdf",
    ".gif",
    ".pgm",
    ".pgm.gz",
    ".grib2",
    ".grb2",
)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NETCDF3_MAGIC = b"CDF"
GIF_MAGIC = (b"GIF87a", b"GIF89a")
GZIP_MAGIC = b"\x1f\x8b"
PGM_MAGIC = b"P5"
GRIB_MAGIC = b"GRIB"


def get_reader(name: str) -> Reader:
    """The reader of format ``name``; the error lists the known formats."""
    try:
        return READERS[name]
    except KeyError:
        raise UserError(f"unknown format {name!r}; known formats: {', '.join(READERS)}") from None


def is_radar_file(path: Path) -> bool:
    """Whether a file in a directory looks like a radar file (by its name)."""
    return path.name.lower().endswith(RADAR_SUFFIXES)


def sniff_format(path: Path) -> str:
    """The format of ``path`` from its first bytes (and, for HDF5, its groups)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    if magic.startswith(NETCDF3_MAGIC):
        return "cf_netcdf"
    if magic == HDF5_MAGIC:
        return _hdf5_format(path)
    if magic[:6] in GIF_MAGIC:
        return "mch_gif"
    if magic.startswith(PGM_MAGIC) or (magic.startswith(GZIP_MAGIC) and ".pgm" in path.name.lower()):
        return "fmi_pgm"
    if magic.startswith(GRIB_MAGIC):
        return "mrms_grib"
    raise UserError(f"{path}: not a radar file of a known format (known formats: {', '.join(READERS)})")


def _hdf5_format(path: Path) -> str:
    """``cf_netcdf``, ``knmi_hdf5``, ``opera_hdf5`` or ``odim_hdf5`` for an HDF5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "overview" in f and "image1" in f:
                return "knmi_hdf5"
            if "what" in f and "object" in f["what"].attrs:
                source = ps.attr_text(f["what"].attrs.get("source", b""))
                return "opera_hdf5" if "ORG:247" in source or "EUOC" in path.name else "odim_hdf5"
    except OSError as err:
        raise UserError(f"{path}: truncated or corrupt HDF5 ({first_line(err)})") from None
    return "cf_netcdf"


def read_file(path: Path, options: ReadOptions, fmt: str | None = None) -> Frames:
    """Read one file with the reader of ``fmt`` (None: sniffed from the file)."""
    reader = get_reader(fmt) if fmt is not None else READERS[sniff_format(path)]
    return reader(path, options)
