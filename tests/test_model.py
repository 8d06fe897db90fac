"""Encoder–forecaster: shapes, padding, time-step input, checkpointing, save/load."""

import pytest
import torch

from nowcast.checkpoint import load_checkpoint, save_checkpoint
from nowcast.forecast import build_model
from nowcast.models import CELLS, EncoderForecaster, ModelConfig


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_shapes_backward_no_nan(cell):
    model = EncoderForecaster(ModelConfig(cell=cell, hidden=[4, 6, 5], kernel_size=3, patch_size=2))
    x = torch.rand(2, 3, 1, 10, 14)
    y = model(x, 4)
    assert y.shape == (2, 4, 1, 10, 14)
    assert torch.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_padding_to_patch_multiple_crops_back():
    model = EncoderForecaster(ModelConfig(hidden=[4], patch_size=4))
    assert model(torch.rand(1, 2, 1, 13, 7), 2).shape == (1, 2, 1, 13, 7)


def test_step_channel_changes_forecast_and_is_required():
    torch.manual_seed(0)
    model = EncoderForecaster(ModelConfig(hidden=[4], patch_size=2, step_channel=True))
    x = torch.rand(1, 3, 1, 8, 8)
    a = model(x, 2, torch.tensor([5.0]))
    b = model(x, 2, torch.tensor([15.0]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="step_minutes"):
        model(x, 2)


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = EncoderForecaster(ModelConfig(hidden=[4, 4], patch_size=2))
    x = torch.rand(2, 3, 1, 8, 8)
    model(x, 3).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model(x, 3).sum().backward()
    for g, r in zip((p.grad for p in model.parameters()), ref, strict=True):
        torch.testing.assert_close(g, r)


def test_paper_config_builds():
    model = EncoderForecaster(ModelConfig(hidden=[128, 64, 64], kernel_size=5, patch_size=4))
    assert model(torch.rand(1, 2, 1, 64, 64), 1).shape == (1, 1, 1, 64, 64)


def test_save_load_round_trip(tmp_path):
    config = ModelConfig(cell="convgru", hidden=[3, 5], patch_size=2)
    model = EncoderForecaster(config)
    payload = {"model": model.state_dict(), "model_config": config.to_dict(), "transform": {}, "data": {}}
    save_checkpoint(payload, tmp_path / "m.pt")
    again = build_model(load_checkpoint(tmp_path / "m.pt"))
    x = torch.rand(1, 2, 1, 6, 6)
    torch.testing.assert_close(model(x, 2), again(x, 2))


def test_model_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown model settings"):
        ModelConfig.from_dict({"hidden": [2], "colour": "blue"})
