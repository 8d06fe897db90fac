"""The one inference path: checkpoint → model → forecast in physical units.

``predict``, ``evaluate`` and the training run's test pass all forecast through
:func:`run_model` (model space) or :class:`Forecaster` (rain rates in mm/h).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nowcast.checkpoint import CheckpointError, file_sha256, load_checkpoint
from nowcast.models import EncoderForecaster, ModelConfig
from nowcast.motion import DECLUSTER_SCALE, MOTION_STRIDE, MotionPerturbation
from nowcast.parallel import map_frames, worker_count
from nowcast.precision import autocast, resolve_precision
from nowcast.probability import HeadProbabilities
from nowcast.transforms import RAIN_FLOOR_MM_H, Transform, dry_below_floor

log = logging.getLogger(__name__)

PRETRAINED_NAME = "radar_lagrangian.pt"

#: Post-processing of a Lagrangian model's frames: ``cdf`` matches each to the last observation.
PROBABILITY_MATCHING = ("cdf", "none")
#: Width of the Gaussian that smooths a Lagrangian model's frame, km per minute of lead time
#: (σ = 6 km at +60 min), before probability matching: the small scales a network cannot predict
#: fade with lead time, as S-PROG's cascade lets them. Chosen on the validation radar (RMI) only,
#: see ``benchmarks/results/lead_smoothing.md``.
SMOOTHING_KM_PER_MINUTE = 0.1
#: Share of the last step's growth or decay that a Lagrangian model's frames carry on
#: (:func:`continue_trend`), before smoothing and matching: S-PROG's AR(2) beats extrapolation at
#: the first lead because it continues each scale's change; the network, whose correction lives on
#: 4 km patches, does not continue the change of the 1 km pixels. Chosen on the validation radar
#: (RMI) only: 0.5 among 0, 0.25, 0.5 and 1 in round 15 (``benchmarks/results/trend_round15.md``),
#: 0.75 among 0.25, 0.5 and 0.75 in round 24, once S-PROG was blended in
#: (``benchmarks/results/postprocessing_round24.md``).
TREND_WEIGHT = 0.75
#: The trend weight of the fields the probabilities come from (the motion-perturbed members and the
#: ``--members 1`` field), their own since round 28: the deterministic weight was chosen for CSI,
#: with the smoothing and the S-PROG blend after it. On RMI, over the four seed-0 fold models, the
#: members' Brier skill rose with the weight on every model, summed 1.5875 at 1.25 against 1.5494 at
#: 0.75 at 1 mm/h and 0.6752 against 0.6145 at 5 mm/h
#: (``benchmarks/results/probabilistic/member_trend_round28.md``), and again in round 29 at 2: 1.6173
#: and 0.7188 against 1.25's 1.5875 and 0.6752, higher on every model (``member_trend_round29.md``).
MEMBER_TREND_WEIGHT = 2.0
#: What a Lagrangian forecast brings in where the motion comes from outside the observed domain:
#: the last observation at the nearest observed pixel, chosen on crops of the validation radar
#: (RMI), whose cut edges rain crosses (benchmarks/results/inflow_round20.md); ``empty`` is
#: pysteps' no rain.
INFLOW = "observed"
#: Weight of S-PROG's forecast in a Lagrangian model's (:func:`blend_sprog`): both made in the frame
#: that moves with the rain from the same inputs and motion, each frame matched to the last
#: observation, then ``(1 − w)·network + w·S-PROG`` is advected to its lead time. Chosen on the
#: validation radar (RMI) only, among 0.25, 0.5 and 0.75 in rain rate and in log rain, with and
#: without a matching after the blend, with the four round-22 fold models
#: (``benchmarks/results/sprog_blend_round23.md``).
SPROG_WEIGHT = 0.25
#: Scale-dependent fade of a Lagrangian model's frames with lead time, before any Gaussian smoothing
#: (:func:`smooth_by_lead`): ``cascade`` fades each spatial scale at the rate S-PROG's AR(2)
#: process for that scale sets, estimated on the window (:mod:`nowcast.cascade`); ``none``.
FADES = ("none", "cascade")
#: Allowed sizes of the test-time ensemble over the square's symmetries (see :func:`symmetric_run`):
#: 1 (none), 2 (a mirror), 4 (the ones that keep the frame's shape), 8 (all rotations and mirrors).
SYMMETRIES = (1, 2, 4, 8)
#: Where a model's exceedance probabilities come from: its probability head (one network pass,
#: see :class:`~nowcast.models.ModelConfig`), or its forecast advected along perturbed motions.
PROBABILITY_SOURCES = ("head", "members")
#: Side in pixels of the corner of the input on which the faster unroll is timed.
UNROLL_TIMING_SIZE = 256
#: A Lagrangian forecast runs on the box around the observed pixels (:func:`observed_box`) when that
#: box is at most this share of the grid: on the KNMI composite it is 0.45.
BOX_SHARE = 0.8
#: Patches of the network the box reaches beyond the observed pixels, so that the network's zero
#: padding at the box's edge stays away from what it forecasts: with 8 (32 pixels of 4 × 4 patches)
#: the round-16 shipped model's forecast of a synthetic window differed from the whole grid's by
#: 0.001 mm/h at the 99th percentile and on 0.004 % of the pixels at 1 mm/h; with 2, by 0.12 mm/h and
#: on 0.6 %.
BOX_MARGIN_PATCHES = 8
#: The dihedral group as (quarter turns, mirror) pairs, shape-keeping ones first.
_DIHEDRAL = ((0, False), (0, True), (2, False), (2, True), (1, False), (1, True), (3, False), (3, True))


def _sprog_weight(weight: float | None, lagrangian: bool) -> float:
    """S-PROG's share of a forecast (:func:`blend_sprog`), checked; None gives the frame's default."""
    if weight is None:
        return SPROG_WEIGHT if lagrangian else 0.0
    if not (np.isfinite(weight) and 0.0 <= weight <= 1.0):
        raise ValueError(f"sprog_weight must be a number in [0, 1], got {weight!r}")
    if weight and not lagrangian:
        raise ValueError(
            "sprog_weight needs a Lagrangian model (S-PROG is blended in the frame that moves with the rain)"
        )
    return float(weight)


def _member_trend_weight(weight: float | None, lagrangian: bool) -> float | None:
    """The members' trend weight, checked; None gives :data:`MEMBER_TREND_WEIGHT` (Lagrangian) or None."""
    if weight is None:
        return MEMBER_TREND_WEIGHT if lagrangian else None
    if not (np.isfinite(weight) and weight >= 0):
        raise ValueError(f"member_trend_weight must be a number ≥ 0, got {weight!r}")
    return weight


