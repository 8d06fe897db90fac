"""Property-based tests: any input either works or gets the one-line error; no stray files."""

import builtins

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import write_frame, write_sequence
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nowcast import predict
from nowcast.errors import UserError
from nowcast.io import radar as radar_io
from nowcast.io.radar import open_radar

UNITS = ["kg m-2", "mm", "mm h-1", "mm/h", "kg m-2 s-1", "dBZ", "inches", "", "K"]
STANDARD = ["precipitation_amount", "rainfall_rate", "equivalent_reflectivity_factor", "air_temperature", ""]


@st.composite
def radar_files(draw, folder):
    folder.mkdir(parents=True, exist_ok=True)
    n = draw(st.integers(1, 4))
    ny, nx = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(["float32", "float64", "int16"]))
    units = draw(st.sampled_from(UNITS))
    standard = draw(st.sampled_from(STANDARD))
    offsets = sorted(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    fill = draw(st.one_of(st.floats(-5, 2000), st.just(float("nan"))))
    nan_fraction = draw(st.sampled_from([0.0, 0.3, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    for k, minutes in enumerate(offsets):
        values = rng.gamma(0.5, 2.0, (ny, nx)) * draw(st.sampled_from([0.01, 1.0, 100.0]))
        values[rng.random((ny, nx)) < 0.1] = fill
        if dtype != "int16":
            values[rng.random((ny, nx)) < nan_fraction] = np.nan
        values = np.nan_to_num(values).astype(dtype) if dtype == "int16" else values.astype(dtype)
        time = pd.Timestamp("2024-01-01") + pd.Timedelta(minutes=5 * minutes)
        write_frame(folder / f"f{k}.nc", values, time, units=units, standard_name=standard)
    return folder


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_loader_works_or_says_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("prop")
    data.draw(radar_files(folder))
    try:
        ds = open_radar(folder)
    except UserError as err:
        assert "\n" not in str(err) and str(err)
        return
    rate = ds["rainfall_rate"].values
    assert rate.dtype == np.float32 and rate.ndim == 3
    finite = rate[np.isfinite(rate)]
    assert finite.size and finite.min() >= -1e-3 and finite.max() <= 1000
    assert np.all(np.diff(ds["time"].values) > np.timedelta64(0))


def _predict(inputs, out, checkpoint, steps: int) -> int:
    return predict.main(
        ["--input", str(inputs), "--output", str(out), "--checkpoint", str(checkpoint), "--steps", str(steps), "-q"]
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_predict_works_or_exits_2_without_output(tmp_path_factory, tiny_radar_checkpoint, data, capsys):
    folder = tmp_path_factory.mktemp("pred")
    data.draw(radar_files(folder / "in"))
    out = folder / "fc.nc"
    code = _predict(folder / "in", out, tiny_radar_checkpoint, steps=2)
    err = capsys.readouterr().err
    if code == 0:
        assert xr.open_dataset(out)["rainfall_rate"].shape[0] == 2
    else:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
        assert not out.exists()
    assert sorted(p.name for p in folder.iterdir()) in (["fc.nc", "in"], ["in"])


def test_loader_reads_only_given_paths(tmp_path, monkeypatch):
    inside = tmp_path / "given"
    write_sequence(inside, n=3)
    write_frame(tmp_path / "sibling.nc", np.ones((32, 32)), pd.Timestamp("2024-01-01 00:15"))
    write_sequence(inside / "nested", n=2, prefix="deep")
    opened = []
    real_open, real_xr = builtins.open, xr.open_dataset

    def spy_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    def spy_xr(path, *args, **kwargs):
        opened.append(str(path))
        return real_xr(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(radar_io.xr, "open_dataset", spy_xr)
    ds = open_radar(inside)
    monkeypatch.undo()
    assert ds.sizes["time"] == 3
    radar_files_read = {p for p in opened if p.endswith(".nc")}
    assert radar_files_read and all(p.startswith(str(inside)) and "nested" not in p for p in radar_files_read)


@pytest.mark.parametrize("name", ["with space", "ünïcødé ☔", "tab\tname"])
def test_predict_paths_with_spaces_and_unicode(tmp_path, tiny_radar_checkpoint, name):
    folder = tmp_path / name
    write_sequence(folder / "in", n=3)
    out = folder / f"{name}.nc"
    code = _predict(folder / "in", out, tiny_radar_checkpoint, steps=1)
    assert code == 0 and out.is_file()
