"""Score the model and the baselines on the same windows of a radar sequence.

Used by ``nowcast.evaluate`` and the notebooks. A *window* is ``n_in`` observed frames followed
by ``n_out`` frames to forecast; windows start every ``every`` frames in each regular sequence.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from nowcast.errors import UserError
from nowcast.forecast import Forecaster
from nowcast.io.radar import split_sequences
from nowcast.methods import DEFAULT_MEMBERS, DEFAULT_METHODS, METHOD_NAMES, Method, Window, deterministic, get_method
from nowcast.metrics import Scorer
from nowcast.probability import MODEL_MEMBERS, exceedance
from nowcast.probscores import ProbabilisticScorer
from nowcast.regrid import grid_spacing_km

DEFAULT_THRESHOLDS = (0.5, 1.0, 2.0, 5.0, 10.0)
DEFAULT_FSS_SCALES = (1, 5, 17)
#: Methods that advect along the shared Lucas–Kanade motion.
MOTION_METHODS = frozenset({"extrapolation", "extrapolation_inflow", "sprog", "steps"})
#: Thresholds (mm/h) of the exceedance probabilities scored by default.
DEFAULT_PROBABILITY_THRESHOLDS = (1.0, 5.0)


@dataclass
class WindowSpec:
    """Frames in and out, and the time step they were derived from."""

    n_in: int
    n_out: int
    step_minutes: float


@dataclass
class EvaluationResult:
    """Scores per method plus the example window used for the comparison GIF.

    ``scores`` are the deterministic scores (of the ensemble mean for ensembles), ``probabilistic``
    the scores of each method's exceedance probabilities, ``seconds`` the mean wall-clock seconds
    per window each method took to forecast.
    """

    spec: WindowSpec
    count: int
    scores: dict[str, dict]
    example: dict[str, np.ndarray] = field(default_factory=dict)
    example_times: list = field(default_factory=list)
    probabilistic: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    samples: list[tuple] = field(default_factory=list)


def window_spec(ds: xr.Dataset, minutes_out: float, minutes_in: float | None, t_in: int) -> tuple[WindowSpec, list]:
    """Turn horizons in minutes into frames with the data's time step; returns the sequences too."""
    sequences = split_sequences(ds)
    steps = {round(step, 6) for _, step in sequences if np.isfinite(step)}
    if not steps:
        raise UserError(f"{ds.attrs['source_files'][0]}: a single frame cannot be evaluated")
    if len(steps) > 1:
        raise UserError(f"inputs mix time steps {sorted(steps)} min; evaluate one radar cycle at a time")
    step = steps.pop()
    n_out = max(1, int(round(minutes_out / step)))
    n_in = t_in if minutes_in is None else max(1, int(round(minutes_in / step)))
    if n_in < max(t_in, 3):
        raise UserError(f"input of {n_in} frames is too short: the model needs {t_in}, S-PROG 3")
    return WindowSpec(n_in, n_out, step), sequences


def window_starts(sequences: list, spec: WindowSpec, every: int) -> list[tuple[int, int]]:
    """``(sequence index, first frame)`` of every window, one every ``every`` frames."""
    length = spec.n_in + spec.n_out
    return [
        (k, start) for k, (seq, _) in enumerate(sequences) for start in range(0, seq.sizes["time"] - length + 1, every)
    ]


def iter_windows(
    sequences: list, spec: WindowSpec, starts: list[tuple[int, int]]
) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
    """Yield ``(inputs (n_in, H, W), observed (n_out, H, W), times)`` in mm/h for each start."""
    length = spec.n_in + spec.n_out
    for k, start in starts:
        seq = sequences[k][0]
        block = seq["rainfall_rate"].isel(time=slice(start, start + length)).values
        yield block[: spec.n_in], block[spec.n_in :], list(seq["time"].values[start : start + length])


