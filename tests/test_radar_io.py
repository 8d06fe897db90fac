"""The radar loader against files written with known content, and every bad input."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import BOM, KNMI, SHARED, blob_field, write_frame, write_sequence

from nowcast.errors import UserError
from nowcast.io.radar import ZR, expand_paths, open_radar, split_sequences

T0 = pd.Timestamp("2024-05-01 12:00")


def test_accumulation_becomes_rate_with_start_time(radar_dir):
    ds = open_radar(radar_dir)
    rate = ds["rainfall_rate"]
    assert rate.dims == ("time", "y", "x") and rate.shape == (8, 32, 32)
    assert rate.attrs["units"] == "mm h-1"
    np.testing.assert_allclose(rate.values[3], blob_field(3), rtol=1e-5, atol=1e-6)
    assert ds["rainfall_rate"].attrs["grid_mapping"] == "proj" and "proj" in ds
    assert list(split_sequences(ds)[0][0]["time"].values) == list(ds["time"].values)
    assert split_sequences(ds)[0][1] == 5.0


def test_rate_units_and_dbz(tmp_path):
    values = np.full((4, 4), 2.0)
    write_frame(tmp_path / "a.nc", values / 3600.0, T0, kind="rate", units="kg m-2 s-1")
    np.testing.assert_allclose(open_radar(tmp_path / "a.nc")["rainfall_rate"].values, 2.0, rtol=1e-5)
    dbz = 10 * np.log10(200 * 2.0**1.6) * np.ones((4, 4))
    write_frame(tmp_path / "b.nc", dbz, T0, kind="dbz")
    np.testing.assert_allclose(open_radar(tmp_path / "b.nc")["rainfall_rate"].values, 2.0, rtol=1e-5)
    custom = open_radar(tmp_path / "b.nc", zr=ZR(300, 1.5))["rainfall_rate"].values
    np.testing.assert_allclose(custom, (200 * 2.0**1.6 / 300) ** (1 / 1.5), rtol=1e-5)


def test_multi_frame_file_with_time_bounds(tmp_path):
    times = pd.date_range(T0, periods=3, freq="10min")
    acc = np.stack([np.full((3, 3), v) for v in (1.0, 2.0, 0.5)])
    ds = xr.Dataset(
        {
            "rain": (("time", "y", "x"), acc, {"standard_name": "precipitation_amount", "units": "mm"}),
            "time_bnds": (("time", "nv"), np.stack([times - pd.Timedelta("10min"), times], axis=1)),
        },
        coords={"time": ("time", times, {"bounds": "time_bnds"}), "y": np.arange(3.0), "x": np.arange(3.0)},
    )
    units = "minutes since 2000-01-01"  # one encoding for time and its bounds, as CF asks
    ds.to_netcdf(tmp_path / "multi.nc", encoding={"time": {"units": units}, "time_bnds": {"units": units}})
    rate = open_radar(tmp_path / "multi.nc")["rainfall_rate"].values
    np.testing.assert_allclose(rate[:, 0, 0], [6.0, 12.0, 3.0])


def test_accumulation_without_bounds_uses_spacing(tmp_path):
    times = pd.date_range(T0, periods=2, freq="6min")
    ds = xr.Dataset(
        {
            "p": (
                ("time", "y", "x"),
                np.ones((2, 2, 2)),
                {"standard_name": "precipitation_amount", "units": "mm"},
            )
        },
        coords={"time": times, "y": [0.0, 1.0], "x": [0.0, 1.0]},
    )
    ds.to_netcdf(tmp_path / "p.nc")
    np.testing.assert_allclose(open_radar(tmp_path / "p.nc")["rainfall_rate"].values, 10.0)


def test_variable_by_name_and_sorting(tmp_path):
    write_frame(tmp_path / "late.nc", np.ones((4, 4)), T0 + pd.Timedelta("5min"), name="acc", standard_name="x")
    write_frame(tmp_path / "early.nc", np.ones((4, 4)), T0, name="acc", standard_name="x", units="mm")
    with pytest.raises(UserError, match="no precipitation variable"):
        open_radar([tmp_path / "late.nc"])
    ds = open_radar([tmp_path / "late.nc", tmp_path / "early.nc"], variable="acc")
    assert list(ds["time"].values) == [np.datetime64(T0), np.datetime64(T0 + pd.Timedelta("5min"))]


def test_gap_splits_sequences(tmp_path):
    write_sequence(tmp_path, n=4, step_min=5, prefix="a", start="2024-01-01 00:00")
    write_sequence(tmp_path, n=3, step_min=5, prefix="b", start="2024-01-01 01:00")
    parts = split_sequences(open_radar(tmp_path))
    assert [p[0].sizes["time"] for p in parts] == [4, 3]
    assert all(step == 5.0 for _, step in parts)


def test_lazy_open_is_dask_backed(radar_dir):
    ds = open_radar(radar_dir, lazy=True)
    assert hasattr(ds["rainfall_rate"].data, "dask")
    np.testing.assert_allclose(ds["rainfall_rate"].values, open_radar(radar_dir)["rainfall_rate"].values)


def test_paths_with_spaces_and_unicode_and_globs(tmp_path):
    folder = tmp_path / "radar données ☔"
    write_sequence(folder, n=3)
    assert open_radar(folder).sizes["time"] == 3
    assert len(expand_paths(str(folder / "*.nc"))) == 3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.nc", "no such file"),
        (lambda d: (d / "t.txt").write_text("hello") and d / "t.txt", "not a radar file of a known format"),
        (lambda d: _truncated(d), "cannot read|truncated"),
        (lambda d: write_frame(d / "u.nc", np.ones((3, 3)), T0, units="inches"), "unknown units"),
        (lambda d: write_frame(d / "n.nc", np.full((3, 3), np.nan), T0), "missing"),
        (lambda d: write_frame(d / "neg.nc", -np.ones((3, 3)), T0), "mostly negative"),
        (lambda d: write_frame(d / "big.nc", np.full((3, 3), 900.0), T0), "mostly absurd"),
        (lambda d: _duplicates(d), "duplicate time .* different values"),
        (lambda d: _grids(d), "grid"),
        (lambda d: _empty_dir(d), "no radar files"),
        (lambda d: str(d / "*.nope"), "matches no file"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, make, message):
    target = make(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        open_radar(target)
    assert "\n" not in str(info.value)


def _truncated(d):
    good = write_frame(d / "good.nc", np.ones((20, 20)), T0)
    data = good.read_bytes()
    (d / "cut.nc").write_bytes(data[: len(data) // 2])
    return d / "cut.nc"


def _duplicates(d):
    write_frame(d / "a.nc", np.ones((3, 3)), T0)
    write_frame(d / "b.nc", 2 * np.ones((3, 3)), T0)
    return d


def _grids(d):
    write_frame(d / "a.nc", np.ones((3, 3)), T0)
    write_frame(d / "b.nc", np.ones((4, 3)), T0 + pd.Timedelta("5min"))
    return d


def _empty_dir(d):
    (d / "empty").mkdir()
    return d / "empty"


@pytest.mark.shared
def test_bom_rainfields():
    ds = open_radar(BOM, lazy=True)
    assert ds.sizes == {"time": 61, "y": 512, "x": 512}
    assert split_sequences(ds)[0][1] == 6.0
    assert 0 < float(ds["rainfall_rate"].max()) < 200


@pytest.mark.shared
def test_knmi_hdf5_through_pysteps():
    files = sorted(KNMI.glob("*.h5"))[:3]
    ds = open_radar(files)
    assert ds.sizes == {"time": 3, "y": 765, "x": 700}
    assert split_sequences(ds)[0][1] == 5.0
    assert np.isnan(ds["rainfall_rate"].values).any()  # outside coverage stays no-data


def write_odim(path, rate_mm_h: np.ndarray, time: str, quantity: str = "RATE", gain: float = 0.01) -> Path:
    """A minimal ODIM HDF5 composite (what/where/dataset1/data1) on a 1 km LAEA grid."""
    import h5py
    from pyproj import Proj

    ny, nx = rate_mm_h.shape
    proj = "+proj=laea +lat_0=55 +lon_0=10 +x_0=0 +y_0=0 +ellps=WGS84"
    inverse = Proj(proj)
    ll_lon, ll_lat = inverse(-nx * 500.0, -ny * 500.0, inverse=True)
    ur_lon, ur_lat = inverse(nx * 500.0, ny * 500.0, inverse=True)
    with h5py.File(path, "w") as f:
        b = np.bytes_
        f.create_group("what").attrs.update({"object": b("COMP"), "date": b(time[:8]), "time": b(time[8:])})
        f.create_group("where").attrs.update(
            {
                "projdef": b(proj),
                "LL_lon": ll_lon,
                "LL_lat": ll_lat,
                "UR_lon": ur_lon,
                "UR_lat": ur_lat,
                "xscale": 1000.0,
                "yscale": 1000.0,
                "xsize": nx,
                "ysize": ny,
            }
        )
        data = f.create_group("dataset1/data1")
        data.create_group("what").attrs.update(
            {"quantity": b(quantity), "gain": gain, "offset": 0.0, "nodata": 65535.0, "undetect": 0.0}
        )
        raw = np.where(np.isnan(rate_mm_h), 65535, np.round(np.nan_to_num(rate_mm_h) / gain)).astype(np.uint16)
        data.create_dataset("data", data=raw)
    return path


def test_odim_hdf5_through_pysteps(tmp_path):
    pytest.importorskip("pyproj")
    field = blob_field(0, size=24)
    field[0, 0] = np.nan
    write_odim(tmp_path / "a.h5", field, "20240101001000")
    write_odim(tmp_path / "b.h5", blob_field(1, size=24), "20240101001500")
    ds = open_radar(tmp_path)
    assert ds.sizes == {"time": 2, "y": 24, "x": 24}
    np.testing.assert_allclose(np.nan_to_num(ds["rainfall_rate"].values[0]), np.nan_to_num(field), atol=0.006)
    assert np.isnan(ds["rainfall_rate"].values[0, 0, 0])
    assert split_sequences(ds)[0][1] == 5.0
    assert ds["x"].values[1] - ds["x"].values[0] == pytest.approx(1000.0)
    assert "crs" in ds and "proj4_params" in ds["crs"].attrs


# ---------------------------------------------------------------- real archives' dirt
def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def write_fmi_pgm(path, dbz: np.ndarray, time: str) -> Path:
    """A gzipped FMI composite PGM: 8-bit ``2·dBZ + 64``, 255 = no data, metadata in header comments."""
    import gzip

    ny, nx = dbz.shape
    header = [
        "P5",
        f"# obstime {time}",
        "# param CorrectedReflectivity",
        "# metersperpixel_x 1000.0",
        "# metersperpixel_y 1000.0",
        "# projection radar {",
        "# type stereographic",
        "# centrallongitude 25",
        "# centrallatitude 90",
        "# truelatitude 60",
        "# bottomleft 24.000000 60.000000",
        "# topright 24.400000 60.200000",
        "# }",
        f"{nx} {ny}",
        "255",
    ]
    raw = np.where(np.isnan(dbz), 255, np.round(np.nan_to_num(dbz) * 2 + 64)).astype(np.uint8)
    with gzip.open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode() + raw.tobytes())
    return path


def test_fmi_pgm_reflectivity_through_pysteps(tmp_path):
    pytest.importorskip("pyproj")
    dbz = np.full((12, 16), 10.0)
    dbz[3:6, 4:9] = 35.0
    dbz[0, 0] = np.nan
    for minute in (0, 5):
        time = f"2017050910{minute:02d}"
        write_fmi_pgm(tmp_path / f"{time}_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz", dbz, time)
    ds = open_radar(tmp_path)
    assert ds.sizes == {"time": 2, "y": 12, "x": 16}
    assert split_sequences(ds)[0][1] == 5.0
    rate = ds["rainfall_rate"].values[0]
    np.testing.assert_allclose(rate[1:], ZR().rain_rate(dbz)[1:], rtol=1e-5)  # Marshall–Palmer unless told
    assert np.isnan(rate[0, 0]) and rate[4, 5] == pytest.approx((10**3.5 / 200.0) ** (1 / 1.6), rel=1e-5)
    assert ds["x"].values[1] - ds["x"].values[0] == pytest.approx(1000.0)


def write_mch_gif(path, digital_numbers: np.ndarray) -> Path:
    """A MeteoSwiss AQC GIF: 8-bit palette indices (the importer reads the index, not the colour)."""
    from PIL import Image

    image = Image.fromarray(digital_numbers.astype(np.uint8), mode="P")
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    image.save(path, optimize=False)
    return path


def test_mch_gif_accumulation_through_pysteps(tmp_path):
    numbers = np.full((10, 14), 1)  # 0 and 1: no rain
    numbers[2:5, 3:8] = 120  # (10^((120 − 71.5)/20) / 316)^(1/1.5) mm in 5 minutes
    numbers[0, 0] = 255  # outside the radar's range
    for name in ("AQC151351545F_00005.801.gif", "AQC151351550F_00005.801.gif"):
        write_mch_gif(tmp_path / name, numbers)
    ds = open_radar(tmp_path)
    assert ds.sizes == {"time": 2, "y": 10, "x": 14}
    assert ds["time"].values[0] == np.datetime64("2015-05-15T15:45")  # day 135 of 2015
    rate = ds["rainfall_rate"].values[0]
    expected = (10 ** ((120 - 71.5) / 20) / 316.0) ** (1 / 1.5) * 12.0  # mm per 5 min → mm/h
    assert rate[3, 4] == pytest.approx(expected, rel=1e-6)
    assert rate[8, 10] == 0.0 and np.isnan(rate[0, 0])
    assert ds["x"].values[1] - ds["x"].values[0] == pytest.approx(1000.0)


def test_stray_negative_pixel_is_set_to_zero_with_one_warning(tmp_path, caplog):
    field = np.ones((4, 4))
    field[1, 2] = -0.1
    write_frame(tmp_path / "a.nc", field, T0)
    with caplog.at_level(logging.WARNING):
        ds = open_radar(tmp_path / "a.nc")
    assert ds["rainfall_rate"].values[0, 1, 2] == 0.0
    (message,) = _warnings(caplog)
    assert "a.nc" in message and "1 negative pixel" in message


def test_metadata_time_wins_over_the_name_with_one_warning(tmp_path, caplog):
    pytest.importorskip("pyproj")
    write_odim(tmp_path / "radar_202401010015.h5", blob_field(0, size=16), "20240101001000")
    write_odim(tmp_path / "radar_202401010020.h5", blob_field(1, size=16), "20240101002000")
    with caplog.at_level(logging.WARNING):
        ds = open_radar(tmp_path)
    assert list(ds["time"].values) == [np.datetime64("2024-01-01T00:10"), np.datetime64("2024-01-01T00:20")]
    (message,) = _warnings(caplog)
    assert "radar_202401010015.h5" in message and "00:10:00" in message and "00:15:00" in message


def test_isolated_extreme_pixel_becomes_no_data(tmp_path, caplog):
    field = np.ones((4, 4))
    field[0, 0] = 1205.0
    write_frame(tmp_path / "a.nc", field, T0, kind="rate", units="mm h-1")
    with caplog.at_level(logging.WARNING):
        ds = open_radar(tmp_path / "a.nc")
    assert np.isnan(ds["rainfall_rate"].values[0, 0, 0])
    assert np.nansum(ds["rainfall_rate"].values) == 15.0
    assert any("clutter or hail" in m for m in _warnings(caplog))


def test_infinite_pixel_becomes_no_data(tmp_path, caplog):
    field = np.ones((4, 4))
    field[3, 3] = np.inf
    write_frame(tmp_path / "a.nc", field, T0)
    with caplog.at_level(logging.WARNING):
        ds = open_radar(tmp_path / "a.nc")
    assert np.isnan(ds["rainfall_rate"].values[0, 3, 3])
    assert any("non-finite" in m for m in _warnings(caplog))


def test_identical_duplicate_frames_keep_one(tmp_path, caplog):
    write_frame(tmp_path / "a.nc", np.ones((3, 3)), T0)
    write_frame(tmp_path / "b.nc", np.ones((3, 3)), T0)
    with caplog.at_level(logging.WARNING):
        ds = open_radar(tmp_path)
    assert ds.sizes["time"] == 1
    assert any("kept one" in m for m in _warnings(caplog))


def test_truncated_file_among_good_ones_is_skipped_when_asked(tmp_path, caplog):
    write_sequence(tmp_path, n=4)
    good = sorted(tmp_path.glob("*.nc"))[0].read_bytes()
    (tmp_path / "zz_cut.nc").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="zz_cut.nc"):
        open_radar(tmp_path)
    with caplog.at_level(logging.WARNING):
        ds = open_radar(tmp_path, skip_bad=True)
    assert ds.sizes["time"] == 4
    assert any("skipped" in m and "zz_cut.nc" in m for m in _warnings(caplog))


def test_region_keeps_only_the_box(tmp_path):
    write_sequence(tmp_path, n=2, size=16)
    full = open_radar(tmp_path)
    x, y = full["x"].values, full["y"].values
    box = (x[2], x[5], min(y[3], y[9]), max(y[3], y[9]))
    ds = open_radar(tmp_path, region=box)
    assert ds.sizes["x"] == 4 and ds.sizes["y"] == 7
    np.testing.assert_array_equal(ds["rainfall_rate"].values, full["rainfall_rate"].sel(x=ds.x, y=ds.y).values)


def test_unknown_format_lists_the_known_ones(tmp_path):
    write_sequence(tmp_path, n=2)
    with pytest.raises(UserError, match="known formats: cf_netcdf, knmi_hdf5"):
        open_radar(tmp_path, fmt="nexrad")


def test_odim_file_is_sniffed_and_forced_format_agrees(tmp_path):
    pytest.importorskip("pyproj")
    from nowcast.io.formats import sniff_format

    write_odim(tmp_path / "a.h5", blob_field(0, size=24), "20240101001000")
    assert sniff_format(tmp_path / "a.h5") == "odim_hdf5"
    forced = open_radar(tmp_path / "a.h5", fmt="odim_hdf5")
    np.testing.assert_array_equal(forced["rainfall_rate"].values, open_radar(tmp_path / "a.h5")["rainfall_rate"].values)


SHARED_SOURCES = [
    ("mch-2015-05-15", "mch_gif", (640, 710), 5.0, None),
    ("fmi-2017-05-09", "fmi_pgm", (1226, 760), 5.0, None),
    ("rmi-2021-07-04", "odim_hdf5", (700, 700), 5.0, None),
    ("opera-2018-08-24", "opera_hdf5", (2200, 1900), 15.0, None),
    ("mrms-2019-06-10", "mrms_grib", (100, 200), 2.0, (-95.0, -93.0, 40.0, 41.0)),
]


@pytest.mark.shared
@pytest.mark.parametrize(("folder", "fmt", "shape", "step", "region"), SHARED_SOURCES)
def test_every_shared_source_reads(folder, fmt, shape, step, region):
    from nowcast.io.formats import sniff_format

    if fmt == "mrms_grib":
        pytest.importorskip("pygrib")
    files = sorted((SHARED / folder).iterdir())[:3]
    assert sniff_format(files[0]) == fmt
    ds = open_radar(files, region=region)
    assert (ds.sizes["y"], ds.sizes["x"]) == shape
    assert split_sequences(ds)[0][1] == step
    rate = ds["rainfall_rate"].values
    assert np.nanmin(rate) >= 0 and np.nanmax(rate) <= 500


# ---------------------------------------------------------------- bad input, format by format
FMI_NAME = "201705091000_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz"
MCH_NAME = "AQC151351545F_00005.801.gif"


def _cut_in_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _mixed_formats(d: Path) -> Path:
    write_odim(d / "a.h5", blob_field(0, size=24), "20240101001000")
    write_frame(d / "b.nc", blob_field(1, size=24), T0)
    return d


ODIM_TIME, FMI_TIME = "20240101001000", "201705091000"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _cut_in_half(write_odim(d / "a.h5", blob_field(0, size=24), ODIM_TIME)), "truncated or corrupt"),
        (lambda d: write_odim(d / "a.h5", np.full((8, 8), np.nan), ODIM_TIME), "missing"),
        (lambda d: write_odim(d / "a.h5", np.ones((8, 8)), ODIM_TIME, quantity="XYZ"), "none of the quantities"),
        (lambda d: _cut_in_half(write_fmi_pgm(d / FMI_NAME, np.full((8, 8), 20.0), FMI_TIME)), "cannot read as FMI"),
        (lambda d: write_fmi_pgm(d / FMI_NAME, np.full((8, 8), np.nan), FMI_TIME), "missing"),
        (lambda d: _cut_in_half(write_mch_gif(d / MCH_NAME, np.full((8, 8), 120))), "cannot read as MeteoSwiss"),
        (lambda d: write_mch_gif(d / MCH_NAME, np.full((8, 8), 255)), "missing"),
        (_mixed_formats, "coordinates differ"),
    ],
    ids=["odim-truncated", "odim-all-no-data", "odim-wrong-quantity", "fmi-truncated", "fmi-all-no-data",
         "mch-truncated", "mch-all-no-data", "mixed-formats"],
)  # fmt: skip
def test_bad_files_of_every_writable_format_give_one_line_errors(tmp_path, make, message):
    pytest.importorskip("pyproj")
    target = make(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        open_radar(target)
    assert "\n" not in str(info.value)
