"""The soft CSI of the post-processed, probability-matched forecast (``trainer.csi_matched``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nowcast import matched_csi
from nowcast.forecast import continue_trend, match_distribution
from nowcast.transforms import Transform

TRANSFORM = Transform.from_dict({"kind": "log1p", "scale_mm_h": 100.0})


def rain(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Rain rates, mm/h: about half the pixels dry, the rest up to ~20 mm/h."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.gamma(0.6, 6.0, shape) - 1.0, 0.0).astype(np.float32)


def test_levels_leave_as_many_pixels_above_as_the_last_input_has():
    torch.manual_seed(0)
    forecast = torch.rand(2, 3, 1, 10, 10)
    last = torch.rand(2, 1, 1, 10, 10)
    valid = (torch.rand(2, 3, 1, 10, 10) > 0.2).float()
    levels = matched_csi.matched_levels(forecast, last, valid, 0.6)
    assert levels.shape == (2, 3, 1, 1, 1)
    for b in range(2):
        for t in range(3):
            mask = valid[b, t] > 0
            assert int((forecast[b, t][mask] > levels[b, t]).sum()) == int((last[b, 0][mask] >= 0.6).sum())


def test_no_wet_pixel_in_the_last_input_gives_no_event_and_all_wet_gives_all():
    forecast = torch.rand(1, 2, 1, 6, 6)
    valid = torch.ones_like(forecast)
    assert torch.isinf(matched_csi.matched_levels(forecast, torch.zeros(1, 1, 1, 6, 6), valid, 0.5)).all()
    everywhere = matched_csi.matched_levels(forecast, torch.ones(1, 1, 1, 6, 6), valid, 0.5)
    assert (forecast > everywhere).all()


def test_sharp_matched_csi_is_the_csi_of_the_probability_matched_forecast(monkeypatch):
    """With a vanishing sigmoid width it equals the CSI of pysteps-style CDF matching to the last frame."""
    forecast_mm = rain((3, 24, 24), 1)
    last_mm, target_mm = rain((24, 24), 2), rain((3, 24, 24), 3)
    threshold = 1.0
    matched = match_distribution(forecast_mm, last_mm)  # what the forecast path does
    f, o = matched >= threshold, target_mm >= threshold
    expected = (f & o).sum() / (f | o).sum()

    monkeypatch.setattr(matched_csi, "SOFT_WIDTH", 1e-7)
    as_tensor = lambda a: TRANSFORM.encode(torch.from_numpy(a)).reshape(1, -1, 1, 24, 24)  # noqa: E731
    valid = torch.ones(1, 3, 1, 24, 24)
    level = float(TRANSFORM.encode(torch.tensor(threshold)))
    got = matched_csi.matched_soft_csi(as_tensor(forecast_mm), as_tensor(last_mm), as_tensor(target_mm), valid, level)
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_post_processing_repeats_the_forecasts_trend_and_smoothing():
    inputs_mm = rain((3, 40, 40), 4)
    frames_mm = rain((2, 40, 40), 5)
    inputs = TRANSFORM.encode(torch.from_numpy(inputs_mm))[None, :, None]
    pred = TRANSFORM.encode(torch.from_numpy(frames_mm))[None, :, None]
    step = torch.tensor([5.0])

    trended = matched_csi.post_processed(pred, inputs, step, TRANSFORM, 0.5, 0.0, 1.0)
    expected = continue_trend(frames_mm, inputs_mm[-2], inputs_mm[-1], 0.5)  # below 0 where decay passes dry
    np.testing.assert_allclose(trended[0, :, 0].numpy(), TRANSFORM.encode(expected), rtol=1e-4, atol=1e-5)

    smoothed = matched_csi.post_processed(pred, inputs, step, TRANSFORM, 0.0, 0.4, 1.0)  # σ = 2 and 4 px
    got = TRANSFORM.decode(smoothed)[0, :, 0].numpy()
    for lead, sigma in enumerate((2.0, 4.0)):
        inner = (slice(17, -17), slice(17, -17))  # away from the border, where the padding differs
        want = gaussian_filter(frames_mm[lead].astype(np.float64), sigma, mode="reflect")
        np.testing.assert_allclose(got[lead][inner], want[inner], rtol=1e-4, atol=1e-4)


def test_gradients_reach_every_pixel_near_the_level():
    torch.manual_seed(1)
    pred = torch.rand(2, 2, 1, 12, 12, requires_grad=True)
    inputs = torch.rand(2, 3, 1, 12, 12)
    forecast = matched_csi.post_processed(pred, inputs, torch.tensor([5.0, 10.0]), TRANSFORM, 0.5, 0.1, 1.0)
    target, valid = torch.rand(2, 2, 1, 12, 12), torch.ones(2, 2, 1, 12, 12)
    score = matched_csi.matched_soft_csi(forecast, inputs[:, -1:], target, valid, 0.5)
    score.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_matched_loss_needs_lagrangian_windows():
    from types import SimpleNamespace

    from nowcast.training import training_loss

    bundle = SimpleNamespace(frame="eulerian", transform=TRANSFORM, grid_km=1.0)
    cfg = SimpleNamespace(csi_thresholds=[1.0], csi_weights=[1.0], csi_matched=True)
    pred = torch.rand(1, 2, 1, 8, 8)
    with pytest.raises(ValueError, match="csi_matched needs Lagrangian"):
        training_loss("logcsi", pred, pred, torch.ones_like(pred), bundle, cfg, inputs=pred, step_minutes=None)
