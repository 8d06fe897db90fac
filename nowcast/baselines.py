"""The forecasts a nowcast must beat, all through pysteps except persistence.

* ``persistence``: the last observed frame, unchanged (Eulerian persistence).
* ``extrapolation``: Lucas–Kanade motion + semi-Lagrangian advection of the last frame.
* ``sprog``: pysteps' S-PROG (Seed 2003), the fair deterministic rival of an MSE-trained network.

All take rain rate ``(T, H, W)`` in mm/h (NaN = no data), ``n_out`` and an optional motion field
(persistence ignores it) and return ``(n_out, H, W)`` mm/h with NaN where the last input frame has
no data. :mod:`nowcast.methods` puts them, the network and STEPS behind one interface.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from nowcast._quiet import import_pysteps
from nowcast.motion import MOTION_STRIDE, lucas_kanade
from nowcast.parallel import map_frames, worker_count
from nowcast.transforms import RAIN_FLOOR_MM_H

#: dB transform settings for motion and S-PROG: rates below the rain floor (0.1 mm/h) are "no
#: rain" at -15 dBR.
RAIN_THRESHOLD_DBR = 10.0 * np.log10(RAIN_FLOOR_MM_H)
ZERO_DBR = -15.0


def to_dbr(rates: np.ndarray) -> np.ndarray:
    """10·log10(R) for R ≥ 0.1 mm/h, :data:`ZERO_DBR` below it and where there is no data."""
    out = np.full(rates.shape, ZERO_DBR, dtype=np.float64)
    wet = np.isfinite(rates) & (rates >= RAIN_FLOOR_MM_H)
    out[wet] = 10.0 * np.log10(rates[wet])
    return out


def from_dbr(dbr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_dbr`: values below the rain threshold become 0 mm/h; float32 stays float32."""
    dbr = np.asarray(dbr)
    rates = 10.0 ** (dbr.astype(np.result_type(dbr.dtype, np.float32)) / 10.0)
    rates[~np.isfinite(rates) | (rates < RAIN_FLOOR_MM_H)] = 0.0
    return rates


def _mask_like_last(forecast: np.ndarray, rates: np.ndarray) -> np.ndarray:
    forecast = np.asarray(forecast, dtype=np.float32)
    forecast[:, ~np.isfinite(rates[-1])] = np.nan
    return forecast


def persistence(rates: np.ndarray, n_out: int, velocity: np.ndarray | None = None) -> np.ndarray:
    """Repeat the last frame ``n_out`` times (``velocity`` is ignored)."""
    return np.repeat(rates[-1:].astype(np.float32), n_out, axis=0)


def motion_field(rates: np.ndarray, frames: int = 3, stride: int = MOTION_STRIDE) -> np.ndarray:
    """Lucas–Kanade motion ``(2, H, W)`` in pixels per time step from the last ``frames`` frames.

    Computed on a grid every ``stride`` pixels and refined bilinearly (:mod:`nowcast.motion`).
    """
    return lucas_kanade(to_dbr(rates[-frames:]), stride)


def extrapolation(
    rates: np.ndarray, n_out: int, velocity: np.ndarray | None = None, inflow: str = "empty"
) -> np.ndarray:
    """Semi-Lagrangian extrapolation of the last frame along the Lucas–Kanade motion.

    Pysteps' scheme (bilinear, NaN from outside the domain, set to 0), with its displacements
    computed on a coarse grid as everywhere in nowcast (:func:`nowcast.lagrangian.displacements`).
    ``inflow="observed"`` brings the last frame's value at the nearest observed pixel in where the
    motion comes from outside the domain, instead of no rain (see :mod:`nowcast.lagrangian`); the
    baseline that is scored is pysteps' (``empty``).
    """
    from nowcast import lagrangian

    if inflow not in lagrangian.INFLOWS:
        raise ValueError(f"inflow must be one of {lagrangian.INFLOWS}, got {inflow!r}")
    velocity = motion_field(rates) if velocity is None else velocity
    forward = lagrangian.displacements(velocity, n_out)
    last = rates[-1].astype(np.float64)
    if inflow == "empty":
        out = lagrangian.from_lagrangian(np.repeat(np.nan_to_num(last, nan=0.0)[None], n_out, axis=0), forward)
    else:  # what flows in is built once, not once per lead
        observed, no_data = lagrangian.inflow_field(last), ~np.isfinite(last)
        out = np.stack(map_frames(lambda j: lagrangian.advect(last, forward[j], observed, no_data), n_out))
    return _mask_like_last(np.nan_to_num(out, nan=0.0), rates)


def sprog(rates: np.ndarray, n_out: int, velocity: np.ndarray | None = None, n_cascade_levels: int = 6) -> np.ndarray:
    """Pysteps' S-PROG on dBR from the last three frames (AR(2) per cascade level)."""
    pysteps = import_pysteps()
    velocity = motion_field(rates) if velocity is None else velocity
    dbr = to_dbr(rates[-3:])
    if not np.any(dbr > ZERO_DBR):  # a dry scene: S-PROG has nothing to extrapolate
        return _mask_like_last(np.zeros((n_out, *rates.shape[1:])), rates)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            out = pysteps.nowcasts.get_method("sprog")(
                dbr,
                velocity,
                n_out,
                precip_thr=RAIN_THRESHOLD_DBR,
                n_cascade_levels=n_cascade_levels,
                num_workers=worker_count(),  # the cores every method gets (cascade levels in parallel)
            )
        except np.linalg.LinAlgError:  # a level that did not change at all: no AR(2) fit
            return unchanging_scene(rates, n_out, velocity)
    return _mask_like_last(from_dbr(out), rates)


def unchanging_scene(rates: np.ndarray, n_out: int, velocity: np.ndarray) -> np.ndarray:
    """S-PROG's and STEPS' forecast ``(n_out, H, W)`` mm/h where a cascade level's correlation is 1.

    Pysteps' Yule–Walker solver then finds a singular matrix (a scene that did not change at all
    from frame to frame, e.g. copies of one frame). A level whose correlation nears 1 does not fade,
    so the limit of both methods is the last frame carried along the motion: :func:`extrapolation`.
    """
    return extrapolation(rates, n_out, velocity)
