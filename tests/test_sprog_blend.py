"""S-PROG in the frame that moves with the rain, and its blend into a Lagrangian model's forecast."""

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, shift
from test_lagrangian import _lagrangian_forecaster

from nowcast import predict
from nowcast._quiet import import_pysteps
from nowcast.baselines import RAIN_THRESHOLD_DBR, from_dbr, motion_field, sprog, to_dbr
from nowcast.cascade import moving_frame_sprog
from nowcast.forecast import SPROG_WEIGHT, Forecaster, blend_sprog, distribution_matcher, post_processing


def evolving_rain(frames: int = 3, size: int = 96, seed: int = 0, drift_px: float = 0.0) -> np.ndarray:
    """``(frames, size, size)`` mm/h: smooth rain whose small scales change from frame to frame, large ones
    not, moving ``drift_px`` pixels a frame to the right."""
    rng = np.random.default_rng(seed)
    large = gaussian_filter(rng.normal(size=(size, size)), 12.0)
    out = []
    for k in range(frames):
        small = gaussian_filter(rng.normal(size=(size, size)), 2.0)
        field = large / large.std() + 0.5 * small / small.std()
        out.append(shift(np.where(field > 0.2, 10**field, 0.0), (0.0, drift_px * k), order=1, mode="nearest"))
    return np.stack(out).astype(np.float32)


def test_moving_frame_sprog_is_pysteps_sprog_without_motion():
    """Equal to pysteps' own S-PROG where it rains, and once matched to the last frame as the forecaster matches it."""
    rain = evolving_rain()
    ours = moving_frame_sprog(rain, 6)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        theirs = import_pysteps().nowcasts.get_method("sprog")(
            to_dbr(rain), np.zeros((2, *rain.shape[1:])), 6, precip_thr=RAIN_THRESHOLD_DBR,
            n_cascade_levels=6, extrap_method="eulerian", probmatching_method=None,
        )  # fmt: skip
    theirs = from_dbr(theirs)
    match = distribution_matcher(rain[-1])
    for lead in range(6):
        wet = theirs[lead] > 0  # above pysteps' wet-area mask (its driest pixels are set to its minimum)
        np.testing.assert_allclose(ours[lead][wet], theirs[lead][wet], rtol=1e-4)  # float32 against float64
        same = match(ours[lead]) == match(theirs[lead].astype(np.float32))
        assert same.mean() > 0.999  # near-ties may swap places in float32
    assert not np.allclose(ours[0], ours[-1])  # the small scales fade with lead time


