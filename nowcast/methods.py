"""One interface for every forecast method, in the style of pysteps' ``nowcasts.get_method``.

Every method is called the same way, ``method(window) -> (M, n_out, H, W)``: rain rate in mm/h,
``M = 1`` for deterministic methods and the number of members for ensembles, NaN where the last
observed frame has no data. A :class:`Window` carries the observed frames, the grid spacing, the
time step and the Lucas–Kanade motion, computed once on first use and shared by every method that
advects. ``predict``, ``evaluate``, the training run's test pass and the notebooks all forecast
through :func:`get_method`.

Methods
-------
``model``
    A trained network (:class:`nowcast.forecast.Forecaster`; Eulerian or Lagrangian).
``persistence``, ``extrapolation``, ``sprog``
    The deterministic baselines of :mod:`nowcast.baselines`.
``steps``
    Pysteps' STEPS ensemble (Bowler et al. 2006, Seed et al. 2013).

"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from nowcast import baselines
from nowcast._quiet import import_pysteps
from nowcast.errors import UserError
from nowcast.parallel import worker_count
from nowcast.probability import (
    HEAD_NEIGHBOURHOOD_KM_PER_MINUTE,
    MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE,
    MODEL_MEMBERS,
    HeadProbabilities,
)

#: Every method name :func:`get_method` knows.
#: ``extrapolation_inflow`` is LK extrapolation with the Lagrangian model's inflow (the last frame at the
#: nearest observed pixel where the motion comes from outside the domain; see :mod:`nowcast.lagrangian`).
METHOD_NAMES = ("model", "persistence", "extrapolation", "extrapolation_inflow", "sprog", "steps")
#: What ``evaluate`` scores unless told otherwise (STEPS is slow: tens of cascades per window).
DEFAULT_METHODS = ("model", "persistence", "extrapolation", "sprog")
#: Members of a STEPS ensemble unless told otherwise.
DEFAULT_MEMBERS = 20


@dataclass
class Window:
    """The observed frames of one forecast and everything a method may need about them.

    Attributes
    ----------
    rates
        Observed rain rate, mm/h, ``(T, H, W)``, oldest first; NaN marks no-data.
    n_out
        Frames to forecast.
    step_minutes
        Time between frames (minutes).
    spacing_km
        Grid spacing ``(dy, dx)`` in km.
    probability_fields
        Method name → the field ``(M, n_out, H, W)`` its exceedance probabilities come from, where a
        method leaves one (the model: its forecast without lead-time smoothing, or a
        motion-perturbed ensemble of it); otherwise the probabilities come from the method's output.
    probability_growth
        Method name → the neighbourhood growth (km per minute) of its probabilities, where a method
        sets one; otherwise :func:`nowcast.probability.exceedance`'s default.
    frame_motion
        For frames already in the frame that moves with the rain (a training run's test windows):
        the motion ``(2, H, W)`` (pixels per step) they were brought there with, which a model with
        motion channels takes; None for observed frames.

    """

    rates: np.ndarray
    n_out: int
    step_minutes: float
    spacing_km: tuple[float, float] = (1.0, 1.0)
    probability_fields: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    probability_growth: dict[str, float] = field(default_factory=dict, repr=False)
    frame_motion: np.ndarray | None = field(default=None, repr=False)
    _velocity: np.ndarray | None = field(default=None, repr=False)

    @property
    def velocity(self) -> np.ndarray:
        """Lucas–Kanade motion ``(2, H, W)`` in pixels per step, computed once."""
        if self._velocity is None:
            self._velocity = baselines.motion_field(self.rates)
        return self._velocity

    @property
    def lead_minutes(self) -> np.ndarray:
        """Lead time of each forecast frame, ``(n_out,)`` minutes."""
        return self.step_minutes * np.arange(1, self.n_out + 1)


Method = Callable[[Window], np.ndarray]


def _persistence(window: Window) -> np.ndarray:
    return baselines.persistence(window.rates, window.n_out)[None]


def _extrapolation(window: Window) -> np.ndarray:
    return baselines.extrapolation(window.rates, window.n_out, window.velocity)[None]


def _extrapolation_inflow(window: Window) -> np.ndarray:
    return baselines.extrapolation(window.rates, window.n_out, window.velocity, inflow="observed")[None]


def _sprog(window: Window) -> np.ndarray:
    return baselines.sprog(window.rates, window.n_out, window.velocity)[None]


def steps(window: Window, members: int = DEFAULT_MEMBERS, seed: int = 0) -> np.ndarray:
    """Pysteps' STEPS ensemble on dBR from the last three frames: ``(members, n_out, H, W)`` mm/h.

    Settings follow pysteps' STEPS example: 6 cascade levels, nonparametric noise, motion
    perturbations (``bps``) scaled by the grid spacing and time step, incremental masking and CDF
    probability matching. A dry scene gives all-zero members, a scene that did not change at all
    :func:`~nowcast.baselines.unchanging_scene` in every member. The members run on
    :func:`~nowcast.parallel.worker_count` cores (pysteps' ``num_workers``, through dask), as the
    network's do; the result does not depend on it (tested).
    """
    rates = window.rates
    shape = (members, window.n_out, *rates.shape[1:])
    dbr = baselines.to_dbr(rates[-3:])
    if np.mean(dbr > baselines.ZERO_DBR) < 0.001:  # too little rain for the noise model
        out = np.zeros(shape, dtype=np.float32)
    else:
        try:
            out = _pysteps_steps(dbr, window, members, seed)
        except np.linalg.LinAlgError:  # a level that did not change at all: no AR(2) fit, every member its limit
            last = baselines.unchanging_scene(rates, window.n_out, window.velocity)
            out = np.broadcast_to(last, shape).astype(np.float32)
    out[:, :, ~np.isfinite(rates[-1])] = np.nan
    return out


def _pysteps_steps(dbr: np.ndarray, window: Window, members: int, seed: int) -> np.ndarray:
    """Pysteps' STEPS with the settings of :func:`steps`, from the last three frames' dBR; mm/h float32."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        out = import_pysteps().nowcasts.get_method("steps")(
            dbr,
            window.velocity,
            window.n_out,
            n_ens_members=members,
            n_cascade_levels=6,
            precip_thr=baselines.RAIN_THRESHOLD_DBR,
            kmperpixel=float(np.mean(window.spacing_km)),
            timestep=float(window.step_minutes),
            noise_method="nonparametric",
            vel_pert_method="bps",
            mask_method="incremental",
            seed=seed,
            num_workers=worker_count(),  # members in parallel, on the cores the network gets
        )
    return baselines.from_dbr(out).astype(np.float32)


def model_method(forecaster, members: int = MODEL_MEMBERS) -> Method:
    """A trained :class:`~nowcast.forecast.Forecaster` as a method: ``(1, n_out, H, W)`` mm/h.

    Its probabilities come from ``window.probability_fields["model"]``: for a forecaster whose
    ``probability_source`` is ``head``, the network's probability head with a neighbourhood growing
    by :data:`~nowcast.probability.HEAD_NEIGHBOURHOOD_KM_PER_MINUTE` (``members`` unused); with ``members`` > 1 (a
    Lagrangian model) the unsmoothed forecast advected along that many perturbed motions, each
    member with a neighbourhood growing by :data:`~nowcast.probability.MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE`;
    with 1, the unsmoothed forecast with the single forecast's neighbourhood (see
    :meth:`~nowcast.forecast.Forecaster.forecast_for_probabilities`).
    """

    def forecast(window: Window) -> np.ndarray:
        out, for_probabilities = forecaster.forecast_for_probabilities(
            window.rates,
            window.n_out,
            window.step_minutes,
            window.spacing_km,
            members=members,
            motion=window.frame_motion,
        )
        window.probability_fields["model"] = for_probabilities
        if isinstance(for_probabilities, HeadProbabilities):
            window.probability_growth["model"] = HEAD_NEIGHBOURHOOD_KM_PER_MINUTE
        elif len(for_probabilities) > 1:
            window.probability_growth["model"] = MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE
        return out[None]

    return forecast


def get_method(
    name: str, forecaster=None, members: int = DEFAULT_MEMBERS, model_members: int = MODEL_MEMBERS
) -> Method:
    """Look up a forecast method by name; the error lists the valid names.

    ``forecaster`` is needed for ``model``; ``members`` sets the size of a STEPS ensemble,
    ``model_members`` that of the model's motion-perturbed ensemble (its probabilities).
    """
    if name == "model":
        if forecaster is None:
            raise UserError("method 'model' needs a checkpoint")
        return model_method(forecaster, model_members)
    methods: dict[str, Method] = {
        "persistence": _persistence,
        "extrapolation": _extrapolation,
        "extrapolation_inflow": _extrapolation_inflow,
        "sprog": _sprog,
        "steps": partial(steps, members=members),
    }
    try:
        return methods[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; choose from {list(METHOD_NAMES)}") from None


def deterministic(members: np.ndarray) -> np.ndarray:
    """One field per lead from a method's output ``(M, T, H, W)``: the member itself or the ensemble mean."""
    return members[0] if members.shape[0] == 1 else np.mean(members, axis=0)
