"""Encoder–forecaster: shapes, padding, time-step input, checkpointing, save/load."""

import pytest
import torch
import torch.nn.functional as F

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


def _step_major(model: EncoderForecaster, frames: torch.Tensor, n_out: int, step: torch.Tensor) -> torch.Tensor:
    """The textbook unroll: every layer at step t before any layer at t + 1, zero initial states."""
    p = model.config.patch_size
    b, t_in = frames.shape[:2]
    x = F.pixel_unshuffle(frames.flatten(0, 1), p).unflatten(0, (b, t_in))
    field = (step / 10.0).reshape(-1, 1, 1, 1).expand(b, 1, *x.shape[-2:])
    states = [cell.init_state(x[:, 0], *x.shape[-2:]) for cell in model.encoder]
    for t in range(t_in):
        inp = torch.cat([x[:, t], field], dim=1)
        for i, cell in enumerate(model.encoder):
            states[i] = cell(cell.project_inputs(inp), states[i])
            inp = states[i][0]
    outputs = []
    for _ in range(n_out):
        inp, hs = field, []
        for i, cell in enumerate(model.forecaster):
            states[i] = cell(cell.project_inputs(inp), states[i])
            inp = states[i][0]
            hs.append(inp)
        outputs.append(torch.sigmoid(F.pixel_shuffle(model.output_conv(torch.cat(hs, 1)), p)))
    return torch.stack(outputs, 1)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_layer_major_unroll_equals_step_major(cell):
    """Batching over time, the zero-state shortcut and the time-major layout change nothing."""
    torch.manual_seed(3)
    model = EncoderForecaster(ModelConfig(cell=cell, hidden=[5, 3], patch_size=2, step_channel=True))
    frames, step = torch.rand(3, 4, 1, 6, 8), torch.tensor([5.0, 10.0, 15.0])
    expected = _step_major(model, frames, 3, step)
    torch.testing.assert_close(model(frames, 3, step), expected)
    torch.testing.assert_close(model(frames[1:2], 3, step[1:2]), expected[1:2])  # samples stay apart


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_fused_unroll_equals_split_unroll(cell):
    """One convolution over cat([x, h]) per step gives the split unroll's forecast and gradients."""
    torch.manual_seed(5)
    model = EncoderForecaster(ModelConfig(cell=cell, hidden=[5, 3], patch_size=2, step_channel=True))
    frames, step = torch.rand(2, 4, 1, 6, 8), torch.tensor([5.0, 10.0])
    model(frames, 3, step).square().sum().backward()
    expected, grads = model(frames, 3, step).detach(), [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.unroll = "fused"
    out = model(frames, 3, step)
    out.square().sum().backward()
    torch.testing.assert_close(out, expected)
    for g, r in zip((p.grad for p in model.parameters()), grads, strict=True):
        torch.testing.assert_close(g, r)


def test_choose_unroll_times_both_and_leaves_no_trace():
    from nowcast.unroll import choose_unroll

    torch.manual_seed(0)
    model = EncoderForecaster(ModelConfig(hidden=[4, 4], patch_size=2))
    frames = torch.rand(2, 3, 1, 8, 8)
    rng = torch.get_rng_state()
    name, seconds = choose_unroll(model, frames, 2, None, "32", reps=1)
    assert name in ("split", "fused") and set(seconds) == {"split", "fused"}
    assert seconds[name] == min(seconds.values())
    assert all(p.grad is None for p in model.parameters()) and model.unroll == "split"
    assert torch.equal(torch.get_rng_state(), rng)
    gru = EncoderForecaster(ModelConfig(cell="convgru", hidden=[4], patch_size=2))
    assert choose_unroll(gru, torch.rand(1, 2, 1, 8, 8), 1, None, "32") == ("split", {})


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


def test_activations_follow_the_weights_memory_format():
    """An NCHW model keeps NCHW activations (its 1×1 output weight is contiguous in both formats)."""
    torch.manual_seed(0)
    model = EncoderForecaster(ModelConfig(hidden=[4, 4], patch_size=2))
    seen = []
    model.output_conv.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    frames = torch.rand(2, 3, 1, 8, 8)
    for unroll in ("split", "fused"):
        model.unroll = unroll
        assert not model.channels_last
        model(frames, 2)
        assert seen[-1].is_contiguous() and not seen[-1].is_contiguous(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)
        assert model.channels_last
        model(frames, 2)
        assert seen[-1].is_contiguous(memory_format=torch.channels_last) and not seen[-1].is_contiguous()
        model.to(memory_format=torch.contiguous_format)
