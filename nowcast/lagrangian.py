"""The frame that moves with the rain: pysteps' semi-Lagrangian advection as pure function pairs.

Motion ``V`` ``(2, H, W)`` (pixels per time step, x then y, as pysteps) comes from Lucas–Kanade on
dB-transformed rain (:func:`nowcast.baselines.motion_field`). Displacements are pysteps'
semi-Lagrangian ones (``pysteps.extrapolation.semilagrangian.extrapolate`` with
``return_displacement=True``, on a grid every few pixels, see :mod:`nowcast.motion`), computed
once per window and reused for every frame; a field is
warped as pysteps warps it (bilinear ``map_coordinates``, NaN from outside the domain; see :func:`warp`).

* :func:`inputs_to_lagrangian`: the input frame ``k`` steps before the analysis time, advected
  ``k`` steps forward, so every input lies on the analysis frame.
* :func:`targets_to_lagrangian` / :func:`from_lagrangian`: the frame at lead ``j`` advected ``j``
  steps backward, and its inverse, ``j`` steps forward. ``from_lagrangian`` of the last input
  repeated is the extrapolation baseline (:func:`nowcast.baselines.extrapolation`), and with
  ``stride=1`` exactly pysteps' extrapolation.

What flows in: a pixel whose departure point lies outside the observed domain (beyond the grid, or
where the radar has no data) gets no rain in pysteps' scheme (``inflow="empty"``). With
``inflow="observed"`` it gets the last observation's value at the observed pixel nearest to its
departure point (:func:`advect`): rain at the domain's upwind edge keeps coming in, as it does
when the radar's range cuts through a rain area.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, grey_opening, map_coordinates
from torch.nn.functional import grid_sample

from nowcast import motion
from nowcast._quiet import import_pysteps
from nowcast.parallel import map_frames

#: What a pixel whose departure point lies outside the observed domain gets: ``empty`` (no rain,
#: pysteps' extrapolation) or ``observed`` (the last observation at the nearest observed pixel; see
#: the module's docstring).
INFLOWS = ("empty", "observed")
#: Bilinear weight of no-data pixels above which a departure point counts as outside the observed
#: domain: pysteps' warp gives NaN for any weight above 0, but torch's warp of a departure point on a
#: pixel's centre leaves ~1e-7 on its neighbour.
NO_DATA_WEIGHT = 1e-6
#: Side (pixels) of the square :func:`inflow_field` opens the observation with (1: not opened).
#: Opening with 3 or 5 km squares stops a lone shower on the edge from coming in as a streak along
#: the motion, but scored lower on the validation radar's crops than no opening (41.555 and 41.439
#: against 41.764 by the rule, two models; benchmarks/results/inflow_round20.md), so it is off.
INFLOW_OPENING = 1


def displacements(
    velocity: np.ndarray,
    steps: int,
    backward: bool = False,
    stride: int = motion.MOTION_STRIDE,
    perturbation: motion.MotionPerturbation | None = None,
) -> np.ndarray:
    """Semi-Lagrangian displacements ``(steps, 2, H, W)`` (pixels) after 1, 2, … ``steps`` steps.

    ``backward`` follows the motion back in time (the velocity negated). Pysteps' scheme runs on
    the nodes of a grid every ``stride`` pixels and the result is refined bilinearly
    (:mod:`nowcast.motion`); ``stride=1`` is pysteps' scheme on every pixel. With a
    ``perturbation``, step k follows the velocity plus that member's perturbation at lead k, as
    each STEPS member does.
    """
    h, w = velocity.shape[-2:]
    velocity = -velocity if backward else velocity
    if not motion.coarse_enough(h, w, stride):
        return _pysteps_displacements(velocity, steps, perturbation, 1)
    coarse = _pysteps_displacements(motion.coarsen(velocity, stride) / stride, steps, perturbation, stride) * stride
    return motion.refine(coarse, (h, w), stride)


def _pysteps_displacements(
    velocity: np.ndarray, steps: int, perturbation: motion.MotionPerturbation | None, stride: int
) -> np.ndarray:
    """Pysteps' semi-Lagrangian displacements ``(steps, 2, H, W)`` of every pixel of ``velocity``.

    ``velocity`` is on a grid of ``stride`` input pixels per pixel (for the perturbation's units).
    """
    extrapolate = import_pysteps().extrapolation.get_method("semilagrangian")
    offset = perturbation.generator(velocity, stride) if perturbation is not None else None
    out = np.empty((steps, *velocity.shape), dtype=np.float64)
    previous = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(steps):
            step_velocity = velocity if offset is None else velocity + offset(k + 1)
            _, previous = extrapolate(None, step_velocity, 1, displacement_prev=previous, return_displacement=True)
            out[k] = previous
    return out


def warp(field: np.ndarray, displacement: np.ndarray, outside: str = "nan") -> np.ndarray:
    """Warp ``field`` ``(H, W)`` by ``displacement`` ``(2, H, W)`` as pysteps does (NaN outside).

    ``outside="edge"`` takes a departure point beyond the grid to the nearest edge pixel instead
    (its coordinates clamped to the grid), so nothing is NaN unless ``field`` is.

    Pysteps' bilinear ``map_coordinates`` (``mode="constant"``, NaN beyond the edge pixels'
    centres). A field without NaN is warped by torch's ``grid_sample`` in float64 instead, the same
    interpolation to float32 rounding (tested) in a third of the time (6 against 18 ms on a
    512 × 512 frame, 2-core AVX2 CPU); a field with NaN keeps SciPy's, which treats a NaN neighbour
    of weight zero as absent where torch would spread it.
    """
    h, w = field.shape
    ys, xs = np.mgrid[0:h, 0:w]
    y, x = ys + displacement[1], xs + displacement[0]
    if outside == "edge":
        y, x = np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)
    elif outside != "nan":
        raise ValueError(f"outside must be 'nan' or 'edge', got {outside!r}")
    if h < 2 or w < 2 or not np.isfinite(field).all():
        out = map_coordinates(field, [y, x], mode="constant", cval=np.nan, order=1, prefilter=False)
        return out.astype(field.dtype, copy=False)
    grid = np.stack([x * (2.0 / (w - 1)) - 1.0, y * (2.0 / (h - 1)) - 1.0], axis=-1)  # (H, W, 2), −1…1
    image = torch.from_numpy(np.asarray(field, dtype=np.float64))[None, None]
    out = grid_sample(image, torch.from_numpy(grid)[None], mode="bilinear", align_corners=True)[0, 0].numpy()
    out[(x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)] = np.nan
    return out.astype(field.dtype, copy=False)


def inputs_to_lagrangian(inputs: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Advect ``(T, H, W)`` input frames to the analysis time (the last frame stays as it is).

    ``forward`` holds forward displacements ``(≥ T-1, 2, H, W)`` from :func:`displacements`.
    """
    t = inputs.shape[0]
    advected = map_frames(lambda i: warp(inputs[i], forward[t - 2 - i]), t - 1)  # input i moves t-1-i steps
    return np.stack([*advected, inputs[-1]])


