"""Round 27 (issue 12): each lead's light-rain area matched to the inputs' wet-area trend, scored on RMI only.

The rule is in ``results/light_area_trend_round27.md``, written before any candidate was scored.
Usage::

    python benchmarks/light_area_trend.py CHECKPOINT [--radar ../shared/radar/rmi-2021-07-04]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from postprocessing import rule_scores

from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar

#: (weight w, threshold u in mm/h whose area trend is followed); w = 0 is the shipped matching.
GRID = ((0.0, 0.1), (0.5, 0.1), (1.0, 0.1), (0.5, 1.0), (1.0, 1.0))
#: The areas at or above this rain rate (mm/h) stay the last observation's.
BELOW_MM_H = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--radar", type=Path, default=Path("../shared/radar/rmi-2021-07-04"))
    args = parser.parse_args()
    ds = open_radar(args.radar, skip_bad=True)
    print("| w | u (mm/h) | CSI ≥1 | CSI ≥5 | MSE | LK CSI ≥1 | LK CSI ≥5 | rule | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for weight, threshold in GRID:
        start = time.perf_counter()
        forecaster = Forecaster.from_checkpoint(
            args.checkpoint, precision="32", probability_matching="cdf", smoothing_km_per_minute=0.1, trend_weight=0.75
        )
        forecaster.area_trend_weight, forecaster.area_trend_mm_h = weight, threshold
        forecaster.area_trend_below_mm_h = BELOW_MM_H
        model, lk, mse, ratios = rule_scores(ds, forecaster, 3)
        cells = f"{model[0]:.4f} | {model[1]:.4f} | {mse:.3f} | {lk[0]:.4f} | {lk[1]:.4f} | {ratios:.4f}"
        print(f"| {weight:g} | {threshold:g} | {cells} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
