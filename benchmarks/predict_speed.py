"""Seconds for a 10-frame forecast of a 512 × 512 radar frame with the shipped model, by stage.

    python benchmarks/predict_speed.py [--checkpoint CKPT] [--shared ../shared/radar] [--reps 5] [--json OUT.json]
        [--inflow empty|observed]

Times ``Forecaster.forecast`` (resampling, Lucas–Kanade motion, displacements, advection of the
inputs, the network, S-PROG in the moving frame, smoothing, probability matching, the blend and
advection to each lead time: all of
``predict`` but reading and writing files) after one untimed call, on a synthetic field of
smooth, drifting rain (always) and on 512 × 512 crops of four real radars in ``--shared`` (when
present, 5 frames of 5 minutes each). Each figure is the median of ``--reps`` calls; the stages
are timed on their own on the synthetic field.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, shift

from nowcast import lagrangian
from nowcast.baselines import motion_field
from nowcast.cascade import moving_frame_sprog
from nowcast.forecast import Forecaster
from nowcast.lagrangian import INFLOWS
from nowcast.precision import resolve_precision

#: folder → (first of 5 files, top, left) of a 512 × 512 crop where it rains, 1 km grids, 5 min
REAL_CROPS = {
    "knmi-2010-08-26": (40, 120, 120),
    "mch-2015-05-15": (20, 64, 100),
    "fmi-2017-05-09": (20, 400, 120),
    "rmi-2021-07-04": (20, 94, 94),
}


def synthetic_rain(frames: int = 5, size: int = 512, seed: int = 0) -> np.ndarray:
    """``(frames, size, size)`` mm/h: smooth rain cells (about 8 % of the area ≥ 1 mm/h) drifting 2 px a step."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.gamma(0.2, 5.0, (size, size)), 6.0)
    field = np.maximum(field / np.quantile(field, 0.92) - 0.4, 0.0) / 0.6 * 1.5
    return np.stack([shift(field, (1.0 * t, 2.0 * t), order=1, mode="nearest") for t in range(frames)]).astype(
        np.float32
    )


def median_seconds(work: Callable[[], object], reps: int) -> float:
    """Median wall seconds of ``reps`` calls of ``work`` after one untimed call."""
    work()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stages(forecaster: Forecaster, rates: np.ndarray, reps: int) -> dict[str, float]:
    """Median seconds of the stages of one forecast, each timed on its own."""
    velocity = motion_field(rates)
    forward = lagrangian.displacements(velocity, 10)
    inputs = lagrangian.inputs_to_lagrangian(rates, forward)
    x = torch.from_numpy(forecaster.transform.encode(np.nan_to_num(inputs)))[None, :, None]
    with torch.no_grad():
        network = median_seconds(lambda: forecaster._run(x, 10, 5.0, motion=velocity), reps)
    return {
        "motion": median_seconds(lambda: motion_field(rates), reps),
        "displacements": median_seconds(lambda: lagrangian.displacements(velocity, 10), reps),
        "inputs_to_lagrangian": median_seconds(lambda: lagrangian.inputs_to_lagrangian(rates, forward), reps),
        "network": network,
        "sprog": median_seconds(lambda: moving_frame_sprog(inputs[-3:], 10), reps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--shared", type=Path, default=Path("../shared/radar"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--inflow", choices=INFLOWS, default=None, help="default: the model's")
    parser.add_argument("--sprog-weight", type=float, default=None, help="default: the model's")
    args = parser.parse_args()

    forecaster = Forecaster.from_checkpoint(args.checkpoint, inflow=args.inflow, sprog_weight=args.sprog_weight)
    results: dict[str, object] = {
        "checkpoint": forecaster.source,
        "inflow": forecaster.inflow,
        "sprog_weight": forecaster.sprog_weight,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "precision": resolve_precision("auto", torch.device("cpu")).reason,
    }
    rates = synthetic_rain(forecaster.t_in)
    results["synthetic_seconds"] = median_seconds(lambda: forecaster.forecast(rates, 10, 5.0), args.reps)
    results["unroll"] = forecaster.unroll
    results["synthetic_stages"] = stages(forecaster, rates, args.reps)
    if args.shared.is_dir():
        from nowcast.io.radar import open_radar

        for folder, (first, top, left) in REAL_CROPS.items():
            files = sorted(p for p in (args.shared / folder).iterdir() if not p.name.startswith("."))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = open_radar(files[first : first + forecaster.t_in])
            crop = ds["rainfall_rate"].values[:, top : top + 512, left : left + 512].astype(np.float32)
            seconds = median_seconds(lambda c=crop: forecaster.forecast(c, 10, 5.0), args.reps)
            results[f"{folder}_seconds"] = seconds
    for key, value in results.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
