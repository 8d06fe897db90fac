"""Probability matching of a Lagrangian model's frames, on or off, scored on the validation radar only.

Usage::

    python benchmarks/probability_matching.py runs/loo/bom/train/checkpoints/best.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nowcast.evaluation import evaluate
from nowcast.forecast import PROBABILITY_MATCHING, Forecaster
from nowcast.io.radar import open_radar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--radar", type=Path, default=Path("../shared/radar/rmi-2021-07-04"))
    parser.add_argument("--every", type=int, default=3)
    args = parser.parse_args()
    ds = open_radar(args.radar, skip_bad=True)
    print("| matching | CSI ≥1 | CSI ≥5 | MSE |\n|---|---|---|---|")
    for matching in PROBABILITY_MATCHING:
        forecaster = Forecaster.from_checkpoint(args.checkpoint, precision="32", probability_matching=matching)
        result = evaluate(ds, forecaster, 60.0, None, args.every, ["model"], [1.0, 5.0], [], False, ())
        scores = result.scores["model"]
        csi = [scores["csi"][t]["mean"] for t in ("1.0", "5.0")]
        print(f"| {matching} | {csi[0]:.3f} | {csi[1]:.3f} | {scores['mse']['mean']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