def targets_to_lagrangian(targets: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Bring ``(n, H, W)`` frames at leads 1…n back to the analysis frame (``backward`` displacements)."""
    return np.stack(map_frames(lambda j: warp(targets[j], backward[j]), len(targets)))


def from_lagrangian(frames: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Advect ``(n, H, W)`` analysis-frame forecasts to their leads 1…n (``forward`` displacements)."""
    return np.stack(map_frames(lambda j: warp(frames[j], forward[j]), len(frames)))


def advect(field: np.ndarray, displacement: np.ndarray, observed: np.ndarray, no_data: np.ndarray) -> np.ndarray:
    """``field`` ``(H, W)`` warped by ``displacement`` ``(2, H, W)``, the last observation flowing in.

    Where the departure point lies beyond the grid or touches a ``no_data`` pixel (``(H, W)`` bool;
    bilinear weight above :data:`NO_DATA_WEIGHT`, where pysteps' warp would give NaN), the pixel takes ``observed``
    ``(H, W)``, the last observation filled to every pixel (:func:`inflow_field`), warped with
    its departure point clamped to the grid; elsewhere ``field``'s warp. ``field``'s values on
    ``no_data`` pixels are not used. Three NaN-free warps, no NaN in the result unless
    ``observed`` has some.
    """
    inside = warp(np.where(no_data, 0.0, field), displacement)  # NaN only beyond the grid
    from_outside = np.isnan(inside)
    if no_data.any():
        from_outside |= warp(no_data.astype(np.float64), displacement) > NO_DATA_WEIGHT
    return np.where(from_outside, warp(observed, displacement, outside="edge"), inside)


def inflow_field(last: np.ndarray, opening: int = INFLOW_OPENING) -> np.ndarray:
    """What flows in from outside the observed domain, ``(H, W)`` float64, for :func:`advect`.

    ``last`` ``(H, W)`` is the last observation (NaN: no data). Each pixel gets the value of its
    nearest observed pixel (:func:`fill_from_nearest`), then the field is opened (grey erosion, then
    dilation) with an ``opening`` × ``opening`` square: rain areas wider than the square keep their
    values, narrower ones (a lone shower on the edge) are cut to what surrounds them.
    """
    no_data = ~np.isfinite(last)
    filled = fill_from_nearest(np.nan_to_num(last.astype(np.float64), nan=0.0), nearest_observed(no_data))
    return grey_opening(filled, size=(opening, opening)) if opening > 1 else filled


def nearest_observed(no_data: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Row and column ``(H, W)`` of each pixel's nearest observed pixel, for :func:`fill_from_nearest`.

    ``no_data`` ``(H, W)`` bool marks the pixels without data. None when there is nothing to fill
    (every pixel observed) or nothing to fill from (none observed).
    """
    if not no_data.any() or no_data.all():
        return None
    rows, cols = distance_transform_edt(no_data, return_distances=False, return_indices=True)
    return rows, cols


def fill_from_nearest(field: np.ndarray, nearest: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``field`` ``(H, W)`` with each pixel given its nearest observed pixel's value (:func:`nearest_observed`)."""
    return field if nearest is None else field[nearest]


def turn_motion(velocity: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """The motion ``(..., 2, H, W)`` (x then y, pixels per step) of a field turned and mirrored.

    The field is turned by ``np.rot90(field, turns, axes=(-2, -1))`` (``torch.rot90`` alike) and
    then, with ``mirror``, its columns are reversed (``field[..., ::-1]``); the motion's grid turns
    the same way and its components with it: a quarter turn maps ``(u, v)`` to ``(v, -u)``, a
    mirror ``u`` to ``-u``. Advecting the turned field along the turned motion gives the turned
    advection (tested).
    """
    out = np.asarray(velocity)
    for _ in range(turns % 4):
        out = np.rot90(out, 1, axes=(-2, -1))
        out = np.stack([out[..., 1, :, :], -out[..., 0, :, :]], axis=-3)
    if mirror:
        out = out[..., ::-1]
        out = np.stack([-out[..., 0, :, :], out[..., 1, :, :]], axis=-3)
    return np.ascontiguousarray(out)
