"""predict and evaluate end to end, and every bad input answered in one line."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import BOM, write_frame, write_sequence
from PIL import Image

from nowcast import evaluate, predict
from nowcast.forecast import Forecaster, pretrained_checkpoint


def test_predict_writes_cf_netcdf_and_gif(tmp_path, radar_dir, tiny_radar_checkpoint):
    out, gif = tmp_path / "fc.nc", tmp_path / "fc.gif"
    code = predict.main(
        [
            "--input",
            str(radar_dir),
            "--output",
            str(out),
            "--gif",
            str(gif),
            "--checkpoint",
            str(tiny_radar_checkpoint),
            "--minutes",
            "20",
            "-q",
        ]
    )
    assert code == 0
    ds = xr.open_dataset(out)
    rate = ds["rainfall_rate"]
    assert rate.dims == ("time", "y", "x") and rate.shape == (4, 32, 32)
    assert rate.attrs["units"] == "mm h-1" and rate.attrs["standard_name"] == "rainfall_rate"
    assert ds.attrs["Conventions"] == "CF-1.8"
    assert list(ds["lead_time"].values) == [5.0, 10.0, 15.0, 20.0]
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp("2024-01-01 00:40")
    assert rate.attrs["grid_mapping"] == "proj" and "proj" in ds
    np.testing.assert_array_equal(ds["x"].values, np.arange(32, dtype=np.float32))
    assert len(ds.attrs["nowcast_checkpoint_sha256"]) == 64
    assert (rate.values >= 0).all()
    assert Image.open(gif).n_frames == 3 + 4  # t_in observed + 4 forecast


def test_predict_default_pretrained_model_any_cycle(tmp_path):
    forecaster = Forecaster.from_checkpoint()
    assert pretrained_checkpoint().is_file() and forecaster.needs_step
    for step in (5, 10, 15):
        folder = tmp_path / f"r{step}"
        write_sequence(folder, n=forecaster.t_in, step_min=step, size=40)
        out = folder.with_suffix(".nc")
        assert predict.main(["--input", str(folder), "--output", str(out), "--steps", "2", "-q"]) == 0
        assert xr.open_dataset(out)["lead_time"].values.tolist() == [step, 2.0 * step]


def test_predict_warns_outside_trained_steps(tmp_path, capsys):
    forecaster = Forecaster.from_checkpoint()
    write_sequence(tmp_path / "r", n=forecaster.t_in, step_min=60, size=16)
    assert predict.main(["--input", str(tmp_path / "r"), "--output", str(tmp_path / "o.nc"), "--steps", "1"]) == 0
    assert "outside the steps the model was trained on" in capsys.readouterr().err


def _irregular(d):
    write_sequence(d, n=2, step_min=5, prefix="a", start="2024-01-01 00:00")
    write_sequence(d, n=2, step_min=5, prefix="b", start="2024-01-01 00:30")
    return [str(d)]


def _too_few(d):
    write_sequence(d, n=2)
    return [str(d)]


def _all_nan(d):
    for t in range(3):
        write_frame(d / f"n{t}.nc", np.full((8, 8), np.nan), pd.Timestamp("2024-01-01") + pd.Timedelta(minutes=5 * t))
    return [str(d)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [str(d / "nope")], "no such file"),
        (lambda d: [str((d / "x.nc").write_bytes(b"garbage") and d / "x.nc")], "not a radar file"),
        (_too_few, "the model needs 3"),
        (_irregular, "irregular time steps"),
        (_all_nan, "missing"),
    ],
)
def test_predict_bad_input_exit_2_no_output(tmp_path, capsys, tiny_radar_checkpoint, make, message):
    inputs = make(tmp_path)
    out = tmp_path / "out.nc"
    code = predict.main(["--input", *inputs, "--output", str(out), "--checkpoint", str(tiny_radar_checkpoint)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.nc*"))


def test_predict_refuses_overwrite_and_bad_checkpoint(tmp_path, radar_dir, capsys):
    out = tmp_path / "fc.nc"
    out.write_text("keep me")
    assert predict.main(["--input", str(radar_dir), "--output", str(out)]) == 2
    assert out.read_text() == "keep me" and "--overwrite" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert (
        predict.main(
            [
                "--input",
                str(radar_dir),
                "--output",
                str(tmp_path / "o.nc"),
                "--checkpoint",
                str(tmp_path / "bad.pt"),
            ]
        )
        == 2
    )
    assert "bad.pt" in capsys.readouterr().err


def test_predict_subprocess_one_line_error(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nowcast.predict",
            "--input",
            str(tmp_path / "missing"),
            "--output",
            str(tmp_path / "o.nc"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no such file" in done.stderr


def test_evaluate_end_to_end(tmp_path, tiny_radar_checkpoint):
    write_sequence(tmp_path / "r", n=9, size=48, speed=2.0)
    out = tmp_path / "eval"
    code = evaluate.main(
        [
            "--input",
            str(tmp_path / "r"),
            "--output",
            str(out),
            "--checkpoint",
            str(tiny_radar_checkpoint),
            "--minutes",
            "15",
            "--thresholds",
            "0.5",
            "2",
            "-q",
        ]
    )
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["windows"] == {
        "n_in": 3,
        "n_out": 3,
        "step": 5.0,
        "count": 4,
        "lead_minutes": [5.0, 10.0, 15.0],
    }
    assert set(doc["methods"]) == {"model", "persistence", "extrapolation", "sprog"}
    csi = doc["methods"]["extrapolation"]["csi"]["2.0"]
    assert len(csi["by_lead"]) == 3 and csi["mean"] is not None
    assert doc["methods"]["extrapolation"]["csi"]["2.0"]["mean"] > doc["methods"]["persistence"]["csi"]["2.0"]["mean"]
    for name in ("metrics.csv", "performance_diagram.png", "comparison.gif", "scores_2.0mmh.png"):
        assert (out / name).is_file(), name
    assert Image.open(out / "comparison.gif").n_frames == 3
    assert evaluate.main(["--input", str(tmp_path / "r"), "--output", str(out), "-q"]) == 2  # no overwrite


@pytest.mark.shared
def test_predict_on_bom_radar(tmp_path):
    files = sorted(BOM.glob("*.nc"))[-6:]
    out = tmp_path / "bom.nc"
    assert predict.main(["--input", *map(str, files), "--output", str(out), "--minutes", "30", "-q"]) == 0
    ds = xr.open_dataset(out)
    assert ds["rainfall_rate"].shape == (5, 512, 512)
    assert ds.attrs["nowcast_time_step_minutes"] == 6.0


def predict_with_spy(tmp_path, monkeypatch, attribute: str) -> tuple[list[str], list]:
    """``predict`` arguments on a small written sequence, and the list that collects ``attribute`` of
    every forecaster ``predict`` then loads (the shipped model unless ``--checkpoint``)."""
    seen = []
    real = Forecaster.from_checkpoint

    def spy(*args, **kwargs):
        forecaster = real(*args, **kwargs)
        seen.append(getattr(forecaster, attribute))
        return forecaster

    monkeypatch.setattr(Forecaster, "from_checkpoint", staticmethod(spy))
    write_sequence(tmp_path / "r", n=real().t_in, step_min=5, size=16)
    args = ["--input", str(tmp_path / "r"), "--output", str(tmp_path / "o.nc"), "--steps", "1", "-q", "--overwrite"]
    return args, seen


def test_inflow_option_reaches_the_forecaster(tmp_path, monkeypatch, capsys):
    args, seen = predict_with_spy(tmp_path, monkeypatch, "inflow")
    assert predict.main([*args, "--inflow", "empty"]) == 0
    assert predict.main(args) == 0
    assert seen == ["empty", "observed"]  # the shipped Lagrangian model's default
    with pytest.raises(SystemExit) as refused:
        predict.main([*args, "--inflow", "edge"])
    assert refused.value.code == 2 and "invalid choice: 'edge'" in capsys.readouterr().err
