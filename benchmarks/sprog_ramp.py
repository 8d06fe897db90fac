"""S-PROG's share growing with lead time (issue 12, round 28), scored on the validation radar only.

Each candidate blends S-PROG with a share linear in the lead index, from ``first`` at the first lead
to ``last`` at the last (:attr:`nowcast.forecast.Forecaster.sprog_weight_last`), the shipped settings
otherwise, and is scored by :func:`postprocessing.rule_scores` (CSI ratios to LK at 1 and 5 mm/h).
The rule, written before scoring, is in ``results/sprog_ramp_round28.md``::

    python benchmarks/sprog_ramp.py runs/ctrl/{bom,knmi,mch,fmi}/train/checkpoints/last.pt
    python benchmarks/sprog_ramp.py CHECKPOINT --ramp 0.5 0 --ramp 0.5 0.1    # round 28's second set
"""

from __future__ import annotations

import argparse
from pathlib import Path

from postprocessing import rule_scores

from nowcast.forecast import SPROG_WEIGHT, Forecaster
from nowcast.io.radar import open_radar

#: (share at the first lead, share at the last) of round 28's first set of candidates
CANDIDATES = ((0.1, 0.4), (0.0, 0.5), (0.4, 0.1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--radar", type=Path, default=Path("../shared/radar/rmi-2021-07-04"))
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument(
        "--ramp", nargs=2, type=float, action="append", metavar=("FIRST", "LAST"), help="default: CANDIDATES"
    )
    args = parser.parse_args()
    candidates = [(SPROG_WEIGHT, None), *(args.ramp or CANDIDATES)]  # the shipped constant share first
    ds = open_radar(args.radar, skip_bad=True)
    print("| checkpoint | S-PROG share, first → last lead | CSI ≥1 | CSI ≥5 | MSE | LK CSI ≥1 | LK CSI ≥5 | rule |")
    print("|---|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        for first, last in candidates:
            forecaster = Forecaster.from_checkpoint(checkpoint, precision="32", sprog_weight=first)
            forecaster.sprog_weight_last = last
            model, lk, mse, rule = rule_scores(ds, forecaster, args.every)
            share = f"{first:g}" if last is None else f"{first:g} → {last:g}"
            cells = f"{model[0]:.4f} | {model[1]:.4f} | {mse:.3f} | {lk[0]:.4f} | {lk[1]:.4f} | {rule:.4f}"
            print(f"| {checkpoint} | {share} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
