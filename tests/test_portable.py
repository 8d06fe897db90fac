"""Packed Lagrangian windows: lossy by at most ±0.25 dB in rain rate, exact in everything else."""

from __future__ import annotations

import numpy as np
import pytest

from nowcast.data import portable
from nowcast.transforms import Transform


def write_cache(path, transform: Transform) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    rates = rng.lognormal(0.0, 1.5, size=(3, 17, 24, 24)).astype(np.float32)
    rates[:, :, :4] = 0.0  # dry rows
    rates[0, 0, 5, 5] = 0.004  # under the floor: comes back dry
    arrays = {
        "frames": transform.encode(rates).astype(np.float16),
        "valid": rng.random(rates.shape) > 0.1,
        "step_minutes": np.array([5.0, 10.0, 6.0], np.float32),
        "velocity": rng.normal(0.0, 2.0, size=(3, 2, 24, 24)).astype(np.float16),
    }
    np.savez(path, **arrays)
    return arrays


def test_pack_round_trip_keeps_names_masks_steps_and_rates_within_a_quarter_db(tmp_path):
    transform = Transform("log1p", 100.0)
    original = write_cache(tmp_path / "lagrangian_radar_abc.npz", transform)
    packed = tmp_path / "windows.npz"
    portable.pack([tmp_path / "lagrangian_radar_abc.npz"], packed, transform)
    (written,) = portable.unpack(packed, tmp_path / "cache")
    assert written.name == "lagrangian_radar_abc.npz"
    with np.load(written) as back:
        assert back["frames"].dtype == np.float16
        np.testing.assert_array_equal(back["valid"], original["valid"])
        np.testing.assert_array_equal(back["step_minutes"], original["step_minutes"])
        np.testing.assert_array_equal(back["velocity"], original["velocity"])
        before = transform.decode(original["frames"].astype(np.float32))
        after = transform.decode(back["frames"].astype(np.float32))
    wet = before >= portable.FLOOR_MM_H
    decibels = 10 * np.log10(after[wet] / before[wet])
    # ±0.25 dB from the code, plus float16's rounding of the model-space value on both sides
    assert np.abs(decibels).max() < 0.25 + 0.05
    assert np.all(after[~wet] == 0.0)
    for threshold in (1.0, 10.0):  # step edges: no pixel crosses them
        np.testing.assert_array_equal(after >= threshold, before >= threshold)
    assert after[0, 0, 5, 5] == 0.0


def test_codes_are_monotonic_and_zero_means_dry():
    rates = np.array([0.0, 0.009, 0.01, 0.1, 1.0, 5.0, 100.0, 1e12], np.float32)
    codes = portable.encode_rates(rates)
    assert codes[0] == codes[1] == 0 and codes[2] == 1
    assert np.all(np.diff(codes.astype(int)) >= 0) and codes[-1] == 255
    np.testing.assert_allclose(portable.decode_rates(codes[2:7]), rates[2:7], rtol=0.06)


def test_cli_refuses_a_missing_cache_in_one_line(tmp_path, capsys):
    assert portable.main(["pack", str(tmp_path / "out.npz"), str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no such cache file") and "\n" not in err
    assert not (tmp_path / "out.npz").exists()
    assert portable.main(["unpack", str(tmp_path / "nothing.npz")]) == 2


@pytest.mark.parametrize("scale", [50.0, 100.0])
def test_pack_records_the_transform_it_decoded_with(tmp_path, scale):
    transform = Transform("log1p", scale)
    write_cache(tmp_path / "lagrangian_x_1.npz", transform)
    portable.pack([tmp_path / "lagrangian_x_1.npz"], tmp_path / "p.npz", transform)
    with np.load(tmp_path / "p.npz") as data:
        assert float(data["transform_scale_mm_h"]) == scale


def test_a_pack_without_motion_is_refused_in_one_line(tmp_path, capsys):
    transform = Transform("log1p", 100.0)
    arrays = write_cache(tmp_path / "lagrangian_radar_abc.npz", transform)
    del arrays["velocity"]
    np.savez(tmp_path / "lagrangian_radar_abc.npz", **arrays)
    assert portable.main(["pack", str(tmp_path / "out.npz"), str(tmp_path / "lagrangian_radar_abc.npz")]) == 2
    assert "holds no motion" in capsys.readouterr().err
    packed = {"transform_scale_mm_h": np.float64(100.0), "0_name": np.array("x.npz"), "0_shape": np.array([1])}
    np.savez(tmp_path / "old.npz", **packed)
    assert portable.main(["unpack", str(tmp_path / "old.npz"), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no motion" in err and "\n" not in err
