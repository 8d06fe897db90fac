"""Post-processing of a Lagrangian model's frames, scored on the validation radar only.

Four choices are made here, never on a radar that is reported: probability matching of each frame
to the last observation (``cdf`` or ``none``), the Gaussian smoothing that widens with lead
time (km per minute), the share of the last step's change of log rain that each frame carries on
(``--trend``) and S-PROG's share of the blend (``--sprog-weight``). Every setting is scored with the
``nowcast-evaluate`` protocol (60 min, every third window) beside LK extrapolation on the same
windows; the rule is the largest sum of CSI ratios to LK at 1 and 5 mm/h.

Usage::

    python benchmarks/postprocessing.py runs/loo/bom/train/checkpoints/best.pt
    python benchmarks/postprocessing.py CHECKPOINT --matching cdf --smoothing 0 0.05 0.1 0.2 0.3
    python benchmarks/postprocessing.py CHECKPOINT --matching cdf --smoothing 0.1 --trend 0 0.25 0.5 1
    python benchmarks/postprocessing.py CHECKPOINT --matching cdf --smoothing 0.1 --trend 1 --sprog-weight 0.15 0.25
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from nowcast.evaluation import evaluate
from nowcast.forecast import FADES, PROBABILITY_MATCHING, SYMMETRIES, Forecaster
from nowcast.io.radar import open_radar

THRESHOLDS = (1.0, 5.0)


def rule_scores(ds, forecaster: Forecaster, every: int) -> tuple[list[float], list[float], float, float]:
    """The model's CSI at :data:`THRESHOLDS`, LK's, the model's MSE and the rule (sum of CSI ratios to LK).

    ``nowcast-evaluate``'s protocol on ``ds``: 60 min, a window every ``every`` frames, the model and
    LK extrapolation on the same windows and one common mask.
    """
    methods = ["model", "extrapolation"]
    result = evaluate(ds, forecaster, 60.0, None, every, methods, THRESHOLDS, [], False, ())
    model, lk = ([result.scores[name]["csi"][t]["mean"] for t in THRESHOLDS] for name in methods)
    ratios = sum(c / b for c, b in zip(model, lk, strict=True))
    return model, lk, result.scores["model"]["mse"]["mean"], ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--radar", type=Path, default=Path("../shared/radar/rmi-2021-07-04"))
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--matching", nargs="+", choices=PROBABILITY_MATCHING, default=list(PROBABILITY_MATCHING))
    parser.add_argument("--smoothing", nargs="+", type=float, default=[0.0], metavar="KM_PER_MIN")
    parser.add_argument("--fade", nargs="+", choices=FADES, default=["none"])
    parser.add_argument("--symmetries", nargs="+", type=int, choices=SYMMETRIES, default=[1])
    parser.add_argument("--trend", nargs="+", type=float, default=[0.0], metavar="WEIGHT")
    parser.add_argument(
        "--sprog-weight", nargs="+", type=float, default=[None], metavar="WEIGHT", help="default: the shipped share"
    )
    args = parser.parse_args()
    ds = open_radar(args.radar, skip_bad=True)
    print(
        "| matching | fade | smoothing (km/min) | symmetries | trend | S-PROG weight | CSI ≥1 | CSI ≥5 | MSE "
        "| LK CSI ≥1 | LK CSI ≥5 | sum of CSI ratios to LK |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    settings = itertools.product(
        args.matching, args.fade, args.smoothing, args.symmetries, args.trend, args.sprog_weight
    )
    for matching, fade, smoothing, symmetries, trend, sprog_weight in settings:
        forecaster = Forecaster.from_checkpoint(
            args.checkpoint,
            precision="32",
            probability_matching=matching,
            smoothing_km_per_minute=smoothing,
            symmetries=symmetries,
            fade=fade,
            trend_weight=trend,
            sprog_weight=sprog_weight,
        )
        model, lk, mse, ratios = rule_scores(ds, forecaster, args.every)
        cells = f"{model[0]:.4f} | {model[1]:.4f} | {mse:.3f}"
        share = forecaster.sprog_weight  # the default resolved by the model's frame
        setting = f"{matching} | {fade} | {smoothing:g} | {symmetries} | {trend:g} | {share:g}"
        print(f"| {setting} | {cells} | {lk[0]:.4f} | {lk[1]:.4f} | {ratios:.4f} |", flush=True)


if __name__ == "__main__":
    main()
