"""A mean of several Lagrangian networks, scored on the validation radar only.

Each window is forecast by every checkpoint's network in the frame that moves with the rain; their
forecasts are averaged in mm/h there (as the test-time symmetries average, ``nowcast.forecast.symmetric_run``)
and the first checkpoint's shipped post-processing (trend, smoothing, matching, S-PROG's share) is
applied once to the mean. Scored with the ``nowcast-evaluate`` protocol (60 min, every third window)
beside LK extrapolation on the same windows and one common mask; the rule is the sum of the CSI
ratios to LK at 1 and 5 mm/h, as ``postprocessing.py`` prints it. One checkpoint scores it alone.

Usage::

    python benchmarks/model_mean.py runs/ctrl/bom/train/checkpoints/last.pt runs/seed1/bom/train/checkpoints/last.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from postprocessing import rule_scores

from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar


def mean_forecaster(checkpoints: list[Path], precision: str = "32") -> Forecaster:
    """The first checkpoint's :class:`Forecaster` whose network pass is the mean of every checkpoint's.

    Each network keeps its own unroll; the mean ``(B, n_out, H, W)`` mm/h replaces the first
    network's output where the forecast takes it, so everything after (post-processing, advection,
    no-data mask) is the shipped path's.
    """
    first, *others = (Forecaster.from_checkpoint(path, precision=precision) for path in checkpoints)
    if not others:
        return first
    if not all(o.lagrangian and o.grid_km == first.grid_km and o.t_in == first.t_in for o in [first, *others]):
        raise SystemExit("error: every checkpoint must be a Lagrangian model with the same grid and inputs")
    own_run = first._run

    def mean_run(frames, n_out, step_minutes, probabilities=False, motion=None):
        if probabilities:
            raise SystemExit("error: a mean of networks has no probability head")
        total = own_run(frames, n_out, step_minutes, motion=motion).astype(np.float64)
        for other in others:
            total += other._run(frames, n_out, step_minutes, motion=motion)
        return (total / (1 + len(others))).astype(np.float32)

    first._run = mean_run  # this instance only
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--radar", type=Path, default=Path("../shared/radar/rmi-2021-07-04"))
    parser.add_argument("--every", type=int, default=3)
    args = parser.parse_args()
    forecaster = mean_forecaster(args.checkpoints)
    ds = open_radar(args.radar, skip_bad=True)
    model, lk, mse, ratios = rule_scores(ds, forecaster, args.every)
    print("| networks | CSI ≥1 | CSI ≥5 | MSE | LK CSI ≥1 | LK CSI ≥5 | sum of CSI ratios to LK |")
    print("|---|---|---|---|---|---|---|")
    names = " + ".join(str(p) for p in args.checkpoints)
    print(f"| {names} | {model[0]:.4f} | {model[1]:.4f} | {mse:.3f} | {lk[0]:.4f} | {lk[1]:.4f} | {ratios:.4f} |")


if __name__ == "__main__":
    main()
