"""S-PROG in the frame that moves with the rain: its forecast there, and its fade applied to another's.

S-PROG (Seed 2003) splits dB rain into a cascade of spatial scales and lets each scale fade at the
rate its own AR(2) process sets, estimated per window from the last three observations: small
scales decorrelate in minutes, large ones in hours. :func:`cascade_fade` applies that same fade to
a forecast (the network's): each frame at lead ``t`` is decomposed with pysteps' FFT cascade, the
normalised level ``k`` is multiplied by ``ρ_k(t)``, the autocorrelation of level ``k``'s AR(2)
process at lag ``t`` (``ρ(0) = 1``, ``ρ(1) = γ₁``, ``ρ(t) = φ₁ρ(t−1) + φ₂ρ(t−2)``; for S-PROG's
Gaussian AR(2) process, ``ρ(t)·x`` is the expected level at lead ``t`` given the level ``x`` now),
and the levels are put back with the frame's own means and standard deviations. The cascade, the
correlations and the AR fit are pysteps' own code, called as ``pysteps.nowcasts.sprog`` calls it.

:func:`moving_frame_sprog` is S-PROG itself on frames already advected to the analysis time (no
extrapolation: the frames already moved), so a Lagrangian forecaster advects its result along the
same displacements as its network's forecast; its fit is :func:`fit_cascade`, the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nowcast._quiet import import_pysteps
from nowcast.baselines import RAIN_THRESHOLD_DBR, from_dbr, to_dbr

#: Cascade levels, as the project's S-PROG baseline uses.
N_CASCADE_LEVELS = 6
#: Largest lag correlation used: a perfectly persistent level (γ = 1) has no AR(2) fit.
MAX_CORRELATION = 0.999
#: Wet pixels (in all of the last three observations) needed to estimate the correlations.
MIN_WET_PIXELS = 100


@dataclass
class CascadeFit:
    """S-PROG's AR(2) fit to the last three observations, as ``pysteps.nowcasts.sprog`` makes it.

    ``levels`` ``(K, 3, H, W)`` the normalised cascade levels of the three dB frames, ``means`` and
    ``stds`` ``(K,)`` those of the last frame, ``gamma`` ``(K, 2)`` the lag-1 and (stationarity-adjusted)
    lag-2 correlations, ``phi`` ``(K, 3)`` the AR(2) parameters φ₁, φ₂ and the noise's std.
    """

    levels: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    gamma: np.ndarray
    phi: np.ndarray


def fit_cascade(observed: np.ndarray, n_levels: int = N_CASCADE_LEVELS, conditional: bool = False) -> CascadeFit | None:
    """Pysteps' cascade and AR(2) fit of ``observed`` ``(3, H, W)`` mm/h (NaN counts as dry).

    The steps of ``pysteps.nowcasts.sprog``: dB rain, the Gaussian bandpass FFT cascade of each
    frame, normalised, each level's temporal autocorrelation, the lag-2 adjustment and the
    Yule–Walker fit, with pysteps' own functions; with ``conditional`` the statistics and
    correlations are taken over the pixels wet in all three frames only (pysteps' ``conditional``
    option), else over the whole field (its default). Each correlation is clipped to
    ±:data:`MAX_CORRELATION` (a level that did not change at all has no AR(2) fit). None when fewer
    than :data:`MIN_WET_PIXELS` pixels are wet in all three.
    """
    pysteps = import_pysteps()
    from pysteps.timeseries import autoregression, correlation

    dbr = to_dbr(observed[-3:])
    wet = np.logical_and.reduce(dbr >= RAIN_THRESHOLD_DBR, axis=0)
    if wet.sum() < MIN_WET_PIXELS:
        return None
    bandpass = pysteps.cascade.bandpass_filters.filter_gaussian(dbr.shape[1:], n_levels)
    mask = wet if conditional else None
    levels = np.empty((n_levels, *dbr.shape))  # (K, 3, H, W), filled one frame at a time (no stacked copy)
    for i, frame in enumerate(dbr):
        levels[:, i], means, stds = _normalised_levels(frame, bandpass, mask)
    gamma = np.empty((n_levels, 2))
    phi = np.empty((n_levels, 3))
    for k in range(n_levels):
        gamma[k] = np.clip(
            correlation.temporal_autocorrelation(levels[k], mask=mask), -MAX_CORRELATION, MAX_CORRELATION
        )
        gamma[k, 1] = autoregression.adjust_lag2_corrcoef2(gamma[k, 0], gamma[k, 1])
        phi[k] = autoregression.estimate_ar_params_yw(gamma[k])  # φ₁, φ₂, noise std
    return CascadeFit(levels, np.asarray(means), np.asarray(stds), gamma, phi)  # the last frame's means, stds


def level_autocorrelations(observed: np.ndarray, n_out: int, n_levels: int = N_CASCADE_LEVELS) -> np.ndarray | None:
    """``ρ_k(t)`` for levels ``k`` and leads ``t = 1 … n_out``, ``(n_levels, n_out)``.

    ``observed`` ``(3, H, W)`` mm/h: the last three observations, already in the analysis frame
    (NaN outside the domain). None when fewer than :data:`MIN_WET_PIXELS` pixels are wet in all
    three (a dry scene has no correlations to estimate).
    """
    fit = fit_cascade(observed, n_levels, conditional=True)
    if fit is None:
        return None
    rho = np.empty((n_levels, n_out + 1))
    for k in range(n_levels):
        rho[k, 0], rho[k, 1] = 1.0, fit.gamma[k, 0]
        for t in range(2, n_out + 1):
            rho[k, t] = fit.phi[k, 0] * rho[k, t - 1] + fit.phi[k, 1] * rho[k, t - 2]
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


def moving_frame_sprog(observed: np.ndarray, n_out: int, n_levels: int = N_CASCADE_LEVELS) -> np.ndarray:
    """S-PROG's forecast ``(n_out, H, W)`` mm/h, float32, in the frame of ``observed``, not yet advected.

    ``observed`` ``(3, H, W)`` mm/h: the last three observations, already advected to the analysis
    time (NaN outside the domain counts as dry). Pysteps' S-PROG without its extrapolation (the
    frames already moved) and without its wet-area mask and probability matching: from
    :func:`fit_cascade`, each level goes on as ``x(t) = φ₁ x(t−1) + φ₂ x(t−2)`` and the levels are
    put back with the last frame's means and stds, as ``pysteps.nowcasts.sprog`` does. The caller
    matches every frame to the last observation, which sets the wet area as pysteps' mask would (the
    mask only makes the pixels below the wet-area percentile equal; matching by rank sends those to
    the driest values either way). Tested against pysteps' ``sprog`` with ``extrap_method="eulerian"``.
    Too little rain to fit (:func:`fit_cascade` gives None) gives the last frame at every lead.
    """
    fit = fit_cascade(observed, n_levels)
    if fit is None:
        return np.repeat(np.nan_to_num(observed[-1:], nan=0.0), n_out, axis=0).astype(np.float32)
    phi1, phi2 = (fit.phi[:, j, None, None].astype(np.float32) for j in (0, 1))
    stds = fit.stds.astype(np.float32)
    mean = np.float32(fit.means.sum())
    before, now = fit.levels[:, -2].astype(np.float32), fit.levels[:, -1].astype(np.float32)
    out = np.empty((n_out, *observed.shape[1:]), dtype=np.float32)
    for t in range(n_out):
        before, now = now, phi1 * now + phi2 * before
        out[t] = np.tensordot(stds, now, axes=1) + mean  # dB: Σ_k (level_k·std_k + mean_k)
    return from_dbr(out).astype(np.float32)