def test_moving_frame_sprog_without_enough_rain_gives_the_last_frame():
    dry = np.zeros((3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(moving_frame_sprog(dry, 4), 0.0)
    few = dry.copy()
    few[:, 3:6, 3:6] = 2.0  # 9 wet pixels: too few for the correlations
    np.testing.assert_array_equal(moving_frame_sprog(few, 4), np.repeat(few[-1:], 4, axis=0))
    still = np.repeat(evolving_rain(48)[-1:], 3, axis=0)  # nothing changes: correlation 1, clipped
    assert np.isfinite(moving_frame_sprog(still, 4)).all()


def test_blend_weights_the_two_forecasts_and_keeps_the_network_where_sprog_has_no_value():
    network = np.full((2, 3, 3), 4.0, dtype=np.float32)
    other = np.full((2, 3, 3), 8.0, dtype=np.float32)
    other[0, 0, 0] = np.nan
    out = blend_sprog(network, other, 0.25)
    assert out.dtype == np.float32
    assert out[0, 0, 0] == 4.0 and out[1, 2, 2] == 5.0


def _perturbed_forecaster(weight: float) -> Forecaster:
    forecaster = _lagrangian_forecaster()
    with torch.no_grad():  # a network that changes the forecast, so that the blend has two things to mix
        for p in forecaster.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    forecaster.probability_matching = "cdf"
    forecaster.smoothing_km_per_minute = 0.1
    forecaster.sprog_weight = weight
    return forecaster


def test_forecast_is_the_blend_of_network_and_sprog_advected_once():
    """Advection is linear, so the blended forecast is the blend of the two forecasts, up to the rain floor."""
    rates = evolving_rain(5, 64, seed=2, drift_px=1.5)
    forecasts = {w: _perturbed_forecaster(w).forecast(rates, 6, 5.0, spacing_km=(1.0, 1.0)) for w in (0, 0.25, 1)}
    expected = 0.75 * forecasts[0] + 0.25 * forecasts[1]
    np.testing.assert_allclose(forecasts[0.25], expected, atol=0.1)  # the floor sets < 0.1 mm/h to 0
    wet = (forecasts[0] > 0.2) & (forecasts[1] > 0.2)
    np.testing.assert_allclose(forecasts[0.25][wet], expected[wet], rtol=1e-4)
    assert not np.allclose(forecasts[0], forecasts[1])


def test_weight_one_is_sprog_along_the_network_motion():
    """With S-PROG's weight 1 the forecaster gives pysteps' S-PROG, to the interpolation of the advection."""
    rates = evolving_rain(5, drift_px=1.5)
    theirs = sprog(rates, 6, motion_field(rates))
    agreement = {}
    for weight in (1.0, 0.0):
        forecaster = _perturbed_forecaster(weight)
        forecaster.smoothing_km_per_minute = 0.0
        ours = forecaster.forecast(rates, 6, 5.0, spacing_km=(1.0, 1.0))
        valid = np.isfinite(ours) & np.isfinite(theirs)
        agreement[weight] = [np.mean((ours[valid] >= u) == (theirs[valid] >= u)) for u in (1.0, 5.0)]
    assert min(agreement[1.0]) > 0.98  # 0.987 and 0.998 at 1 and 5 mm/h
    assert max(agreement[0.0]) < 0.9  # the network alone: 0.84 and 0.86


def test_sprog_weight_defaults_by_frame_and_refuses_bad_values():
    assert post_processing("lagrangian", None, None, None, "none", 1)["sprog_weight"] == SPROG_WEIGHT == 0.25
    assert post_processing("eulerian", None, None, None, "none", 1)["sprog_weight"] == 0.0
    assert post_processing("lagrangian", None, None, None, "none", 1, sprog_weight=0)["sprog_weight"] == 0.0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="sprog_weight"):
            post_processing("lagrangian", None, None, None, "none", 1, sprog_weight=bad)
    with pytest.raises(ValueError, match="Lagrangian"):
        post_processing("eulerian", None, None, None, "none", 1, sprog_weight=0.5)


def test_sprog_weight_option_reaches_the_forecaster(tmp_path, monkeypatch, capsys):
    from test_predict import predict_with_spy

    args, seen = predict_with_spy(tmp_path, monkeypatch, "sprog_weight")
    assert predict.main([*args, "--sprog-weight", "0"]) == 0
    assert predict.main(args) == 0
    assert seen == [0.0, SPROG_WEIGHT]  # the shipped Lagrangian model's default
    capsys.readouterr()
    assert predict.main([*args, "--sprog-weight", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--sprog-weight" in err and "[0, 1]" in err


def test_sprog_and_steps_on_a_scene_that_does_not_change_are_its_extrapolation():
    """Copies of one frame: pysteps' AR(2) fit has no solution; both baselines give their limit."""
    from nowcast.baselines import extrapolation
    from nowcast.methods import Window, steps

    rates = np.repeat(evolving_rain(1, 64)[-1:], 5, axis=0)
    rates[:, :, :4] = np.nan  # outside the radar's range
    expected = extrapolation(rates, 4, motion_field(rates))
    np.testing.assert_array_equal(sprog(rates, 4), expected)
    members = steps(Window(rates, 4, 5.0), members=3)
    assert members.shape == (3, 4, 64, 64)
    np.testing.assert_array_equal(members, np.broadcast_to(expected, members.shape))
    assert np.isnan(members[:, :, :, :4]).all()