def evaluate(
    ds: xr.Dataset,
    forecaster: Forecaster | None,
    minutes_out: float = 60.0,
    minutes_in: float | None = None,
    every: int = 1,
    methods: Sequence[str] = DEFAULT_METHODS,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    fss_scales: Sequence[int] = DEFAULT_FSS_SCALES,
    progress: bool = True,
    probability_thresholds: Sequence[float] = DEFAULT_PROBABILITY_THRESHOLDS,
    members: int = DEFAULT_MEMBERS,
    model_members: int = MODEL_MEMBERS,
) -> EvaluationResult:
    """Forecast every window with every method and score them against the observations.

    Every method forecasts through :func:`nowcast.methods.get_method`; all are scored on one common
    mask of pixels valid in the observation and in every forecast. ``probability_thresholds`` (mm/h;
    empty to skip) are the events whose probabilities are scored (see :mod:`nowcast.probability`);
    ``members`` is the STEPS ensemble size, ``model_members`` that of the model's motion-perturbed
    ensemble (1: its single forecast with a neighbourhood; no ensemble without probabilities).
    """
    unknown = set(methods) - set(METHOD_NAMES)
    if unknown:
        raise UserError(f"unknown method(s) {sorted(unknown)}; choose from {list(METHOD_NAMES)}")
    model_members = model_members if probability_thresholds else 1
    callables = {name: get_method(name, forecaster, members, model_members) for name in methods}
    t_in = forecaster.t_in if forecaster is not None else 3
    spec, sequences = window_spec(ds, minutes_out, minutes_in, t_in)
    spacing = grid_spacing_km(ds)
    starts = window_starts(sequences, spec, every)
    total = len(starts)
    if total == 0:
        raise UserError(
            f"no window of {spec.n_in} + {spec.n_out} frames at {spec.step_minutes:g} min fits the input "
            f"({ds.sizes['time']} frames); shorten --minutes"
        )
    bar = tqdm(total=total, desc="evaluate", unit="window", disable=not progress)
    result = score_windows(
        _counted(iter_windows(sequences, spec, starts), bar),
        spec,
        callables,
        spacing,
        thresholds,
        fss_scales,
        probability_thresholds,
    )
    bar.close()
    return result


def _counted(windows: Iterable, bar) -> Iterator:
    for window in windows:
        yield window
        bar.update(1)


def make_scorer(thresholds: Sequence[float], n_out: int, fss_scales: Sequence[int] = (), radar: bool = True) -> Scorer:
    """The deterministic scores of one method: radar gets FSS and B-MSE, Moving-MNIST SSIM."""
    if radar:
        return Scorer(thresholds, n_out, fss_scales=fss_scales, balanced=True)
    return Scorer(thresholds, n_out, ssim_range=1.0)


def score_windows(
    windows: Iterable[tuple[np.ndarray, np.ndarray, list]],
    spec: WindowSpec,
    methods: Mapping[str, Method],
    spacing_km: tuple[float, float] = (1.0, 1.0),
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    fss_scales: Sequence[int] = DEFAULT_FSS_SCALES,
    probability_thresholds: Sequence[float] = DEFAULT_PROBABILITY_THRESHOLDS,
    radar: bool = True,
    keep: int = 0,
) -> EvaluationResult:
    """The one scoring path of ``evaluate`` and of a training run's test pass.

    Parameters
    ----------
    windows
        ``(inputs (n_in, H, W), observed (n_out, H, W), times[, step_minutes[, motion]])`` in
        physical units (mm/h for radar), NaN where there is no data; a window's own step overrides
        ``spec``'s; ``motion`` is :attr:`nowcast.methods.Window.frame_motion`.
    spec
        Frames in and out and the time step.
    methods
        Name → :data:`nowcast.methods.Method`; all are scored on one common mask of pixels valid in
        the observation and in every forecast.
    spacing_km
        Grid spacing ``(dy, dx)``, km.
    thresholds, fss_scales
        Event thresholds (mm/h) and FSS window sizes (pixels) of the deterministic scores.
    probability_thresholds
        Events (mm/h) whose exceedance probabilities are scored; empty to skip.
    radar
        Radar scores (FSS, B-MSE, probabilities) or Moving-MNIST ones (SSIM, no probabilities).
    keep
        Keep the first ``keep`` windows' inputs, observations and forecasts in ``samples``.

    """
    scorers = {m: make_scorer(thresholds, spec.n_out, fss_scales, radar) for m in methods}
    probability_thresholds = probability_thresholds if radar else ()
    prob_scorers: dict[str, ProbabilisticScorer] = {}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    best_rain, example, example_times, samples, count = -1.0, {}, [], [], 0
    for inputs, observed, times, *extra in windows:
        step = extra[0] if extra and extra[0] else spec.step_minutes
        window = Window(inputs, spec.n_out, step, spacing_km, frame_motion=extra[1] if len(extra) > 1 else None)
        outputs = forecast_window(window, methods, seconds)
        forecasts = {name: deterministic(out) for name, out in outputs.items()}
        valid = common_mask(observed, forecasts.values())
        for name, fc in forecasts.items():
            scorers[name].update(np.where(valid, fc, 0.0)[None], np.where(valid, observed, 0.0)[None], valid[None])
        for name, out in outputs.items() if probability_thresholds else ():
            if name not in prob_scorers:
                size = out.shape[0] if out.shape[0] > 1 else None
                prob_scorers[name] = ProbabilisticScorer(probability_thresholds, spec.n_out, size)
            source = window.probability_fields.get(name, out)
            growth = window.probability_growth.get(name)
            start = time.perf_counter()  # a method's time includes its probabilities (members may be made here)
            probability = exceedance(
                source, probability_thresholds, window.lead_minutes, float(np.mean(spacing_km)), growth
            )
            seconds[name] += time.perf_counter() - start
            prob_scorers[name].update(probability, observed, valid, out if out.shape[0] > 1 else None)
        rain = float(np.nansum(observed))
        if rain > best_rain:
            best_rain, example, example_times = rain, {"observed": observed, **forecasts}, times
        if count < keep:
            samples.append((inputs, observed, forecasts))
        count += 1
    return EvaluationResult(
        spec,
        count,
        {m: s.compute() for m, s in scorers.items()},
        example,
        example_times,
        probabilistic={m: s.compute() for m, s in prob_scorers.items()},
        seconds={m: s / max(count, 1) for m, s in seconds.items()},
        samples=samples,
    )