def post_processing(
    frame: str,
    probability_matching: str | None,
    smoothing_km_per_minute: float | None,
    trend_weight: float | None,
    fade: str,
    symmetries: int,
    inflow: str | None = None,
    sprog_weight: float | None = None,
    member_trend_weight: float | None = None,
) -> dict[str, Any]:
    """The post-processing settings of a model forecasting in ``frame``, None taking the frame's default.

    A Lagrangian model matches, smooths by lead time and continues the trend by default; an Eulerian
    one does none of these. A setting out of range is a ``ValueError``. Returns the
    :class:`Forecaster` fields ``probability_matching``, ``smoothing_km_per_minute``,
    ``trend_weight``, ``fade``, ``symmetries``, ``inflow``, ``sprog_weight`` and
    ``member_trend_weight`` (an Eulerian model's stays None: its probabilities take ``trend_weight``).
    """
    from nowcast.lagrangian import INFLOWS

    lagrangian = frame == "lagrangian"
    if probability_matching is None:
        probability_matching = "cdf" if lagrangian else "none"
    if smoothing_km_per_minute is None:
        smoothing_km_per_minute = SMOOTHING_KM_PER_MINUTE if lagrangian else 0.0
    if trend_weight is None:
        trend_weight = TREND_WEIGHT if lagrangian else 0.0
    if inflow is None:
        inflow = INFLOW if lagrangian else "empty"
    sprog_weight = _sprog_weight(sprog_weight, lagrangian)
    member_trend_weight = _member_trend_weight(member_trend_weight, lagrangian)
    if inflow not in INFLOWS:
        raise ValueError(f"inflow must be one of {INFLOWS}, got {inflow!r}")
    if probability_matching not in PROBABILITY_MATCHING:
        raise ValueError(f"probability_matching must be one of {PROBABILITY_MATCHING}, got {probability_matching!r}")
    if fade not in FADES:
        raise ValueError(f"fade must be one of {FADES}, got {fade!r}")
    if symmetries not in SYMMETRIES:
        raise ValueError(f"symmetries must be one of {SYMMETRIES}, got {symmetries!r}")
    if not (np.isfinite(smoothing_km_per_minute) and smoothing_km_per_minute >= 0):
        raise ValueError(f"smoothing_km_per_minute must be a number ≥ 0, got {smoothing_km_per_minute!r}")
    if not np.isfinite(trend_weight):
        raise ValueError(f"trend_weight must be a finite number, got {trend_weight!r}")
    return {
        "probability_matching": probability_matching,
        "smoothing_km_per_minute": float(smoothing_km_per_minute),
        "trend_weight": float(trend_weight),
        "fade": fade,
        "symmetries": int(symmetries),
        "inflow": inflow,
        "sprog_weight": sprog_weight,
        "member_trend_weight": member_trend_weight,
    }


def pretrained_checkpoint() -> Path:
    """Path of the small radar model shipped inside the package."""
    return Path(str(resources.files("nowcast.pretrained").joinpath(PRETRAINED_NAME)))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but no CUDA device is available")
    return torch.device(name)


