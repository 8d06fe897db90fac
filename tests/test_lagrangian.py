"""Lagrangian frame, common grid and the residual model: round trips and 'untrained = LK'."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nowcast import lagrangian, regrid
from nowcast.baselines import extrapolation, motion_field
from nowcast.data.lagrangian import LagrangianWindows
from nowcast.forecast import (
    MEMBER_TREND_WEIGHT,
    TREND_WEIGHT,
    Forecaster,
    continue_trend,
    smooth_by_lead,
    symmetric_run,
)
from nowcast.models import EncoderForecaster, ModelConfig
from nowcast.probability import MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE, MODEL_MEMBERS
from nowcast.transforms import RAIN_FLOOR_MM_H, Transform, dry_below_floor


def moving_blob(n: int, size: int = 64, speed: tuple[float, float] = (1.5, -1.0)) -> np.ndarray:
    """``(n, size, size)`` mm/h: a Gaussian rain cell moving ``speed`` (x, y) pixels per step."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    frames = []
    for t in range(n):
        cx, cy = 24 + speed[0] * t, 36 + speed[1] * t
        frames.append(12.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 5.0**2)))
    return np.stack(frames).astype(np.float32)


def test_lagrangian_round_trip_on_a_moving_blob():
    frames = moving_blob(8)
    velocity = np.zeros((2, 64, 64))
    velocity[0], velocity[1] = 1.5, -1.0
    backward = lagrangian.displacements(velocity, 3, backward=True)
    forward = lagrangian.displacements(velocity, 4)
    # targets brought back to the analysis frame all sit where the last input is ...
    analysis = lagrangian.targets_to_lagrangian(frames[5:8], backward)
    for frame in analysis:
        np.testing.assert_allclose(np.nan_to_num(frame), frames[4], atol=0.35)
    # ... and advecting them forward again gives the targets back (away from the border)
    back = lagrangian.from_lagrangian(analysis, forward[:3])
    np.testing.assert_allclose(np.nan_to_num(back)[:, 10:-10, 10:-10], frames[5:8, 10:-10, 10:-10], atol=0.6)
    # inputs advected to the analysis time line up with the last input
    inputs = lagrangian.inputs_to_lagrangian(frames[:5], forward)
    np.testing.assert_array_equal(inputs[-1], frames[4])
    np.testing.assert_allclose(np.nan_to_num(inputs[0]), frames[4], atol=0.35)


def test_pixels_from_outside_the_domain_are_nan():
    velocity = np.zeros((2, 16, 16))
    velocity[0] = 2.0  # eastward: new pixels enter from the west
    forward = lagrangian.displacements(velocity, 2)
    out = lagrangian.from_lagrangian(np.ones((2, 16, 16)), forward)
    assert np.isnan(out[1][:, :4]).all() and np.isfinite(out[1][:, 5:]).all()


@pytest.mark.parametrize(("shape", "new"), [((64, 64), (32, 32)), ((50, 40), (100, 80)), ((64, 48), (37, 29))])
def test_resampling_round_trip_keeps_rain_totals(shape, new):
    rng = np.random.default_rng(0)
    field = rng.gamma(0.5, 2.0, size=(2, *shape)).astype(np.float32)
    field[:, :5, :7] = np.nan  # no-data corner
    there = regrid.resample(field, new)
    back = regrid.resample(there, shape)
    for a, b in ((field, there), (field, back)):
        np.testing.assert_allclose(np.nanmean(b, axis=(1, 2)), np.nanmean(a, axis=(1, 2)), rtol=1e-4)
    assert np.isnan(back[:, 0, 0]).all() and np.isfinite(back[:, -1, -1]).all()


@pytest.mark.parametrize("new", [(128, 128), (100, 73)])
def test_refining_is_scikit_images_bilinear_resize(new):
    from skimage.transform import resize

    field = np.random.default_rng(1).gamma(0.5, 2.0, size=(64, 48)).astype(np.float32)
    expected = resize(field, new, order=1, anti_aliasing=False, mode="edge")
    np.testing.assert_allclose(regrid._linear(field, new, coarsen=False), expected, atol=1e-3 * field.max())
    with_no_data = field.copy()
    with_no_data[:3, :3] = np.nan  # the weighted path gives the same values away from the gap
    gap, whole = regrid.resample(with_no_data, new), regrid.resample(field, new)
    np.testing.assert_allclose(gap[-20:, -20:], whole[-20:, -20:], rtol=1e-3)


