"""S-PROG's scale-dependent fade applied to a forecast (nowcast.cascade)."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from nowcast.cascade import cascade_fade, level_autocorrelations


def rain(seed: int, sigma: float = 3.0, size: int = 128) -> np.ndarray:
    """A log-normal rain field (mm/h), ``(size, size)``, wet almost everywhere, scales of ``sigma`` px."""
    field = gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), sigma)
    return np.exp(field / field.std() * 1.2).astype(np.float32)


def test_unchanged_observations_fade_nothing():
    frame = rain(0) + 0.5  # wet everywhere, so no pixel crosses the rain threshold
    rho = level_autocorrelations(np.stack([frame] * 3), 4)
    assert rho.shape == (6, 4)
    np.testing.assert_allclose(rho, 1.0, atol=5e-3)
    faded = cascade_fade(np.stack([frame] * 4), np.stack([frame] * 3))
    np.testing.assert_allclose(faded, np.broadcast_to(frame, faded.shape), rtol=0.02)


def test_small_scales_that_change_fade_first_and_large_ones_stay():
    large = rain(1, sigma=12.0)
    observed = np.stack([large * rain(10 + k, sigma=1.0) ** 0.8 for k in range(3)])  # new small scales each step
    rho = level_autocorrelations(observed, 6)
    assert rho[0, 0] > 0.8 and rho[-1, 0] < 0.3  # largest scale kept, smallest mostly new
    assert rho[0, -1] > 0.5  # and still there at the last lead
    forecast = np.stack([observed[-1]] * 6)
    faded = cascade_fade(forecast, observed)
    detail = [np.std(f - gaussian_filter(f, 2.0)) for f in np.log(np.maximum(faded, 0.1))]
    assert detail[0] < np.std(np.log(observed[-1]) - gaussian_filter(np.log(observed[-1]), 2.0))
    assert detail[-1] <= detail[0] + 1e-6  # no more small-scale detail at the last lead than at the first
    big = [np.corrcoef(gaussian_filter(f, 12.0).ravel(), gaussian_filter(large, 12.0).ravel())[0, 1] for f in faded]
    assert min(big) > 0.9  # the storm's large-scale shape survives


def test_dry_scene_comes_back_unchanged():
    dry = np.zeros((3, 64, 64), dtype=np.float32)
    forecast = np.stack([rain(2)[:64, :64]] * 2)
    assert level_autocorrelations(dry, 2) is None
    np.testing.assert_array_equal(cascade_fade(forecast, dry), forecast)


@pytest.mark.parametrize("shape", [(96, 128), (128, 96)])
def test_no_data_outside_the_domain_is_ignored(shape):
    observed = np.stack([rain(3 + k)[: shape[0], : shape[1]] for k in range(3)])
    observed[:, :10] = np.nan  # advected in from outside the domain
    rho = level_autocorrelations(observed, 3)
    assert np.isfinite(rho).all() and (np.abs(rho) <= 1).all()