def run_model(
    model: torch.nn.Module,
    frames: torch.Tensor,
    n_out: int,
    step_minutes: torch.Tensor | None = None,
    precision: str = "32",
    autocast_cache: bool = True,
    probabilities: bool = False,
    motion: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Forecast in model space: ``(B, T_in, C, H, W) -> (B, n_out, C, H, W)`` float32.

    ``autocast_cache=False`` for a forward pass recorded in a CUDA graph (see :mod:`nowcast.graphs`).
    ``probabilities`` also returns the probability head's logits ``(B, n_out, U, H, W)`` float32.
    ``motion`` ``(B, 2, H, W)`` pixels per step, for a model with ``motion_channels``.
    """
    extra = {"motion": motion} if motion is not None else {}  # models without motion (benchmarks' reference) too
    with autocast(frames.device, precision, autocast_cache):
        if probabilities:
            out, logits = model(frames, n_out, step_minutes, probabilities=True, **extra)
            return out.float(), logits.float()
        out = model(frames, n_out, step_minutes, **extra)
    return out.float()


def build_model(payload: dict[str, Any], source: str = "checkpoint") -> EncoderForecaster:
    """Rebuild the network from a checkpoint payload; a mismatch names what differs."""
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        model = EncoderForecaster(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: incompatible model config ({err})") from None
    state = payload["model"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, model needs {tuple(own[k].shape)}")
        raise CheckpointError(f"{source}: weights do not fit the model config ({'; '.join(parts)})")
    model.load_state_dict(state)
    return model


@dataclass
class Forecaster:
    """A trained model with its data transform, ready to forecast rain rates.

    Attributes
    ----------
    t_in, t_out
        Frames the model was trained to read and to forecast.
    step_minutes
        Radar time steps (minutes) seen in training; empty for non-radar models.

    """

    model: EncoderForecaster
    transform: Transform
    t_in: int
    t_out: int
    step_minutes: list[float] = field(default_factory=list)
    source: str = ""
    sha256: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "32"
    frame: str = "eulerian"
    grid_km: float = 1.0
    probability_matching: str = "none"
    smoothing_km_per_minute: float = 0.0
    trend_weight: float = 0.0
    symmetries: int = 1
    fade: str = "none"
    #: ``split`` or ``fused`` (see :mod:`nowcast.unroll`); ``auto`` times both on the first forecast.
    unroll: str = "auto"
    #: Where probabilities come from (:data:`PROBABILITY_SOURCES`): ``head`` (the network's
    #: probability head, when the checkpoint has one) or ``members`` (perturbed motions).
    probability_source: str = "members"
    #: What flows in where the motion comes from outside the observed domain (one of
    #: :data:`~nowcast.lagrangian.INFLOWS`): ``empty`` (pysteps) or ``observed`` (:data:`INFLOW`).
    inflow: str = "empty"
    #: Weight of S-PROG's forecast blended into a Lagrangian model's (:func:`blend_sprog`); 0: none.
    sprog_weight: float = 0.0
    #: Trend weight of the fields the probabilities come from (:data:`MEMBER_TREND_WEIGHT`); None: ``trend_weight``.
    member_trend_weight: float | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str = "cpu",
        precision: str | None = "auto",
        probability_matching: str | None = None,
        smoothing_km_per_minute: float | None = None,
        symmetries: int = 1,
        fade: str = "none",
        probability_source: str | None = None,
        trend_weight: float | None = None,
        inflow: str | None = None,
        sprog_weight: float | None = None,
        member_trend_weight: float | None = None,
    ) -> Forecaster:
        """Load a checkpoint (default: the shipped pretrained radar model).

        ``precision`` ``auto`` (or None) picks bf16 where the hardware runs it natively, else fp32
        (see :mod:`nowcast.precision`). ``probability_matching`` (``cdf`` or ``none``; None: ``cdf``
        for Lagrangian models, ``none`` otherwise) is applied to each forecast frame of a Lagrangian
        model, see :func:`match_distribution`. ``smoothing_km_per_minute`` (None:
        :data:`SMOOTHING_KM_PER_MINUTE` for Lagrangian models, 0 otherwise) widens the Gaussian that
        smooths each frame of a Lagrangian model with lead time, see :func:`smooth_by_lead`.
        ``trend_weight`` (None: :data:`TREND_WEIGHT` for Lagrangian models, 0 otherwise) is the share
        of the last step's change of log rain that each frame carries on, see :func:`continue_trend`.
        ``symmetries`` (one of :data:`SYMMETRIES`) averages a Lagrangian model's forecast over that
        many rotations and mirrors of its inputs, see :func:`symmetric_run`. ``fade`` (one of
        :data:`FADES`) fades a Lagrangian model's frames scale by scale with lead time, before the
        smoothing. ``probability_source`` (one of :data:`PROBABILITY_SOURCES`; None: ``head`` when
        the model has a probability head, else ``members``) says where probabilities come from.
        ``inflow`` (one of :data:`~nowcast.lagrangian.INFLOWS`; None: :data:`INFLOW` for Lagrangian
        models) is what a Lagrangian forecast brings in where the motion comes from outside the
        observed domain. ``sprog_weight`` (None: :data:`SPROG_WEIGHT` for Lagrangian models, 0
        otherwise) is the share of S-PROG's forecast in a Lagrangian model's, see :func:`blend_sprog`.
        ``member_trend_weight`` (None: :data:`MEMBER_TREND_WEIGHT` for Lagrangian models) is the trend
        weight of the fields a Lagrangian model's probabilities come from.
        """
        path = Path(path) if path is not None else pretrained_checkpoint()
        payload = load_checkpoint(path)
        model = build_model(payload, str(path))
        dev = resolve_device(device)
        model.to(dev).eval()
        data = payload["data"]
        try:
            transform = Transform.from_dict(payload["transform"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: bad transform ({err})") from None
        choice = resolve_precision(precision or "auto", dev)
        log.debug("precision: %s", choice.reason)
        precision = choice.name
        frame = str(data.get("frame", "eulerian"))
        post = post_processing(
            frame,
            probability_matching,
            smoothing_km_per_minute,
            trend_weight,
            fade,
            symmetries,
            inflow,
            sprog_weight,
            member_trend_weight,
        )
        has_head = model.probability_conv is not None
        if probability_source is None:
            probability_source = "head" if has_head else "members"
        if probability_source not in PROBABILITY_SOURCES:
            raise ValueError(f"probability_source must be one of {PROBABILITY_SOURCES}, got {probability_source!r}")
        if probability_source == "head" and not (has_head and frame == "lagrangian"):
            raise CheckpointError(f"{path}: this model has no probability head; use probability_source='members'")
        return cls(
            model=model,
            transform=transform,
            t_in=int(data["t_in"]),
            t_out=int(data["t_out"]),
            step_minutes=[float(s) for s in data.get("step_minutes", [])],
            source=str(path),
            sha256=file_sha256(path),
            device=dev,
            precision=precision,
            frame=frame,
            grid_km=float(data.get("grid_km", 1.0)),
            probability_source=probability_source,
            **post,
        )

    @property
    def needs_step(self) -> bool:
        """Whether the model takes the time step as an input."""
        return self.model.config.step_channel

    @property
    def lagrangian(self) -> bool:
        """Whether the model forecasts in the frame that moves with the rain."""
        return self.frame == "lagrangian"

    @torch.no_grad()
    def forecast(
        self,
        rates: np.ndarray,
        n_out: int,
        step_minutes: float | None = None,
        spacing_km: tuple[float, float] = (1.0, 1.0),
        motion: np.ndarray | None = None,
    ) -> np.ndarray:
        """Forecast rain rates.

        Parameters
        ----------
        rates
            Observed rain rate, mm/h, ``(T, H, W)`` (the last ``t_in`` frames are used) or a
            batch ``(B, T, H, W)``. NaN marks no-data.
        n_out
            Frames to forecast.
        step_minutes
            Time step of the input in minutes.
        spacing_km
            Grid spacing ``(dy, dx)`` of the input in km (Lagrangian models resample to
            ``grid_km``; see :func:`nowcast.regrid.grid_spacing_km`).
        motion
            For frames already in the frame that moves with the rain (a training run's test
            windows), the motion ``(2, H, W)`` (pixels per step) they were brought there with,
            which a model with ``motion_channels`` takes. A Lagrangian forecaster estimates the
            motion itself and refuses one.

        Returns
        -------
        numpy.ndarray
            Forecast rain rate, mm/h, ``(n_out, H, W)`` (or ``(B, n_out, H, W)``), float32; 0 below
            :data:`RAIN_FLOOR_MM_H`; NaN where the last observed frame has no data.

        """
        single = rates.ndim == 3
        batch = rates[None] if single else rates
        batch = batch[:, -self.t_in :]
        if self.lagrangian:
            self._refuse_motion(motion)
            out = np.stack([self._forecast_lagrangian(r, n_out, step_minutes, spacing_km) for r in batch])
            return out[0] if single else out
        no_data = ~np.isfinite(batch[:, -1])  # (B, H, W)
        x = self.transform.encode(np.nan_to_num(batch, nan=0.0).astype(np.float32))
        frames = torch.from_numpy(x).unsqueeze(2).to(self.device)  # (B, T, 1, H, W)
        out = self._run(frames, n_out, step_minutes, motion=motion)  # (B, n_out, H, W) mm/h
        if self.transform.kind != "identity":
            out = dry_below_floor(out)
        out[np.broadcast_to(no_data[:, None], out.shape)] = np.nan
        return out[0] if single else out

    @torch.no_grad()
    def forecast_for_probabilities(
        self,
        rates: np.ndarray,
        n_out: int,
        step_minutes: float | None,
        spacing_km: tuple[float, float] = (1.0, 1.0),
        members: int = 1,
        motion: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | PerturbedMembers | HeadProbabilities]:
        """The forecast ``(n_out, H, W)`` of :meth:`forecast` and the fields its probabilities come from.

        One window ``(T, H, W)`` mm/h in. With ``probability_source`` ``head``, the second item is
        the probability head's :class:`~nowcast.probability.HeadProbabilities` from the same network
        pass. Otherwise it is ``(M, n_out, H, W)``: for a Lagrangian
        model, the same forecast, trend included, without the smoothing and S-PROG's blend (M = 1;
        the neighbourhood of :mod:`nowcast.probability` smooths it once instead of twice; chosen on
        the validation radar, see ``benchmarks/results/probabilistic``), or with ``members`` > 1 that
        forecast advected along ``members`` motions perturbed as STEPS perturbs its members'
        (:class:`PerturbedMembers`, made one at a time when read; one network pass for all);
        otherwise the forecast itself. ``motion`` as in :meth:`forecast`.
        """
        if not self.lagrangian:
            out = self.forecast(rates, n_out, step_minutes, spacing_km, motion=motion)
            return out, out[None]
        self._refuse_motion(motion)
        return self._forecast_lagrangian(
            rates[-self.t_in :], n_out, step_minutes, spacing_km, unsmoothed=True, members=members
        )

    def _refuse_motion(self, motion: np.ndarray | None) -> None:
        """A Lagrangian forecaster estimates the motion itself: a motion given to it is a ``ValueError``."""
        if motion is not None:
            raise ValueError("a Lagrangian forecaster estimates the motion itself; give it none")

    def _run(
        self,
        frames: torch.Tensor,
        n_out: int,
        step_minutes: float | None,
        probabilities: bool = False,
        motion: np.ndarray | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Model-space ``(B, T, 1, H, W)`` in, decoded rain rate ``(B, n_out, H, W)`` mm/h out.

        ``probabilities`` also returns the probability head's ``P(R ≥ u)``, ``(B, n_out, U, H, W)``.
        ``motion`` ``(2, H, W)`` pixels per step is the window's motion, for a model that takes it.
        """
        step = None
        if self.needs_step:
            if step_minutes is None:
                raise ValueError("this model needs the input's time step in minutes")
            step = torch.full((frames.shape[0],), float(step_minutes), device=self.device)
        velocity = None
        if self.model.config.motion_channels:
            if motion is None:
                raise ValueError("this model takes the motion field: it forecasts in the frame moving with the rain")
            velocity = torch.from_numpy(np.asarray(motion, dtype=np.float32)).to(self.device)
            velocity = velocity.expand(frames.shape[0], *velocity.shape)
        if self.unroll == "auto":
            self.unroll = self._choose_unroll(frames, n_out, step, velocity)
        self.model.unroll = self.unroll
        out = run_model(self.model, frames, n_out, step, self.precision, probabilities=probabilities, motion=velocity)
        y, logits = out if probabilities else (out, None)
        rates = self.transform.decode(y[:, :, 0].cpu().numpy()).astype(np.float32)
        return (rates, torch.sigmoid(logits).cpu().numpy()) if probabilities else rates

    def _choose_unroll(
        self, frames: torch.Tensor, n_out: int, step: torch.Tensor | None, motion: torch.Tensor | None = None
    ) -> str:
        """The faster unroll for forecasting on this machine, timed once on a corner of ``frames``.

        A 256 × 256 corner of one window, timed once (about 0.6 s on a 2-core AVX2 CPU): on a
        128 × 128 corner the two unrolls differed by 6 % and the choice flipped in 3 of 8 tries,
        while on 512 × 512 frames the fused one was 25 % faster; on 256 × 256 it was chosen in 7 of 8.
        """
        from nowcast.unroll import choose_unroll

        corner = frames[:1, ..., :UNROLL_TIMING_SIZE, :UNROLL_TIMING_SIZE]
        corner_motion = None if motion is None else motion[:1, ..., :UNROLL_TIMING_SIZE, :UNROLL_TIMING_SIZE]
        name, seconds = choose_unroll(
            self.model,
            corner,
            n_out,
            None if step is None else step[:1],
            self.precision,
            reps=1,
            training=False,
            motion=corner_motion,
        )
        log.debug("unroll for forecasting: %s (timed: %s)", name, seconds)
        return name

    def _forecast_lagrangian(
        self,
        rates: np.ndarray,
        n_out: int,
        step_minutes: float | None,
        spacing_km: tuple[float, float],
        unsmoothed: bool = False,
        members: int = 1,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray | PerturbedMembers]:
        """One window ``(T, H, W)`` mm/h → ``(n_out, H, W)``: resample, advect, correct, advect back.

        With ``unsmoothed`` also the fields the probabilities come from, from the same network pass:
        ``(smoothed, (M, n_out, H, W))``, the forecast with its trend but without the lead-time
        smoothing, the scale fade and S-PROG's blend (M = 1) or, with ``members`` > 1, that forecast
        advected along ``members`` perturbed motions.
        """
        head = unsmoothed and self.probability_source == "head"
        run = _LagrangianRun.start(self, rates, n_out, step_minutes, spacing_km, head)
        trended = run.trended(self.trend_weight)
        faded = trended
        if self.fade == "cascade":
            from nowcast.cascade import cascade_fade

            faded = cascade_fade(faded, run.inputs[-3:])
        sigmas = np.zeros(n_out)  # Gaussian width of each lead's smoothing, pixels of the model's grid
        if self.smoothing_km_per_minute > 0:
            if step_minutes is None:
                raise ValueError("lead-time smoothing needs the input's time step in minutes")
            sigmas = self.smoothing_km_per_minute * float(step_minutes) * np.arange(1, n_out + 1) / self.grid_km
        prepared = run.prepare(faded, sigmas)
        blended = bool(self.sprog_weight) and len(run.inputs) >= 3  # S-PROG needs three frames
        if blended:
            prepared = blend_sprog(prepared, run.sprog(), self.sprog_weight)
        out = run.place(prepared, run.forward)
        if not unsmoothed:
            return out
        if head:
            return out, run.head_probabilities()
        member_field = trended  # with the trend: round 27; the members' own weight: round 28
        if self.member_trend_weight not in (None, self.trend_weight):
            member_field = run.trended(self.member_trend_weight)
        if members < 2 and faded is trended and member_field is trended and not sigmas.any() and not blended:
            return out, out[None]
        plain = run.prepare(member_field, np.zeros(n_out))
        if members < 2:
            return out, run.place(plain, run.forward)[None]
        if step_minutes is None:
            raise ValueError("a motion-perturbed ensemble needs the input's time step in minutes")
        return out, PerturbedMembers(run, plain, members, float(step_minutes))