def test_grid_spacing_from_coordinate_units():
    import xarray as xr

    ds = xr.Dataset(coords={"x": ("x", [0.0, 500.0, 1000.0], {"units": "m"}), "y": ("y", [0.0, 2000.0])})
    assert regrid.grid_spacing_km(ds) == pytest.approx((2.0, 0.5))
    km = xr.Dataset(coords={"x": ("x", [0.0, 0.5], {"units": "km"}), "y": ("y", [3.0, 2.0])})
    assert regrid.grid_spacing_km(km) == pytest.approx((1.0, 0.5))
    deg = xr.Dataset(coords={"x": ("x", [0.0, 0.01], {"units": "degrees_east"}), "y": ("y", [60.0, 60.01])})
    dy, dx = regrid.grid_spacing_km(deg)
    assert dy == pytest.approx(1.112, rel=1e-3) and dx == pytest.approx(0.556, rel=1e-2)


def _lagrangian_forecaster() -> Forecaster:
    torch.manual_seed(0)
    config = ModelConfig(hidden=[4, 4], patch_size=4, output_activation="identity", step_channel=True, head="residual")
    return Forecaster(EncoderForecaster(config).eval(), Transform("log1p", 100.0), 5, 6, frame="lagrangian")


def test_untrained_lagrangian_model_is_lk_extrapolation():
    rates = moving_blob(5)
    rates[:, 60:, :] = np.nan  # outside the radar's range
    forecast = _lagrangian_forecaster().forecast(rates, 6, 5.0, spacing_km=(1.0, 1.0))
    rain = dry_below_floor(rates)  # what the model takes for rain (the same motion: to_dbr floors too)
    expected = dry_below_floor(extrapolation(rain, 6, motion_field(rates)))
    np.testing.assert_allclose(forecast, expected, atol=1e-4, equal_nan=True)
    assert np.isnan(forecast[:, 60:]).all()  # no-data stays no-data


