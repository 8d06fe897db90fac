"""The residual head's displacement (``model.motion_correction``): zero at the start, moves what it says."""

import numpy as np
import pytest
import torch
from test_lagrangian import moving_blob

from nowcast.errors import UserError
from nowcast.forecast import Forecaster
from nowcast.models import EncoderForecaster, ModelConfig
from nowcast.models.encoder_forecaster import MOTION_SCALE_PIXELS, shift
from nowcast.transforms import Transform


def _config(**overrides) -> ModelConfig:
    values = dict(hidden=[4], patch_size=4, output_activation="identity", step_channel=True, head="residual")
    return ModelConfig(**{**values, **overrides})


def test_shift_moves_a_field_by_whole_and_half_pixels():
    field = torch.zeros(1, 1, 20, 24)
    field[0, 0, 8, 10] = 1.0
    displacement = torch.zeros(1, 2, 20, 24)
    displacement[:, 0], displacement[:, 1] = 3.0, -2.0  # 3 px right, 2 px up
    moved = shift(field, displacement)
    assert moved[0, 0, 6, 13] == pytest.approx(1.0, abs=1e-5)
    assert moved.sum() == pytest.approx(1.0, abs=1e-5)
    displacement[:, 0], displacement[:, 1] = 0.5, 0.0
    half = shift(field, displacement)[0, 0, 8]
    assert half[10].item() == pytest.approx(0.5, abs=1e-5) and half[11].item() == pytest.approx(0.5, abs=1e-5)
    torch.testing.assert_close(shift(field, torch.zeros_like(displacement)), field, atol=1e-6, rtol=0)


def test_shift_takes_the_edge_value_beyond_the_edge():
    field = torch.arange(6.0).repeat(4, 1)[None, None]  # (1, 1, 4, 6), value = column
    displacement = torch.zeros(1, 2, 4, 6)
    displacement[:, 0] = 2.0  # everything moves right: the left columns come from beyond the edge
    moved = shift(field, displacement)[0, 0, 0]
    torch.testing.assert_close(moved, torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 3.0]))


def test_an_untrained_motion_correction_model_repeats_the_last_frame():
    model = EncoderForecaster(_config(motion_correction=True))
    x = torch.rand(2, 3, 1, 20, 24)
    out = model(x, 4, torch.full((2,), 5.0))
    torch.testing.assert_close(out, x[:, -1:].expand(-1, 4, -1, -1, -1), atol=1e-5, rtol=0)


def test_an_untrained_motion_correction_model_is_lk_extrapolation():
    corrected_model = EncoderForecaster(_config(motion_correction=True)).eval()
    corrected = Forecaster(corrected_model, Transform("log1p", 100.0), 5, 6, frame="lagrangian")
    plain = Forecaster(EncoderForecaster(_config()).eval(), Transform("log1p", 100.0), 5, 6, frame="lagrangian")
    rates = moving_blob(5)
    np.testing.assert_allclose(
        corrected.forecast(rates, 4, 5.0, spacing_km=(1.0, 1.0)),
        plain.forecast(rates, 4, 5.0, spacing_km=(1.0, 1.0)),
        atol=1e-4,
    )


def test_the_head_moves_the_smoothed_last_frame_by_its_displacement_then_adds_the_change():
    model = EncoderForecaster(_config(motion_correction=True, blur_sigmas=[2.0]))
    with torch.no_grad():  # channels: Δ, β, d_x, d_y; a constant head
        model.output_conv.bias.copy_(torch.tensor([0.1, 0.0, 2.0 / MOTION_SCALE_PIXELS, 1.0 / MOTION_SCALE_PIXELS]))
    x = torch.zeros(1, 3, 1, 24, 24)
    x[0, -1, 0, 10:14, 6:9] = 1.0
    out = model(x, 2, torch.full((1,), 5.0))[0, :, 0]
    expected = torch.full((24, 24), 0.1)
    expected[11:15, 8:11] += 1.0  # moved 2 px right and 1 px down
    for lead in range(2):
        torch.testing.assert_close(out[lead], expected, atol=1e-5, rtol=0)


def test_the_displacement_learns_from_the_loss():
    model = EncoderForecaster(_config(motion_correction=True))
    x = torch.zeros(1, 3, 1, 24, 24)
    x[0, :, 0, 8:16, 8:16] = 1.0
    target = torch.roll(x[:, -1:], 1, dims=-1)
    with torch.no_grad():  # features that are not all zero, so the head's weights get a gradient
        model.output_conv.weight.normal_(0, 0.01)
    loss = (model(x, 1, torch.full((1,), 5.0)) - target).pow(2).mean()
    loss.backward()
    assert model.output_conv.bias.grad[-2].abs() > 0  # d_x is pulled towards the target


def test_motion_correction_needs_the_residual_head(compose_config):
    from nowcast.config import check_config

    with pytest.raises(ValueError, match="residual"):
        EncoderForecaster(ModelConfig(hidden=[4], motion_correction=True))
    with pytest.raises(UserError, match="model.motion_correction"):
        check_config(compose_config("model.motion_correction=true"))