class PerturbedMembers:
    """The unsmoothed forecast along ``count`` perturbed motions, ``(M, n_out, H, W)`` mm/h, made lazily.

    Member ``k`` is the network's forecast in the moving frame, with the forecaster's trend
    (:func:`continue_trend`) and matched, advected along the motion perturbed by
    :class:`~nowcast.motion.MotionPerturbation` with seed ``k``. Iterating makes one member at a
    time, so :func:`nowcast.probability.exceedance` counts them without holding them all (20 members
    of a 765 × 700 radar, 12 leads, are 0.5 GB); ``np.asarray`` stacks them all.
    """

    def __init__(self, run: _LagrangianRun, plain: np.ndarray, count: int, step_minutes: float) -> None:
        self.run = run
        self.plain = plain  # (n_out, h, w) the network's unsmoothed, trended, prepared forecast on its own grid
        self.count = count
        self.step_minutes = step_minutes

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        for seed in range(self.count):
            yield self.member(seed)

    def member(self, seed: int) -> np.ndarray:
        """Member ``seed``, ``(n_out, H, W)`` mm/h on the input grid."""
        return self.run.place(self.plain, self._displacements(seed))

    def _displacements(self, seed: int) -> np.ndarray:
        return self.run.displacements(MotionPerturbation(self.step_minutes, self.run.forecaster.grid_km, seed))

    def exceeding(self, thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Members at or above each threshold ``(U, n_out, H, W)`` uint16, and no-data ``(n_out, H, W)``.

        The counts :func:`nowcast.probability.exceedance` makes from the members themselves (tested
        equal), without the quantile map of each member's every pixel
        (:meth:`_LagrangianRun.at_or_above`), the members shared among the cores. With the torch
        warp, 20 members' probabilities of a 512 × 512 window took 1.4 s against 4.2 s on the 500 m
        Melbourne radar, where the map was most of a member's cost, and 2.6–3.4 s against 4.8–5.9 s
        on 1 km radars (2-core AVX2 CPU, ``benchmarks/results/predict_versus_round13.md``).
        """
        n_out = self.plain.shape[0]
        workers = min(self.count, worker_count())

        def count_some(first: int) -> np.ndarray:  # members first, first + workers, …, one thread each
            counts = np.zeros((len(thresholds), n_out, *self.run.shape), dtype=np.uint16)
            for seed in range(first, self.count, workers):
                forward = self._displacements(seed)
                for j in range(n_out):
                    moved = self.run.moved(self.plain[j], forward[j])
                    for k, threshold in enumerate(thresholds):
                        counts[k, j] += self.run.at_or_above(moved, float(threshold))
            return counts

        counts = sum(map_frames(count_some, workers))
        no_data = np.broadcast_to(self.run.no_data, (n_out, *self.run.shape)).copy()
        return self.run.paste(counts, 0), self.run.paste(no_data, True)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(M, n_out, H, W)``."""
        return (self.count, self.plain.shape[0], *self.run.full_shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        stacked = np.stack(list(self))
        return stacked if dtype is None else stacked.astype(dtype)


@dataclass
class _LagrangianRun:
    """One window's network pass in the frame that moves with the rain, and the way back out of it.

    ``velocity`` ``(2, h, w)`` is the motion of the inputs on the model's grid, ``forward``
    ``(≥ n_out, 2, h, w)`` its displacements, ``inputs`` ``(T, h, w)`` the inputs advected to the
    analysis time, ``analysis`` ``(n_out, h, w)`` mm/h the network's forecast there, ``match`` the
    CDF matching towards the last input. All of it covers ``box`` of the input grid (None: the
    whole grid, see :func:`observed_box`), ``shape`` ``(H, W)`` on the input grid, ``no_data``
    ``(H, W)`` included; :meth:`paste` puts a result on the whole grid, ``full_shape``.
    """

    forecaster: Forecaster
    shape: tuple[int, int]
    full_shape: tuple[int, int]
    box: tuple[slice, slice] | None
    no_data: np.ndarray
    velocity: np.ndarray
    forward: np.ndarray
    inputs: np.ndarray
    analysis: np.ndarray
    round_trip: tuple[np.ndarray, np.ndarray] | None
    match: Callable[[np.ndarray], np.ndarray]
    probabilities: np.ndarray | None = None  # (n_out, U, h, w) the probability head's, moving frame
    #: ``(h, w)`` no-data of the last input on the model's grid
    grid_no_data: np.ndarray | None = None
    #: ``(h, w)`` mm/h what flows in where the motion comes from outside the observed domain: the last
    #: input filled to every pixel from its nearest observed one; None: nothing (see :meth:`advect`)
    inflow: np.ndarray | None = None

    @classmethod
    def start(
        cls,
        forecaster: Forecaster,
        rates: np.ndarray,
        n_out: int,
        step_minutes: float | None,
        spacing_km: tuple[float, float],
        head: bool = False,
    ) -> _LagrangianRun:
        """Resample ``rates`` ``(T, H, W)`` mm/h, estimate motion, advect the inputs, run the network.

        Rates below :data:`~nowcast.transforms.RAIN_FLOOR_MM_H` are no rain, as in the training windows.

        ``head`` also keeps the probability head's output (one pass, without the test-time symmetries).
        """
        from nowcast import lagrangian, regrid
        from nowcast.baselines import motion_field

        full_shape = rates.shape[-2:]
        box = observed_box(rates, forecaster.model.config.patch_size)
        if box is not None:
            rates = rates[(slice(None), *box)]
        grid = regrid.shape_at(rates.shape[-2:], spacing_km, forecaster.grid_km)
        rates = dry_below_floor(rates)  # a radar's noise floor is no rain, as in training
        fields = regrid.resample(rates, grid)  # (T, h, w) on the model's grid
        velocity = motion_field(fields)
        forward = lagrangian.displacements(velocity, max(n_out, len(fields) - 1))
        inputs = lagrangian.inputs_to_lagrangian(fields, forward)
        x = forecaster.transform.encode(np.nan_to_num(inputs, nan=0.0).astype(np.float32))
        frames = torch.from_numpy(x)[None, :, None].to(forecaster.device)  # (1, T, 1, h, w)
        probabilities = None
        if head:
            analysis, probabilities = forecaster._run(frames, n_out, step_minutes, probabilities=True, motion=velocity)
            analysis, probabilities = analysis[0], probabilities[0]
        else:
            analysis = symmetric_run(  # (n_out, h, w) in the analysis frame
                lambda f, v: forecaster._run(f, n_out, step_minutes, motion=v),
                frames,
                forecaster.symmetries,
                velocity,
            )[0]
        grid_no_data = ~np.isfinite(fields[-1])  # (h, w) on the model's grid
        inflow = None  # the last observation filled to every pixel, what flows in from outside
        if forecaster.inflow == "observed":
            inflow = lagrangian.inflow_field(fields[-1])
        round_trip = None  # quantile map undoing the trip to the model's grid and back, built once
        if forecaster.probability_matching == "cdf" and fields.shape[-2:] != rates.shape[-2:]:
            round_trip = round_trip_quantiles(rates[-1], regrid.resample(fields[-1], rates.shape[-2:]))
        return cls(
            forecaster=forecaster,
            shape=rates.shape[-2:],
            full_shape=full_shape,
            box=box,
            no_data=~np.isfinite(rates[-1]),  # (H, W) on the input grid
            velocity=velocity,
            forward=forward,
            inputs=inputs,
            analysis=analysis,
            round_trip=round_trip,
            match=distribution_matcher(fields[-1]),
            probabilities=probabilities,
            grid_no_data=grid_no_data,
            inflow=inflow,
        )

    def head_probabilities(self) -> HeadProbabilities:
        """The probability head's ``P(R ≥ u)`` advected to each lead time on the input grid.

        Each lead's probabilities move along the same displacements as the forecast; what comes
        from outside the domain is 0; NaN where the last frame has no data.
        """
        from nowcast import lagrangian, regrid

        def make(indices: list[int]) -> np.ndarray:
            def one_lead(j: int) -> np.ndarray:
                moved = np.stack([lagrangian.warp(self.probabilities[j, k], self.forward[j]) for k in indices])
                out = regrid.resample(np.nan_to_num(moved, nan=0.0), self.shape)  # (len(indices), H, W)
                out[:, self.no_data] = np.nan
                return np.clip(out, 0.0, 1.0).astype(np.float32)

            leads = np.stack(map_frames(one_lead, len(self.probabilities)), axis=1)  # (len(indices), n_out, H, W)
            return self.paste(leads, np.nan)

        return HeadProbabilities(tuple(self.forecaster.model.config.probability_thresholds), make)

    def displacements(self, perturbation: MotionPerturbation) -> np.ndarray:
        """Forward displacements ``(n_out, 2, h, w)`` along the motion with one member's perturbation."""
        from nowcast import lagrangian

        return lagrangian.displacements(self.velocity, len(self.analysis), perturbation=perturbation)

    def trended(self, weight: float) -> np.ndarray:
        """The network's forecast ``(n_out, h, w)`` with ``weight`` times the last change (:func:`continue_trend`).

        ``analysis`` itself when ``weight`` is 0 or there is no previous input to take a change from.
        """
        if not weight or len(self.inputs) < 2:
            return self.analysis
        return continue_trend(self.analysis, self.inputs[-2], self.inputs[-1], weight)

    def sprog(self) -> np.ndarray:
        """S-PROG's forecast in the moving frame ``(n_out, h, w)`` mm/h, matched as :meth:`prepare` matches.

        From the last three inputs advected to the analysis time (:func:`nowcast.cascade.moving_frame_sprog`).
        """
        from nowcast.cascade import moving_frame_sprog

        frames = moving_frame_sprog(self.inputs[-3:], len(self.analysis))
        return self.prepare(frames, np.zeros(len(frames)))  # matched, not smoothed

    def prepare(self, frames: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
        """Smooth (``sigmas`` ``(n_out,)`` pixels) and match each lead in the moving frame; ``(n_out, h, w)``."""
        matching = self.forecaster.probability_matching == "cdf"

        def one_lead(j: int) -> np.ndarray:
            frame = smooth_by_lead(frames[j : j + 1], sigmas[j : j + 1])[0]
            return self.match(frame) if matching else frame

        return np.stack(map_frames(one_lead, len(frames)))

    def place(self, prepared: np.ndarray, forward: np.ndarray) -> np.ndarray:
        """Advect each lead to its time, resample back; ``(n_out, H, W)`` mm/h on the input grid."""

        def one_lead(j: int) -> np.ndarray:
            out = self.moved(prepared[j], forward[j])
            if self.round_trip is not None:
                out = np.interp(out, *self.round_trip).astype(np.float32)
            out = dry_below_floor(out)
            out[self.no_data] = np.nan
            return out.astype(np.float32)

        return self.paste(np.stack(map_frames(one_lead, len(prepared))), np.nan)

    def paste(self, values: np.ndarray, fill: float | bool) -> np.ndarray:
        """``values`` ``(..., H, W)`` on ``box`` put on the whole input grid ``(..., *full_shape)``, ``fill`` around."""
        if self.box is None:
            return values
        out = np.full((*values.shape[:-2], *self.full_shape), fill, dtype=values.dtype)
        out[(..., *self.box)] = values
        return out

    def moved(self, prepared: np.ndarray, forward: np.ndarray) -> np.ndarray:
        """One lead ``(h, w)`` advected by ``forward`` ``(2, h, w)`` and resampled to ``(H, W)``, float32.

        What :meth:`place` gives before the round trip's quantile map, the rain floor and the no-data mask.
        """
        from nowcast import regrid

        return regrid.resample(self.advect(prepared, forward)[None], self.shape)[0]

    def advect(self, field: np.ndarray, forward: np.ndarray) -> np.ndarray:
        """``field`` ``(h, w)`` on the model's grid advected by ``forward`` ``(2, h, w)``, no NaN.

        Where the departure point lies outside the observed domain, the forecaster's ``inflow``
        decides: ``empty`` gives 0, as pysteps' extrapolation (and the network's values on no-data
        pixels move as they are); ``observed`` gives the last observation at the nearest observed
        pixel (:func:`nowcast.lagrangian.advect`), unsmoothed: smoothing it as the lead's frame is
        smoothed spread light rain along the edge into wide bands (round 20).
        """
        from nowcast import lagrangian

        if self.inflow is None:
            return np.nan_to_num(lagrangian.warp(field, forward), nan=0.0)
        return np.nan_to_num(lagrangian.advect(field, forward, self.inflow, self.grid_no_data), nan=0.0)

    def at_or_above(self, moved: np.ndarray, threshold: float) -> np.ndarray:
        """``place(...) >= threshold`` (NaN as 0) from :meth:`moved`'s field ``(H, W)``, bool, without mapping it.

        The round trip's quantile map is monotone, so only the pixels between the two quantiles
        around the threshold are mapped; the others are decided by comparing with those quantiles.
        Equal to thresholding :meth:`place`'s output (tested), in float32 as it compares.
        """
        if threshold <= 0:  # every pixel, no-data (counted as 0) included
            return np.ones(moved.shape, dtype=bool)
        level = max(np.float32(threshold), np.float32(RAIN_FLOOR_MM_H))  # below the floor is 0
        if self.round_trip is None:
            out = moved >= level
        else:
            source, target = self.round_trip
            j = int(np.searchsorted(target.astype(np.float32), level, side="left"))
            if j == len(target):
                out = np.zeros(moved.shape, dtype=bool)
            elif j == 0:
                out = np.ones(moved.shape, dtype=bool)
            else:
                out = moved > source[j]
                band = (moved >= source[j - 1]) & (moved <= source[j])
                out[band] = np.interp(moved[band], source, target).astype(np.float32) >= level
        out[self.no_data] = False
        return out


def observed_box(
    rates: np.ndarray,
    patch_size: int = 4,
    share: float = BOX_SHARE,
    margin: int | None = None,
    align: int | None = None,
) -> tuple[slice, slice] | None:
    """The box of the input grid a Lagrangian forecast runs on: around every pixel observed in any frame.

    ``rates`` ``(T, H, W)`` mm/h, NaN = no data. The box reaches ``margin`` pixels beyond the
    observed ones (default :data:`BOX_MARGIN_PATCHES` of the network's ``patch_size``) and starts on
    multiples of ``align`` (default: of the patches, of the motion's coarse grid and of its
    declustering cells, so that on a grid the model uses as it is, the motion's vectors and the
    patches are the whole grid's); None (the whole grid) when it would hold more than ``share`` of
    the grid or nothing is observed. Outside it every frame is no-data, so the forecast is no-data
    there too; inside, the network sees its zero padding ``margin`` pixels beyond the last observed
    pixel instead of zero rain up to the grid's edge, and the result differs from the whole grid's
    only by that (tested). On the KNMI composite (765 × 700 pixels of 1 km, the radars' range a
    quarter of it) the box is 0.45 of the grid.
    """
    margin = BOX_MARGIN_PATCHES * patch_size if margin is None else margin
    align = math.lcm(patch_size, MOTION_STRIDE, DECLUSTER_SCALE) if align is None else align
    seen = np.isfinite(rates).any(axis=0)
    if not seen.any():
        return None
    h, w = seen.shape
    rows, cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
    top, left = (max(0, first - margin) // align * align for first in (rows[0], cols[0]))
    bottom, right = min(h, rows[-1] + 1 + margin), min(w, cols[-1] + 1 + margin)
    if (bottom - top) * (right - left) > share * h * w:
        return None
    return slice(int(top), int(bottom)), slice(int(left), int(right))


def symmetric_run(
    run: Callable[[torch.Tensor, np.ndarray | None], np.ndarray],
    frames: torch.Tensor,
    count: int,
    motion: np.ndarray | None = None,
) -> np.ndarray:
    """Mean of ``run`` over ``count`` rotations and mirrors of ``frames``, each turned back.

    ``frames`` ``(B, T, C, H, W)``; ``run`` maps such a tensor and the motion ``(2, H, W)`` (turned
    with the frames, :func:`nowcast.lagrangian.turn_motion`) to ``(B, n_out, H, W)`` (mm/h).
    Valid for a model that forecasts in the frame that moves with the rain, where no direction is
    special, and trained on rotated and mirrored windows: the members differ only by what the network
    has not learned to be symmetric, and their mean (in mm/h) keeps what they agree on, as an
    ensemble mean does. ``count`` 1 is one plain call.
    """
    if count == 1:
        return run(frames, motion)
    from nowcast.lagrangian import turn_motion

    total = None
    for turns, mirror in _DIHEDRAL[:count]:
        moved = torch.rot90(frames, turns, dims=(-2, -1))
        moved = moved.flip(-1) if mirror else moved
        out = run(moved.contiguous(), None if motion is None else turn_motion(motion, turns, mirror))
        out = np.flip(out, -1) if mirror else out
        out = np.rot90(out, -turns, axes=(-2, -1))
        total = out.astype(np.float64) if total is None else total + out
    return (total / count).astype(np.float32)


def blend_sprog(network: np.ndarray, sprog: np.ndarray, weight: float) -> np.ndarray:
    """``(1 − weight)·network + weight·sprog``, both ``(n_out, h, w)`` mm/h in the moving frame; float32.

    Two forecasts of about equal skill whose errors differ average to a better one: on the left-out
    radars of rounds 20 to 22 the network and S-PROG tied on average, each ahead at other leads and
    thresholds. Where S-PROG has no value (NaN) the network's is kept.
    """
    blended = (1.0 - weight) * network + weight * sprog
    return np.where(np.isfinite(sprog), blended, network).astype(np.float32)


def continue_trend(frames: np.ndarray, previous: np.ndarray, last: np.ndarray, weight: float) -> np.ndarray:
    """Carry ``weight`` times the last step's change of log rain into every frame.

    ``log1p(out) = log1p(frames) + weight · (log1p(last) − log1p(previous))`` at each pixel: where
    the rain grew over the last step the forecast is heavier, where it decayed lighter, by the same
    amount at every lead (a trend continued per pixel, as S-PROG's AR(2) continues each scale's).

    Parameters
    ----------
    frames
        The forecast in the frame that moves with the rain, mm/h, ``(T, h, w)``, finite; below 0
        counts as 0.
    previous, last
        The last two observations advected to the analysis time, mm/h, ``(h, w)``; NaN (from outside
        the domain) means no change there.
    weight
        Share of the change carried on; 0 returns the frames unchanged.

    Returns
    -------
    numpy.ndarray
        ``(T, h, w)`` float32; below 0 (down to −1) where a decay is carried past dry. The
        probability matching ranks those pixels driest and the output's rain floor sets them to 0.

    """
    known = np.isfinite(previous) & np.isfinite(last)
    change = np.zeros(last.shape)
    change[known] = np.log1p(last[known]) - np.log1p(previous[known])
    factor = np.exp(weight * change).astype(np.float32)  # on 1 + R: one multiplication per pixel and lead
    rain = np.maximum(frames, 0.0, dtype=np.float32)
    return (1.0 + rain) * factor - 1.0


def smooth_by_lead(frames: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Smooth each frame with its own Gaussian, ``sigmas`` ``(T,)`` in pixels (0: unchanged).

    ``frames`` ``(T, H, W)`` mm/h, finite; the border is reflected, so the mean rain rate is kept
    up to the border's share. Returns ``(T, H, W)`` float32.
    """
    from scipy.ndimage import gaussian_filter

    out = [
        gaussian_filter(frame, float(s), mode="reflect") if s > 0 else frame
        for frame, s in zip(frames, sigmas, strict=True)
    ]
    return np.stack(out).astype(np.float32)


def match_distribution(forecast: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Give each frame the rain-rate distribution of ``reference``, keeping the frame's ranks.

    Pysteps' empirical-CDF probability matching, as S-PROG and STEPS apply it: the network decides
    where rain is heavier or lighter, the last observation decides how much rain of each intensity
    there is, wet fraction included. Chosen over no matching and over mean matching by CSI at 1 and
    5 mm/h on the validation radar (RMI), never on a scored radar. See :func:`distribution_matcher`.

    Parameters
    ----------
    forecast
        Rain rate, mm/h, ``(T, H, W)``, finite.
    reference
        Last observed rain rate, mm/h, ``(H, W)`` on the same grid; NaN (no data) counts as dry.

    Returns
    -------
    numpy.ndarray
        ``(T, H, W)`` float32.

    """
    match = distribution_matcher(reference)
    return np.stack([match(frame) for frame in forecast])


def distribution_matcher(reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Pysteps' ``nonparam_match_empirical_cdf`` towards ``reference``, its sort done once.

    The returned function maps a frame ``(H, W)`` (mm/h, finite; negative values count as 0) to a
    frame ``(H, W)`` float32 with the values of ``reference`` (``(H, W)`` mm/h, NaN as dry) in the
    frame's rank order; the frame's driest pixels get the reference's driest value, and when the
    reference has more wet pixels than the frame its lowest values become dry first. The result
    equals pysteps' function (tested) at one fast sort per frame (:func:`rank_order`) instead of
    three argsorts; where the frame has ties, pysteps' unstable argsort hands their levels out in
    an arbitrary order and this one in pixel order. The function may be called from several
    threads. Frames are all dry when the reference has no rain (nothing ≥ :data:`RAIN_FLOOR_MM_H`).
    """
    target = np.nan_to_num(reference.astype(np.float64), nan=0.0).ravel()
    rain = bool(np.any(target >= RAIN_FLOOR_MM_H))
    dry_target = float(target.min())
    ranked = np.sort(target)
    wet_target = int(np.count_nonzero(ranked > dry_target))

    def match(frame: np.ndarray) -> np.ndarray:
        if not rain:
            return np.zeros(frame.shape, dtype=np.float32)
        values = np.maximum(frame.astype(np.float64), 0.0).ravel()
        dry = float(values.min())
        wet = int(np.count_nonzero(values > dry))
        levels = ranked
        if wet_target > wet:  # the frame rains on fewer pixels: the reference's lowest rates go dry
            floor = np.percentile(ranked, 100 * (1 - wet / values.size))
            levels = np.where(ranked < floor, dry_target, ranked)
        out = np.empty(values.size, dtype=np.float64)
        out[rank_order(values)] = levels  # the k-th smallest pixel gets the k-th smallest level
        out[values == dry] = dry_target
        return out.reshape(frame.shape).astype(np.float32)

    return match


def rank_order(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` of non-negative rain rates ``(N,)``, in 60 % of the time.

    Each value's float32 bits (monotone for values ≥ 0) and its index are packed into one 64-bit
    key, and NumPy's vectorised sort of those keys gives the order (9 ms against 16 ms for an
    argsort of a 512 × 512 frame on a 2-core AVX2 CPU); ties keep their index order. Float64
    rates that differ only beyond float32's precision count as ties (forecasts are float32).
    """
    bits = (values.astype(np.float32) + np.float32(0.0)).view(np.uint32)  # + 0: -0.0 sorts as 0
    keys = (bits.astype(np.uint64) << np.uint64(32)) | np.arange(values.size, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def round_trip_quantiles(observed: np.ndarray, round_trip: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The quantile map that gives a forecast on the input grid back what the model's grid removed.

    Resampling to the model's grid and back smooths a field: on a 500 m radar the last observation
    comes back with about a tenth less area above 1 mm/h and lower peaks, and so would every
    frame matched to it on the model's grid. The map takes ``round_trip`` (the last observation
    resampled to the model's grid and back) onto ``observed`` (the observation itself); it is
    monotone and keeps dry pixels dry. Apply it to every forecast frame with
    ``np.interp(frames, *quantiles)``.

    Parameters
    ----------
    observed
        Last observation on the input grid, mm/h, ``(H, W)``; NaN is no data.
    round_trip
        The same observation resampled to the model's grid and back, ``(H, W)``.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(source, target)`` quantiles, mm/h, ``(2001,)`` each; None without valid pixels.

    """
    valid = np.isfinite(observed) & np.isfinite(round_trip)
    if not valid.any():
        return None
    levels = np.linspace(0.0, 1.0, 2001)
    return np.quantile(round_trip[valid], levels), np.quantile(observed[valid], levels)
