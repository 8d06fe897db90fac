"""What flows in from outside the radar's domain: the Lagrangian model's ``inflow``, scored on crops.

Where the motion comes from outside the observed domain, pysteps' extrapolation brings in no rain
(``inflow="empty"``); ``observed`` brings in the last observation at the nearest observed pixel. A whole radar seldom
tells the two apart (on RMI no pixel changes side of 1 mm/h), so the choice is made on square crops
of the validation radar: each crop is a radar whose range cuts through the rain, with the truth
beyond its edge kept out of the inputs and scored inside. Every crop is scored with the
``nowcast-evaluate`` protocol (60 min, every third window) beside LK extrapolation on the same
windows and mask; the rule is the sum over crops of the CSI ratios to LK at 1 and 5 mm/h.

Usage::

    python benchmarks/inflow.py CHECKPOINT                      # the model, both inflows, RMI crops
    python benchmarks/inflow.py CHECKPOINT --radar ../shared/radar/rmi-2021-07-04 --size 256 --offsets 100 222 344
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from nowcast.evaluation import evaluate
from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar
from nowcast.lagrangian import INFLOWS

THRESHOLDS = (1.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--radar", type=Path, default=Path("../shared/radar/rmi-2021-07-04"))
    parser.add_argument("--size", type=int, default=256, help="crop side, pixels")
    parser.add_argument("--offsets", nargs="+", type=int, default=[100, 222, 344], help="crop corners, pixels")
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--inflows", nargs="+", choices=INFLOWS, default=list(INFLOWS))
    args = parser.parse_args()
    ds = open_radar(args.radar, skip_bad=True)
    columns = "CSI ≥1 | CSI ≥5 | LK CSI ≥1 | LK CSI ≥5 | LK with that inflow CSI ≥1 | sum of CSI ratios to LK"
    print(f"| crop (row, col) | inflow | {columns} |")
    print("|---|---|---|---|---|---|---|---|")
    inflows = args.inflows
    totals = dict.fromkeys(inflows, 0.0)
    for row, col in itertools.product(args.offsets, repeat=2):
        crop = ds.isel(y=slice(row, row + args.size), x=slice(col, col + args.size))
        for inflow in inflows:
            forecaster = Forecaster.from_checkpoint(args.checkpoint, precision="32", inflow=inflow)
            methods = ["model", "extrapolation", "extrapolation_inflow"]
            result = evaluate(crop, forecaster, 60.0, None, args.every, methods, THRESHOLDS, [], False, ())
            model, lk, lk_inflow = ([result.scores[m]["csi"][t]["mean"] for t in THRESHOLDS] for m in methods)
            ratios = sum(c / b for c, b in zip(model, lk, strict=True))
            totals[inflow] += ratios
            cells = f"{model[0]:.3f} | {model[1]:.3f} | {lk[0]:.3f} | {lk[1]:.3f} | {lk_inflow[0]:.3f}"
            print(f"| ({row}, {col}) | {inflow} | {cells} | {ratios:.3f} |", flush=True)
    print()
    print(" · ".join(f"{inflow}: {total:.3f}" for inflow, total in totals.items()), "(sum over crops)")


if __name__ == "__main__":
    main()
