"""S-PROG's scale-dependent fade, applied to any forecast in the frame that moves with the rain.

S-PROG (Seed 2003) splits dB rain into a cascade of spatial scales and lets each scale fade at the
rate its own AR(2) process sets, estimated per window from the last three observations: small
scales decorrelate in minutes, large ones in hours. :func:`cascade_fade` applies that same fade to
a forecast (the network's): each frame at lead ``t`` is decomposed with pysteps' FFT cascade, the
normalised level ``k`` is multiplied by ``ρ_k(t)``, the autocorrelation of level ``k``'s AR(2)
process at lag ``t`` (``ρ(0) = 1``, ``ρ(1) = γ₁``, ``ρ(t) = φ₁ρ(t−1) + φ₂ρ(t−2)``; for S-PROG's
Gaussian AR(2) process, ``ρ(t)·x`` is the expected level at lead ``t`` given the level ``x`` now),
and the levels are put back with the frame's own means and standard deviations. The cascade, the
correlations and the AR fit are pysteps' own code, called as ``pysteps.nowcasts.sprog`` calls it.
"""

from __future__ import annotations

import numpy as np

from nowcast._quiet import import_pysteps
from nowcast.baselines import RAIN_THRESHOLD_DBR, from_dbr, to_dbr

#: Cascade levels, as the project's S-PROG baseline uses.
N_CASCADE_LEVELS = 6
#: Largest lag correlation used: a perfectly persistent level (γ = 1) has no AR(2) fit.
MAX_CORRELATION = 0.999
#: Wet pixels (in all of the last three observations) needed to estimate the correlations.
MIN_WET_PIXELS = 100


def level_autocorrelations(observed: np.ndarray, n_out: int, n_levels: int = N_CASCADE_LEVELS) -> np.ndarray | None:
    """``ρ_k(t)`` for levels ``k`` and leads ``t = 1 … n_out``, ``(n_levels, n_out)``.

    ``observed`` ``(3, H, W)`` mm/h: the last three observations, already in the analysis frame
    (NaN outside the domain). None when fewer than :data:`MIN_WET_PIXELS` pixels are wet in all
    three (a dry scene has no correlations to estimate).
    """
    pysteps = import_pysteps()
    from pysteps.timeseries import autoregression, correlation

    dbr = to_dbr(observed)
    wet = np.logical_and.reduce(dbr >= RAIN_THRESHOLD_DBR, axis=0)
    if wet.sum() < MIN_WET_PIXELS:
        return None
    bandpass = pysteps.cascade.bandpass_filters.filter_gaussian(dbr.shape[1:], n_levels)
    levels = np.stack([_normalised_levels(frame, bandpass, wet)[0] for frame in dbr], axis=1)  # (K, 3, H, W)
    rho = np.empty((n_levels, n_out + 1))
    for k in range(n_levels):
        # clipped: a level that did not change at all (γ = 1) has no AR(2) fit, and fades as little
        gamma = np.clip(correlation.temporal_autocorrelation(levels[k], mask=wet), -MAX_CORRELATION, MAX_CORRELATION)
        gamma[1] = autoregression.adjust_lag2_corrcoef2(gamma[0], gamma[1])
        phi = autoregression.estimate_ar_params_yw(gamma)  # φ₁, φ₂, noise std
        rho[k, 0], rho[k, 1] = 1.0, gamma[0]
        for t in range(2, n_out + 1):
            rho[k, t] = phi[0] * rho[k, t - 1] + phi[1] * rho[k, t - 2]
    return rho[:, 1:]


def cascade_fade(forecast: np.ndarray, observed: np.ndarray, n_levels: int = N_CASCADE_LEVELS) -> np.ndarray:
    """Fade each scale of ``forecast`` ``(n_out, H, W)`` mm/h as S-PROG would; same shape, float32.

    ``observed`` ``(3, H, W)`` mm/h, the last three observations in the analysis frame, sets the
    fade rates (:func:`level_autocorrelations`). A dry scene comes back unchanged.
    """
    rho = level_autocorrelations(observed, forecast.shape[0], n_levels)
    if rho is None:
        return forecast.astype(np.float32)
    pysteps = import_pysteps()
    bandpass = pysteps.cascade.bandpass_filters.filter_gaussian(forecast.shape[1:], n_levels)
    out = np.empty(forecast.shape, dtype=np.float32)
    for t, frame in enumerate(to_dbr(forecast)):
        levels, means, stds = _normalised_levels(frame, bandpass, None)
        faded = sum(rho[k, t] * levels[k] * stds[k] + means[k] for k in range(n_levels))
        out[t] = from_dbr(faded)
    return out


def _normalised_levels(dbr: np.ndarray, bandpass: dict, mask: np.ndarray | None) -> tuple[np.ndarray, list, list]:
    """Pysteps' FFT cascade of one dB frame: normalised levels ``(K, H, W)``, their means and stds."""
    decomposition = import_pysteps().cascade.decomposition.decomposition_fft(
        dbr, bandpass, mask=mask, normalize=True, compute_stats=True
    )
    return decomposition["cascade_levels"], decomposition["means"], decomposition["stds"]
