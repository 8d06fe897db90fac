"""The frame that moves with the rain: pysteps' semi-Lagrangian advection as pure function pairs.

Motion ``V`` ``(2, H, W)`` (pixels per time step, x then y, as pysteps) comes from Lucas–Kanade on
dB-transformed rain (:func:`nowcast.baselines.motion_field`). Displacements are pysteps'
semi-Lagrangian ones (``pysteps.extrapolation.semilagrangian.extrapolate`` with
``return_displacement=True``), computed once per window and reused for every frame; a field is
warped exactly as pysteps warps it (bilinear ``map_coordinates``, NaN from outside the domain).

* :func:`inputs_to_lagrangian`: the input frame ``k`` steps before the analysis time, advected
  ``k`` steps forward, so every input lies on the analysis frame.
* :func:`targets_to_lagrangian` / :func:`from_lagrangian`: the frame at lead ``j`` advected ``j``
  steps backward, and its inverse, ``j`` steps forward. ``from_lagrangian`` of the last input
  repeated is exactly pysteps' extrapolation.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import map_coordinates

from nowcast._quiet import import_pysteps


def displacements(velocity: np.ndarray, steps: int, backward: bool = False) -> np.ndarray:
    """Semi-Lagrangian displacements ``(steps, 2, H, W)`` (pixels) after 1, 2, … ``steps`` steps.

    ``backward`` follows the motion back in time (the velocity negated).
    """
    extrapolate = import_pysteps().extrapolation.get_method("semilagrangian")
    velocity = -velocity if backward else velocity
    out = np.empty((steps, *velocity.shape), dtype=np.float64)
    previous = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(steps):
            _, previous = extrapolate(None, velocity, 1, displacement_prev=previous, return_displacement=True)
            out[k] = previous
    return out


def warp(field: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """Warp ``field`` ``(H, W)`` by ``displacement`` ``(2, H, W)`` as pysteps does (NaN outside)."""
    h, w = field.shape
    ys, xs = np.mgrid[0:h, 0:w]
    coords = [ys + displacement[1], xs + displacement[0]]
    out = map_coordinates(field, coords, mode="constant", cval=np.nan, order=1, prefilter=False)
    return out.astype(field.dtype, copy=False)


def inputs_to_lagrangian(inputs: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Advect ``(T, H, W)`` input frames to the analysis time (the last frame stays as it is).

    ``forward`` holds forward displacements ``(≥ T-1, 2, H, W)`` from :func:`displacements`.
    """
    t = inputs.shape[0]
    out = np.empty_like(inputs)
    out[-1] = inputs[-1]
    for k in range(1, t):
        out[t - 1 - k] = warp(inputs[t - 1 - k], forward[k - 1])
    return out


def targets_to_lagrangian(targets: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Bring ``(n, H, W)`` frames at leads 1…n back to the analysis frame (``backward`` displacements)."""
    return np.stack([warp(frame, backward[j]) for j, frame in enumerate(targets)])


def from_lagrangian(frames: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Advect ``(n, H, W)`` analysis-frame forecasts to their leads 1…n (``forward`` displacements)."""
    return np.stack([warp(frame, forward[j]) for j, frame in enumerate(frames)])
