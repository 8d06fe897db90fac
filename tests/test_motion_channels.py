"""The motion as the network's input (``model.motion_channels``): turned with the frames, required, used."""

import numpy as np
import pytest
import torch
from test_lagrangian import moving_blob

from nowcast import lagrangian
from nowcast.baselines import extrapolation
from nowcast.data.lagrangian import LagrangianWindows
from nowcast.forecast import Forecaster
from nowcast.models import EncoderForecaster, ModelConfig
from nowcast.transforms import Transform

TURNS = [(turns, mirror) for turns in range(4) for mirror in (False, True)]


def _turn(field: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    out = np.rot90(field, turns, axes=(-2, -1))
    return np.ascontiguousarray(out[..., ::-1] if mirror else out)


@pytest.mark.parametrize(("turns", "mirror"), TURNS)
def test_advecting_the_turned_field_along_the_turned_motion_turns_the_advection(turns, mirror):
    rates = moving_blob(3, size=48)
    velocity = np.stack([np.full((48, 48), 1.5), np.full((48, 48), -1.0)])  # x then y, pixels per step
    expected = _turn(extrapolation(rates, 4, velocity), turns, mirror)
    turned = extrapolation(_turn(rates, turns, mirror), 4, lagrangian.turn_motion(velocity, turns, mirror))
    np.testing.assert_allclose(turned, expected, atol=1e-4)


def test_turning_motion_four_quarter_turns_or_two_mirrors_gives_it_back():
    velocity = np.random.default_rng(0).normal(size=(2, 5, 7))
    np.testing.assert_array_equal(lagrangian.turn_motion(velocity, 4, False), velocity)
    once = lagrangian.turn_motion(velocity, 0, True)
    np.testing.assert_array_equal(lagrangian.turn_motion(once, 0, True), velocity)
    assert lagrangian.turn_motion(velocity, 1, False).shape == (2, 7, 5)


def test_training_items_turn_their_motion_with_their_frames():
    rng = np.random.default_rng(1)
    frames = rng.random((2, 3, 6, 6)).astype(np.float16)  # no symmetry: each turn is told apart
    velocity = rng.normal(size=(2, 2, 6, 6)).astype(np.float16)
    arrays = {
        "frames": frames,
        "valid": np.ones(frames.shape, bool),
        "step_minutes": np.full(2, 5.0, np.float32),
        "velocity": velocity,
    }
    windows = LagrangianWindows(arrays, augment=True, seed=0, length=40)
    seen = set()
    for k in range(40):
        item = windows[k]
        out = item["frames"][:, 0].numpy()
        matches = [
            (i, turns, mirror)
            for i in range(2)
            for turns, mirror in TURNS
            if np.array_equal(_turn(frames[i].astype(np.float32), turns, mirror), out)
        ]
        assert len(matches) == 1
        i, turns, mirror = matches[0]
        seen.add((turns, mirror))
        expected = lagrangian.turn_motion(velocity[i].astype(np.float32), turns, mirror)
        np.testing.assert_array_equal(item["motion"].numpy(), expected)
    assert len(seen) >= 6  # the augmentation does turn and mirror


def _motion_model() -> EncoderForecaster:
    torch.manual_seed(0)
    config = ModelConfig(
        hidden=[4, 4],
        patch_size=4,
        output_activation="identity",
        step_channel=True,
        head="residual",
        motion_channels=True,
    )
    return EncoderForecaster(config).eval()


def test_motion_channels_are_required_and_change_the_forecast():
    model = _motion_model()
    torch.nn.init.normal_(model.output_conv.weight, std=0.1)  # a trained head: the motion can show
    frames = torch.rand(1, 5, 1, 18, 22)  # not a multiple of the patches
    step = torch.tensor([5.0])
    with pytest.raises(ValueError, match="motion"):
        model(frames, 3, step)
    still = torch.zeros(1, 2, 18, 22)
    moving = torch.zeros(1, 2, 18, 22)
    moving[:, 0] = 3.0
    with torch.no_grad():
        a, b = model(frames, 3, step, motion=still), model(frames, 3, step, motion=moving)
    assert a.shape == (1, 3, 1, 18, 22)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="does not match"):
        model(frames, 3, step, motion=torch.zeros(1, 2, 9, 22))


@pytest.mark.parametrize("symmetries", [1, 8])
def test_an_untrained_motion_model_is_still_lk_extrapolation(symmetries):
    forecaster = Forecaster(_motion_model(), Transform("log1p", 100.0), 5, 6, frame="lagrangian")
    config = ModelConfig(hidden=[4, 4], patch_size=4, output_activation="identity", step_channel=True, head="residual")
    plain = Forecaster(EncoderForecaster(config).eval(), Transform("log1p", 100.0), 5, 6, frame="lagrangian")
    forecaster.symmetries = symmetries
    rates = moving_blob(5)
    out = forecaster.forecast(rates, 4, 5.0, spacing_km=(1.0, 1.0))
    np.testing.assert_allclose(out, plain.forecast(rates, 4, 5.0, spacing_km=(1.0, 1.0)), atol=1e-4)


def test_a_trained_motion_model_forecasts_turned_inputs_with_turned_motion():
    """With every symmetry, the forecast of a turned radar is the turned forecast (the motion turns too)."""
    forecaster = Forecaster(_motion_model(), Transform("log1p", 100.0), 5, 6, frame="lagrangian")
    torch.nn.init.normal_(forecaster.model.output_conv.weight, std=0.1)
    forecaster.symmetries = 8
    forecaster.smoothing_km_per_minute = 0.0
    forecaster.probability_matching = "none"
    forecaster.trend_weight = 0.0
    rates = moving_blob(5, size=48)
    out = forecaster.forecast(rates, 3, 5.0, spacing_km=(1.0, 1.0))
    turned = forecaster.forecast(_turn(rates, 1, False), 3, 5.0, spacing_km=(1.0, 1.0))
    wet = out > 0.5
    assert wet.sum() > 50
    np.testing.assert_allclose(turned[_turn(wet, 1, False)], _turn(out, 1, False)[_turn(wet, 1, False)], rtol=0.1)


def test_a_motion_model_trains_and_forecasts_from_its_checkpoint(tmp_path, compose_config):
    from conftest import tiny_lagrangian_run

    from nowcast.training import train

    cfg = compose_config(*tiny_lagrangian_run(tmp_path), "trainer.max_steps=3", "model.motion_channels=true")
    metrics = train(cfg, tmp_path / "run")
    assert set(metrics["test"]) == {"model", "extrapolation"}
    forecaster = Forecaster.from_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert forecaster.model.config.motion_channels
    out = forecaster.forecast(moving_blob(3, size=40), 4, 5.0, spacing_km=(1.0, 1.0))
    assert out.shape == (4, 40, 40) and np.isfinite(out).all()