def _rain_at_the_upwind_edge(no_data_columns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(5, 40, 48)`` mm/h rain over the left half, moving right 2 px/step, and that motion ``(2, 40, 48)``.

    Rows vary (1 to 8 mm/h) so that the edge values that flow in are told apart; the first
    ``no_data_columns`` columns are outside the radar's range (NaN).
    """
    rates = np.zeros((5, 40, 48), dtype=np.float32)
    rates[:, :, :24] = np.linspace(1.0, 8.0, 40, dtype=np.float32)[:, None]
    rates[:, :, :no_data_columns] = np.nan
    velocity = np.zeros((2, 40, 48))
    velocity[0] = 2.0
    return rates, velocity


@pytest.mark.parametrize("no_data_columns", [0, 6])
def test_observed_inflow_brings_the_last_frames_edge_in(no_data_columns):
    rates, velocity = _rain_at_the_upwind_edge(no_data_columns)
    edge = rates[-1, :, no_data_columns]  # (40,) the observed column nearest to where the rain comes from
    empty = extrapolation(rates, 4, velocity)
    observed = extrapolation(rates, 4, velocity, inflow="observed")
    first = no_data_columns  # first observed column; at lead 4 rain has come 8 px from outside
    np.testing.assert_array_equal(empty[3, :, first : first + 7], 0.0)  # pysteps: no rain comes in
    for column in range(first, first + 7):
        np.testing.assert_allclose(observed[3, :, column], edge, rtol=1e-5)
    np.testing.assert_allclose(observed[:, :, first + 8 :], empty[:, :, first + 8 :], atol=1e-5)  # same inside
    assert np.isnan(observed[:, :, :no_data_columns]).all()  # no-data stays no-data


def test_a_lone_shower_on_the_edge_does_not_flow_in_but_a_rain_area_does():
    last = np.zeros((40, 48), dtype=np.float32)
    last[:, :4] = np.nan  # outside the radar's range
    last[10, 4] = 9.0  # one wet pixel on the edge of the range
    last[20:30, 4:12] = 3.0  # a 10 × 8 px rain area on it
    inflow = lagrangian.inflow_field(last, opening=5)
    np.testing.assert_array_equal(inflow[10, :5], 0.0)
    np.testing.assert_array_equal(inflow[20:30, :12], 3.0)
    np.testing.assert_array_equal(lagrangian.inflow_field(last, opening=1)[10, :5], 9.0)  # no opening: a streak


def test_advect_takes_the_observation_only_where_the_motion_comes_from_outside():
    rng = np.random.default_rng(0)
    field, observed = rng.random((2, 30, 30))
    no_data = np.zeros((30, 30), dtype=bool)
    no_data[:, :5] = True
    displacement = np.zeros((2, 30, 30))
    displacement[0] = -3.5  # departure points 3.5 px to the left
    out = lagrangian.advect(field, displacement, observed, no_data)
    plain = lagrangian.warp(np.where(no_data, np.nan, field), displacement)  # pysteps: NaN from no-data
    outside = np.isnan(plain)
    np.testing.assert_allclose(out[~outside], plain[~outside])
    np.testing.assert_allclose(out[outside], lagrangian.warp(observed, displacement, outside="edge")[outside])
    assert outside[:, :9].all() and not outside[:, 9:].any()  # up to 3.5 px + one bilinear neighbour


def test_untrained_lagrangian_model_is_lk_extrapolation_with_the_same_inflow():
    rates, _ = _rain_at_the_upwind_edge(no_data_columns=6)
    rates = rates + moving_blob(5, size=48)[:, 4:44]  # something for the motion to follow
    forecaster = _lagrangian_forecaster()
    forecaster.inflow = "observed"
    forecast = forecaster.forecast(rates, 6, 5.0, spacing_km=(1.0, 1.0))
    rain = dry_below_floor(rates)
    expected = dry_below_floor(extrapolation(rain, 6, motion_field(rates), inflow="observed"))
    np.testing.assert_allclose(forecast, expected, atol=1e-4, equal_nan=True)
    assert not np.allclose(np.nan_to_num(forecast), np.nan_to_num(_lagrangian_forecaster().forecast(rates, 6, 5.0)))


def test_inflow_defaults_by_frame_and_refuses_unknown_names():
    from nowcast.forecast import INFLOW, post_processing

    assert post_processing("lagrangian", None, None, None, "none", 1)["inflow"] == INFLOW == "observed"
    assert post_processing("eulerian", None, None, None, "none", 1)["inflow"] == "empty"
    with pytest.raises(ValueError, match="inflow"):
        post_processing("lagrangian", None, None, None, "none", 1, "edge")
    with pytest.raises(ValueError, match="inflow"):
        extrapolation(np.zeros((2, 4, 4)), 1, np.zeros((2, 4, 4)), inflow="edge")


def test_a_radar_noise_floor_is_no_rain_to_the_network():
    """FMI-like dry pixels at 0.0004–0.1 mm/h forecast as if they were 0, with a network that uses its inputs."""
    forecaster = _lagrangian_forecaster()
    with torch.no_grad():  # an output layer that is not zero, so the network's inputs reach the forecast
        for p in forecaster.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rates = moving_blob(5)
    rates[rates < RAIN_FLOOR_MM_H] = 0.0
    noisy = rates.copy()
    dry = rates == 0
    noisy[dry] = np.random.default_rng(0).uniform(0.0004, 0.0999, dry.sum()).astype(np.float32)
    clean_forecast = forecaster.forecast(rates, 6, 5.0, spacing_km=(1.0, 1.0))
    assert not np.allclose(clean_forecast, forecaster.forecast(rates * 1.5, 6, 5.0, spacing_km=(1.0, 1.0)))
    np.testing.assert_array_equal(forecaster.forecast(noisy, 6, 5.0, spacing_km=(1.0, 1.0)), clean_forecast)


def test_lead_smoothing_widens_with_lead_and_keeps_the_rain():
    frames = np.repeat(moving_blob(1)[None, 0], 3, axis=0)  # (3, 64, 64), one cell in the middle
    smoothed = smooth_by_lead(frames, np.array([0.0, 2.0, 4.0]))
    np.testing.assert_array_equal(smoothed[0], frames[0])  # σ = 0: unchanged
    peaks = smoothed.max(axis=(1, 2))
    assert peaks[0] > peaks[1] > peaks[2]  # a wider Gaussian flattens the cell more
    np.testing.assert_allclose(smoothed.sum(axis=(1, 2)), frames.sum(axis=(1, 2)), rtol=1e-4)


def test_lagrangian_forecaster_smooths_by_lead_time():
    rates = moving_blob(5)
    plain = _lagrangian_forecaster()
    smooth = _lagrangian_forecaster()
    smooth.smoothing_km_per_minute = 0.2  # σ = 1 km per 5-minute step on this 1 km grid
    a, b = plain.forecast(rates, 4, 5.0), smooth.forecast(rates, 4, 5.0)
    assert (b.max(axis=(1, 2)) < a.max(axis=(1, 2))).all()
    assert np.diff(a.max(axis=(1, 2)) - b.max(axis=(1, 2))).min() > 0  # the gap grows with lead
    np.testing.assert_allclose(b.sum(axis=(1, 2)), a.sum(axis=(1, 2)), rtol=0.02)


def test_continue_trend_carries_the_last_change_of_log_rain():
    frames = np.array([[[3.0, 3.0, 3.0, -0.5]]] * 2, dtype=np.float32)  # (2 leads, 1, 4)
    previous = np.array([[1.0, 3.0, np.nan, 1.0]])
    last = np.array([[3.0, 1.0, 3.0, 1.0]])
    out = continue_trend(frames, previous, last, 0.5)
    # log1p(out) = log1p(3) ± 0.5·(log 4 − log 2): × or ÷ √2 on 1 + R; no change where unknown or steady
    expected = [4.0 * np.sqrt(2.0) - 1.0, 4.0 / np.sqrt(2.0) - 1.0, 3.0, 0.0]  # below 0 counts as 0
    np.testing.assert_allclose(out, np.broadcast_to(expected, (2, 1, 4)), rtol=1e-6)
    np.testing.assert_array_equal(continue_trend(frames[:, :, :3], previous[:, :3], last[:, :3], 0.0), frames[:, :, :3])


def test_lagrangian_forecaster_continues_growth_and_decay():
    growing = moving_blob(5) * np.linspace(0.5, 1.0, 5, dtype=np.float32)[:, None, None]
    plain, trend = _lagrangian_forecaster(), _lagrangian_forecaster()
    trend.trend_weight = 0.5
    for rates, heavier in ((growing, True), (growing[::-1].copy(), False)):  # grows, then decays
        a, b = plain.forecast(rates, 4, 5.0), trend.forecast(rates, 4, 5.0)
        assert ((b.max(axis=(1, 2)) > a.max(axis=(1, 2))) == heavier).all()
        _, for_probabilities = trend.forecast_for_probabilities(rates, 4, 5.0)
        np.testing.assert_array_equal(for_probabilities[0], b)  # probabilities: the forecast with it (round 27)
        members = [f.forecast_for_probabilities(rates, 4, 5.0, members=3)[1] for f in (plain, trend)]
        for seed in range(3):  # each motion-perturbed member carries the trend too
            peaks = [np.nanmax(m.member(seed), axis=(1, 2)) for m in members]
            assert ((peaks[1] > peaks[0]) == heavier).all()
    smooth = _lagrangian_forecaster()
    smooth.trend_weight, smooth.smoothing_km_per_minute = 0.5, 0.2
    _, for_probabilities = smooth.forecast_for_probabilities(growing, 4, 5.0)
    np.testing.assert_array_equal(for_probabilities[0], trend.forecast(growing, 4, 5.0))  # trend, no smoothing


def test_probabilities_carry_the_members_own_trend_weight():
    """The fields the probabilities come from take ``member_trend_weight``, the forecast keeps ``trend_weight``."""
    growing = moving_blob(5) * np.linspace(0.5, 1.0, 5, dtype=np.float32)[:, None, None]
    own, stronger = _lagrangian_forecaster(), _lagrangian_forecaster()
    own.trend_weight, own.member_trend_weight = 0.5, 1.25
    stronger.trend_weight = 1.25
    forecast, for_probabilities = own.forecast_for_probabilities(growing, 4, 5.0)
    np.testing.assert_array_equal(forecast, own.forecast(growing, 4, 5.0))
    np.testing.assert_array_equal(for_probabilities[0], stronger.forecast(growing, 4, 5.0))
    assert not np.array_equal(for_probabilities[0], forecast)


def test_member_trend_weight_defaults_for_a_lagrangian_checkpoint():
    assert Forecaster.from_checkpoint(precision="32").member_trend_weight == MEMBER_TREND_WEIGHT == 2.0
    assert Forecaster.from_checkpoint(precision="32", member_trend_weight=0).member_trend_weight == 0
    with pytest.raises(ValueError, match="member_trend_weight"):
        Forecaster.from_checkpoint(precision="32", member_trend_weight=-1)


@pytest.mark.parametrize("count", [1, 2, 4, 8])
def test_symmetric_ensemble_turns_each_member_back(count):
    frames = torch.from_numpy(np.random.default_rng(0).gamma(0.5, 2.0, (1, 3, 1, 6, 10)).astype(np.float32))

    def last_frame(f, _motion):  # equivariant: every member turned back gives the same field
        return f[:, -1:, 0].numpy()

    np.testing.assert_allclose(symmetric_run(last_frame, frames, count), frames[:, -1:, 0].numpy(), rtol=1e-6)

    def plus_column_ramp(f, _motion):  # not equivariant: the mean over mirrors is symmetric
        return f[:, -1:, 0].numpy() + np.arange(f.shape[-1], dtype=np.float32)

    out = symmetric_run(plus_column_ramp, frames, count) - frames[:, -1:, 0].numpy()
    if count == 1:
        np.testing.assert_allclose(out[0, 0, 0], np.arange(10), atol=1e-5)
    else:  # the ramp and its mirror average to its mean; quarter turns put a row ramp beside it
        np.testing.assert_allclose(out, out[..., ::-1], atol=1e-5)
        np.testing.assert_allclose(out, out[..., ::-1, :], atol=1e-5)


def test_symmetric_forecast_of_an_untrained_model_is_still_lk():
    rates = moving_blob(5)[:, :, :52]  # not square: quarter turns change the frame's shape
    plain, ensemble = _lagrangian_forecaster(), _lagrangian_forecaster()
    ensemble.symmetries = 8
    np.testing.assert_allclose(ensemble.forecast(rates, 4, 5.0), plain.forecast(rates, 4, 5.0), atol=1e-5)


def test_cascade_fade_turns_the_forecast_towards_s_prog_and_keeps_no_data():
    rates = moving_blob(5) * (1.0 + 0.5 * np.random.default_rng(0).random((5, 64, 64), dtype=np.float32))
    rates[:, 60:, :] = np.nan
    plain, faded = _lagrangian_forecaster(), _lagrangian_forecaster()
    faded.fade = "cascade"
    a, (b, for_probabilities) = plain.forecast(rates, 4, 5.0), faded.forecast_for_probabilities(rates, 4, 5.0)
    assert np.isnan(b[:, 60:]).all() and np.isfinite(b[:, :60]).all()
    np.testing.assert_array_equal(for_probabilities[0], a)  # probabilities from the unfaded forecast
    detail = [np.nanstd(f[:60] - gaussian_filter(f[:60], 1.0)) for f in (a[-1], b[-1])]
    assert detail[1] < detail[0]  # the new small-scale noise of each input fades


def test_probabilities_come_from_the_unsmoothed_forecast_of_the_same_pass():
    from nowcast.methods import Window, get_method

    rates = moving_blob(5)
    smooth = _lagrangian_forecaster()
    smooth.smoothing_km_per_minute = 0.2
    out, for_probabilities = smooth.forecast_for_probabilities(rates, 4, 5.0)
    np.testing.assert_array_equal(out, smooth.forecast(rates, 4, 5.0))
    np.testing.assert_array_equal(for_probabilities[0], _lagrangian_forecaster().forecast(rates, 4, 5.0))
    window = Window(rates, 4, 5.0)
    np.testing.assert_array_equal(get_method("model", smooth, model_members=1)(window)[0], out)
    np.testing.assert_array_equal(window.probability_fields["model"], for_probabilities)
    assert "model" not in window.probability_growth  # the single forecast's default neighbourhood
    window = Window(rates, 4, 5.0)
    np.testing.assert_array_equal(get_method("model", smooth)(window)[0], out)  # by default an ensemble ...
    assert window.probability_fields["model"].shape == (MODEL_MEMBERS, 4, 64, 64)
    assert window.probability_growth["model"] == MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE  # ... with its own


def test_motion_perturbed_members_spread_with_lead_time():
    rates = moving_blob(5, speed=(2.0, -1.0))
    forecaster = _lagrangian_forecaster()
    out, members = forecaster.forecast_for_probabilities(rates, 6, 5.0, members=6)
    assert members.shape == (6, 6, 64, 64)
    np.testing.assert_array_equal(out, forecaster.forecast(rates, 6, 5.0))  # the forecast is unchanged
    # each member is the same cell advected along its own motion: peaks alike, places apart
    peaks = np.nanmax(members, axis=(2, 3))
    np.testing.assert_allclose(peaks, peaks[:1].repeat(6, axis=0), rtol=0.1)
    spread = np.nanstd(members, axis=0).mean(axis=(1, 2))
    assert spread[0] < spread[-1] and spread[-1] > 0.05
    again = forecaster.forecast_for_probabilities(rates, 6, 5.0, members=6)[1]
    np.testing.assert_array_equal(again, members)  # member k is seeded by k


@pytest.mark.parametrize("spacing", [0.5, 1.0])
def test_members_count_themselves_as_exceedance_counts_their_fields(spacing):
    """The fast count (no quantile map of every pixel) equals thresholding every member's field."""
    from scipy.ndimage import gaussian_filter

    from nowcast.probability import count_exceeding, exceedance

    rng = np.random.default_rng(4)
    field = gaussian_filter(np.maximum(rng.gamma(0.4, 6.0, (64, 64)) - 1.0, 0.0), 1.0).astype(np.float32)
    rates = np.stack([np.roll(field, 2 * t, axis=1) for t in range(5)])  # rain from 0 to tens of mm/h
    rates[:, :6, :9] = np.nan  # no data in a corner
    forecaster = _lagrangian_forecaster()
    forecaster.probability_matching = "cdf"
    _, members = forecaster.forecast_for_probabilities(rates, 4, 5.0, spacing_km=(spacing, spacing), members=3)
    thresholds = [0.05, 0.1, 1.0, 2.5, 5.0, 1e3]  # below the rain floor, at it, above every value
    got, got_no_data = members.exceeding(thresholds)
    want, want_no_data = count_exceeding(iter(members), thresholds)
    np.testing.assert_array_equal(got_no_data, want_no_data)
    np.testing.assert_array_equal(got, want)
    assert 0 < got[2].mean() < 3 and not got[-1].any()
    lead = [5.0, 10.0, 15.0, 20.0]  # and exceedance takes the fast count for such members
    fast = exceedance(members, [1.0, 5.0], lead, spacing, 0.5)
    np.testing.assert_array_equal(fast, exceedance(np.asarray(members), [1.0, 5.0], lead, spacing, 0.5))


def test_lagrangian_forecast_on_a_500m_grid_comes_back_on_it():
    rates = moving_blob(5, size=64)
    forecast = _lagrangian_forecaster().forecast(rates, 3, 5.0, spacing_km=(0.5, 0.5))
    assert forecast.shape == (3, 64, 64) and np.isfinite(forecast).all()
    assert forecast.max() > 5.0  # the cell survives the trip to 1 km and back


def test_matched_forecast_on_a_500m_grid_keeps_the_observed_wet_area():
    """The round trip to the 1 km model grid and back must not shrink the area above a threshold."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.gamma(0.4, 6.0, (96, 96)), 1.0)  # patchy rain at 500 m, mm/h
    rates = np.stack([field] * 5).astype(np.float32)
    forecaster = _lagrangian_forecaster()
    forecaster.probability_matching = "cdf"
    first = forecaster.forecast(rates, 2, 5.0, spacing_km=(0.5, 0.5))[0]
    round_trip = regrid.resample(regrid.resample(field, (48, 48)), (96, 96))
    for threshold in (1.0, 5.0):
        observed = (field >= threshold).mean()
        assert abs((round_trip >= threshold).mean() - observed) > 0.02  # what the round trip alone loses
        assert abs((first >= threshold).mean() - observed) < 0.01


def test_residual_head_starts_at_last_frame_and_has_no_blocks():
    config = ModelConfig(hidden=[4], patch_size=4, output_activation="identity", head="residual")
    model = EncoderForecaster(config)
    x = torch.rand(2, 3, 1, 20, 24)
    torch.testing.assert_close(model(x, 4), x[:, -1:].expand(-1, 4, -1, -1, -1))
    with torch.no_grad():
        model.output_conv.bias.fill_(0.1)
        model.output_conv.weight.normal_(0, 0.5)
    y = model(x, 2)[0, 0, 0] - x[0, -1, 0]
    # a bilinear upsampling has no jumps at patch borders: the change is as smooth across a border as inside
    steps = (y[:, 1:] - y[:, :-1]).abs()
    assert steps[:, 3].mean() < 3 * steps[:, 1].mean() + 1e-3


def test_residual_head_blends_each_blur_width_by_its_own_weight():
    """With β_k = 1 for one width and 0 elsewhere the forecast is that Gaussian blur of the last frame."""
    import math

    from scipy.ndimage import gaussian_filter

    config = ModelConfig(hidden=[4], output_activation="identity", head="residual", blur_sigmas=[1.0, 4.0])
    model = EncoderForecaster(config)
    x = torch.rand(1, 3, 1, 24, 32)
    torch.testing.assert_close(model(x, 2), x[:, -1:].expand(-1, 2, -1, -1, -1))
    for k, sigma in enumerate(config.blur_sigmas):
        with torch.no_grad():
            model.output_conv.bias.zero_()
            model.output_conv.bias[k + 1] = 1.0
        expected = gaussian_filter(x[0, -1, 0].numpy(), sigma, mode="nearest", truncate=math.ceil(3 * sigma) / sigma)
        np.testing.assert_allclose(model(x, 2)[0, 1, 0].detach().numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="blur_sigmas"):
        EncoderForecaster(ModelConfig(head="residual", blur_sigmas=[0.0]))


def test_soft_csi_matches_hard_csi_when_sharp():
    from nowcast.training import soft_csi

    pred = torch.tensor([[0.9, 0.1], [0.8, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # hits 1, false alarms 1, misses 0 → CSI 0.5
    assert float(soft_csi(pred, target, None, 0.5, 1e-4)) == pytest.approx(0.5)


def test_lagrangian_training_run_end_to_end(tmp_path, compose_config):
    """Cache, train on one synthetic radar, validate on another, then forecast with the checkpoint."""
    from conftest import tiny_lagrangian_run

    from nowcast.training import train

    cfg = compose_config(*tiny_lagrangian_run(tmp_path), "trainer.max_steps=3")
    metrics = train(cfg, tmp_path / "run")
    assert len(list((tmp_path / "cache").glob("lagrangian_*.npz"))) == 2  # one cache per source
    assert set(metrics["test"]) == {"model", "extrapolation"}
    forecaster = Forecaster.from_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert forecaster.lagrangian and forecaster.grid_km == 1.0
    assert forecaster.trend_weight == TREND_WEIGHT  # the Lagrangian post-processing's default
    rates = moving_blob(3, size=40)
    out = forecaster.forecast(rates, 4, 5.0, spacing_km=(1.0, 1.0))
    assert out.shape == (4, 40, 40) and np.isfinite(out).all()
    # a second build reads the cache instead of recomputing it
    before = {p: p.stat().st_mtime for p in (tmp_path / "cache").glob("*.npz")}
    train(cfg, tmp_path / "run2")
    assert before == {p: p.stat().st_mtime for p in (tmp_path / "cache").glob("*.npz")}


def test_validation_radar_must_not_be_trained_on(tmp_path, compose_config):
    from nowcast.data import build_data
    from nowcast.errors import UserError

    cfg = compose_config("data=lagrangian_radar", f"data.paths=[{tmp_path}]", f"data.val_paths=[{tmp_path}]")
    with pytest.raises(UserError, match="not trained on"):
        build_data(cfg.data)


def _two_storms(shape: tuple[int, int] = (40, 100)) -> np.ndarray:
    """A dry field with two 8×8 storms of 4 mm/h, near the left and right edges."""
    rates = np.zeros(shape)
    rates[10:18, 5:13] = 4.0
    rates[20:28, 85:93] = 4.0
    return rates


def test_rainy_boxes_find_separate_storms_without_overlap():
    from nowcast.data.lagrangian import rainy_boxes

    rates = np.stack([_two_storms()] * 3)
    boxes = rainy_boxes(rates, (30, 30), count=4, min_wet_fraction=0.02)
    assert len(boxes) == 2  # a third box would be dry
    covered = [rates[0][rows, cols].sum() for rows, cols in boxes]
    assert covered == [256.0, 256.0]  # each box holds a whole storm
    (r0, c0), (r1, c1) = boxes
    assert c0.stop <= c1.start or c1.stop <= c0.start
    assert rainy_boxes(rates, (30, 30), count=1, min_wet_fraction=0.02) == boxes[:1]


def test_a_large_mosaic_is_read_as_boxes_where_it_rains(tmp_path, compose_config):
    import pandas as pd
    from conftest import write_frame

    from nowcast.data.lagrangian import source_regions, source_sequences

    t0 = pd.Timestamp("2024-01-01 00:00")
    for t in range(8):
        write_frame(tmp_path / f"m_{t}.nc", _two_storms() * 5 / 60, t0 + pd.Timedelta(minutes=5 * t))
    cfg = compose_config("data=lagrangian_radar", "data.max_size_km=30", "data.max_boxes=4").data
    regions = source_regions(str(tmp_path), cfg)
    assert len(regions) == 2
    sequences = source_sequences(str(tmp_path), cfg)
    assert [seq.shape for seq, _ in sequences] == [(8, 30, 30)] * 2
    assert all(np.isclose(seq[0].sum(), 256.0) for seq, _ in sequences)
    assert source_regions(str(tmp_path), compose_config("data=lagrangian_radar").data) == [None]


def test_training_windows_take_a_noise_floor_for_no_rain(tmp_path, compose_config):
    import pandas as pd
    from conftest import write_frame

    from nowcast.data.lagrangian import source_sequences

    t0 = pd.Timestamp("2024-01-01 00:00")
    for t in range(3):  # dry pixels at 0.05 mm/h, as a radar's noise floor
        write_frame(tmp_path / f"m_{t}.nc", (_two_storms() + 0.05) * 5 / 60, t0 + pd.Timedelta(minutes=5 * t))
    [(seq, _)] = source_sequences(str(tmp_path), compose_config("data=lagrangian_radar").data)
    np.testing.assert_allclose(np.unique(seq), [0.0, 4.05], rtol=1e-6)  # the storms keep their rain


def test_forecaster_times_the_unroll_once_and_both_forecast_alike():
    rates = moving_blob(5) * 0.3
    forecaster = _lagrangian_forecaster()
    for layer in forecaster.model.output_conv.parameters():  # a model that changes the forecast
        torch.nn.init.normal_(layer, std=0.1, generator=torch.Generator().manual_seed(1))
    first = forecaster.forecast(rates, 4, 5.0)
    assert forecaster.unroll in ("split", "fused")
    other = _lagrangian_forecaster()
    other.model.load_state_dict(forecaster.model.state_dict())
    other.unroll = "fused" if forecaster.unroll == "split" else "split"
    np.testing.assert_allclose(other.forecast(rates, 4, 5.0), first, atol=1e-4, equal_nan=True)


def test_intensity_jitter_scales_each_item_by_one_factor_within_its_range():
    transform = Transform("log1p", 100.0)
    rng = np.random.default_rng(3)
    rates = rng.lognormal(0.0, 1.0, size=(6, 4, 8, 8)).astype(np.float32)
    arrays = {
        "frames": transform.encode(rates).astype(np.float16),
        "valid": np.ones(rates.shape, bool),
        "step_minutes": np.full(6, 5.0, np.float32),
        "velocity": np.zeros((6, 2, 8, 8), np.float16),
    }
    plain = LagrangianWindows(arrays, augment=True, seed=0, length=20)
    jittered = LagrangianWindows(arrays, augment=True, seed=0, length=20, jitter_db=3.0, transform=transform)
    factors = []
    for i in range(20):
        before = transform.decode(plain[i]["frames"].numpy().astype(np.float64))
        after = transform.decode(jittered[i]["frames"].numpy().astype(np.float64))
        ratio = after[before > 0.1] / before[before > 0.1]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # one factor for the whole item
        assert np.array_equal(plain[i]["valid"], jittered[i]["valid"])
        factors.append(ratio[0])
    assert 10 ** (-0.3) <= min(factors) < 1 < max(factors) <= 10**0.3
    with pytest.raises(ValueError, match="transform"):
        LagrangianWindows(arrays, augment=True, seed=0, jitter_db=3.0)


@pytest.mark.parametrize("kind", ["random", "whole pixels", "half pixels"])
def test_warp_of_a_field_without_no_data_is_scipys(kind):
    """The torch warp of NaN-free fields equals pysteps' ``map_coordinates`` warp, NaN outside included."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(5)
    field = rng.gamma(0.5, 4.0, (40, 56)).astype(np.float32)
    shift = {"random": rng.normal(0.0, 3.0, (2, 40, 56)), "whole pixels": np.ones((2, 40, 56)) * [[[2.0]], [[-3.0]]]}
    displacement = shift.get(kind, np.full((2, 40, 56), 0.5))
    ys, xs = np.mgrid[0:40, 0:56]
    coords = [ys + displacement[1], xs + displacement[0]]
    expected = map_coordinates(field, coords, mode="constant", cval=np.nan, order=1, prefilter=False)
    got = lagrangian.warp(field, displacement)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).any() and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
