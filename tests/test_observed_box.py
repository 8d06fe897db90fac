"""A Lagrangian forecast runs on the box around the observed pixels, and says the same as on the whole grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import nowcast.forecast as forecast_module
from nowcast.forecast import Forecaster, observed_box


def composite(size: int = 200) -> np.ndarray:
    """``(5, size, size)`` mm/h: drifting rain observed on a rectangle a quarter of the grid, NaN around it."""
    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.gamma(0.3, 5.0, (size + 40, size + 40)), 4.0)
    field = np.maximum(field / np.quantile(field, 0.85) - 0.5, 0.0) * 4.0
    frames = np.stack([field[20 - t : 20 - t + size, 20 - 2 * t : 20 - 2 * t + size] for t in range(5)])
    yy, xx = np.mgrid[0:size, 0:size]
    frames[:, (yy < 37) | (yy > 130) | (xx < 53) | (xx > 150)] = np.nan
    return frames.astype(np.float32)


def test_the_box_reaches_the_margin_beyond_the_observed_pixels_from_an_aligned_corner():
    rates = np.full((2, 100, 120), np.nan, dtype=np.float32)
    rates[0, 30:50, 45:60] = 1.0
    rates[1, 52, 61] = 0.0  # observed in an earlier frame only: still inside
    rows, cols = observed_box(rates, share=0.8, margin=8, align=10)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (20, 61, 30, 70)
    assert observed_box(rates, share=0.1, margin=8, align=10) is None  # too little to gain
    assert observed_box(np.full((2, 10, 10), np.nan)) is None  # nothing observed


def test_the_boxs_margin_and_corner_follow_the_networks_patches():
    rates = np.full((1, 400, 400), np.nan, dtype=np.float32)
    rates[0, 150:200, 170:230] = 1.0
    rows, cols = observed_box(rates, patch_size=4)  # 32 pixels beyond, corner on multiples of 20
    assert (rows.start, rows.stop, cols.start, cols.stop) == (100, 232, 120, 262)
    rows, cols = observed_box(rates, patch_size=8)  # 64 pixels beyond, corner on multiples of 40
    assert (rows.start, rows.stop, cols.start, cols.stop) == (80, 264, 80, 294)


@pytest.fixture(scope="module")
def forecaster() -> Forecaster:
    model = Forecaster.from_checkpoint(precision="32")
    model.unroll = "fused"
    return model


def test_the_boxed_forecast_equals_the_whole_grids(forecaster, monkeypatch):
    rates = composite()
    assert observed_box(rates) is not None
    boxed = forecaster.forecast(rates, 12, 5.0)
    monkeypatch.setattr(forecast_module, "observed_box", lambda r, *args: None)
    whole = forecaster.forecast(rates, 12, 5.0)
    assert boxed.shape == whole.shape == (12, 200, 200)
    valid = np.isfinite(whole)
    np.testing.assert_array_equal(np.isfinite(boxed), valid)
    difference = np.abs(boxed - whole)[valid]
    assert np.quantile(difference, 0.99) < 0.01  # mm/h; differs only where the box's edge is near
    assert np.mean((boxed[valid] >= 1.0) != (whole[valid] >= 1.0)) < 1e-3


def test_boxed_members_count_on_the_whole_grid(forecaster):
    rates = composite()
    _, members = forecaster.forecast_for_probabilities(rates, 4, 5.0, members=3)
    assert members.shape == (3, 4, 200, 200)
    counts, no_data = members.exceeding([1.0])
    assert counts.shape == (1, 4, 200, 200) and no_data.shape == (4, 200, 200)
    stacked = np.asarray(members)
    np.testing.assert_array_equal(no_data, np.isnan(stacked[0]))
    np.testing.assert_array_equal(counts[0], (np.nan_to_num(stacked) >= 1.0).sum(axis=0))
    assert no_data[:, :20].all() and counts[:, :, :20].sum() == 0  # outside the box: no data, no rain