def common_mask(observed: np.ndarray, forecasts) -> np.ndarray:
    """Pixels ``(n_out, H, W)`` valid in the observation and in every forecast: every method is scored on them."""
    valid = np.isfinite(observed)
    for forecast in forecasts:
        valid &= np.isfinite(forecast)
    return valid


def forecast_window(window: Window, methods: dict[str, Method], seconds: dict[str, float] | None = None) -> dict:
    """Each method's output ``(M, n_out, H, W)`` mm/h for one window; adds wall-clock seconds to ``seconds``.

    The Lucas–Kanade motion that extrapolation, S-PROG and STEPS share is computed first and timed
    as ``motion``; the model's time includes its own motion (on its own grid).
    """
    out = {}
    if MOTION_METHODS & set(methods):
        start = time.perf_counter()
        _ = window.velocity
        if seconds is not None:
            seconds["motion"] = seconds.get("motion", 0.0) + time.perf_counter() - start
    for name, method in methods.items():
        start = time.perf_counter()
        out[name] = method(window)
        if seconds is not None:
            seconds[name] += time.perf_counter() - start
    return out


def metrics_document(result: EvaluationResult) -> dict:
    """The ``metrics.json`` content: window settings and the scores of every method."""
    spec = result.spec
    return {
        "windows": {
            "n_in": spec.n_in,
            "n_out": spec.n_out,
            "step": spec.step_minutes,
            "count": result.count,
            "lead_minutes": [spec.step_minutes * (k + 1) for k in range(spec.n_out)],
        },
        "methods": result.scores,
        "probabilistic": result.probabilistic,
        "seconds_per_window": result.seconds,
    }


def metrics_rows(document: dict) -> list[dict]:
    """Flatten a metrics document into CSV rows: method, score, threshold, scale, lead, value."""
    rows = []
    leads = document["windows"]["lead_minutes"]
    for method, scores in document["methods"].items():
        for score, entry in scores.items():
            for threshold, scale, summary in _walk(entry):
                rows += _lead_rows(method, score, threshold, leads, summary, scale)
    for method, scores in document.get("probabilistic", {}).items():
        for score in ("brier", "bss"):
            for threshold, summary in scores[score].items():
                rows += _lead_rows(method, score, threshold, leads, summary)
        for threshold, area in scores["roc_area"].items():
            rows.append(_row(method, "roc_area", threshold, "", "mean", area))
        if "crps" in scores:
            rows += _lead_rows(method, "crps", "", leads, scores["crps"])
    return rows


def _row(method: str, score: str, threshold, scale, lead, value) -> dict:
    return {
        "method": method,
        "score": score,
        "threshold": threshold,
        "scale": scale,
        "lead_minutes": lead,
        "value": value,
    }


def _lead_rows(
    method: str, score: str, threshold, leads: Sequence[float], summary: dict, scale: object = ""
) -> list[dict]:
    """One row per lead time of ``summary["by_lead"]``, then the ``mean`` row."""
    rows = [_row(method, score, threshold, scale, lead, v) for lead, v in zip(leads, summary["by_lead"], strict=True)]
    return [*rows, _row(method, score, threshold, scale, "mean", summary["mean"])]


def _walk(entry: dict) -> Iterator[tuple[str, str, dict]]:
    if "by_lead" in entry:
        yield "", "", entry
        return
    for threshold, inner in entry.items():
        if "by_lead" in inner:
            yield threshold, "", inner
        else:
            for scale, summary in inner.items():
                yield threshold, scale, summary
