"""A Lagrangian model scored on a radar with and without the trend term (issue 12, round 15).

    python benchmarks/trend_scores.py CHECKPOINT RADAR OUT_PREFIX [--weights 0 0.5]

The ``nowcast-evaluate`` protocol (60 min, every third window, the default thresholds and FSS
scales, no probabilities) for the model at each trend weight (:func:`nowcast.forecast.continue_trend`)
beside LK extrapolation on the same windows and one common mask; writes
``OUT_PREFIX_trend<w>.json`` (``metrics.json``'s layout) and prints CSI at each threshold. Used on
the leave-one-out folds, which chose nothing here: the weight was chosen on RMI
(``benchmarks/postprocessing.py --trend``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nowcast.checkpoint import atomic_write
from nowcast.evaluation import DEFAULT_FSS_SCALES, DEFAULT_THRESHOLDS, evaluate, metrics_document
from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("radar", type=Path)
    parser.add_argument("prefix", help="output path prefix; _trend<w>.json is appended")
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.5])
    parser.add_argument("--every", type=int, default=3)
    args = parser.parse_args()
    ds = open_radar(args.radar, skip_bad=True)
    methods = ["model", "extrapolation"]
    for weight in args.weights:
        forecaster = Forecaster.from_checkpoint(args.checkpoint, precision="32", trend_weight=weight)
        result = evaluate(
            ds, forecaster, 60.0, None, args.every, methods, DEFAULT_THRESHOLDS, DEFAULT_FSS_SCALES, False, ()
        )
        document = metrics_document(result)
        text = json.dumps(document, indent=1)
        atomic_write(f"{args.prefix}_trend{weight:g}.json", lambda tmp, text=text: Path(tmp).write_text(text))
        csi = {
            name: " ".join(f"{document['methods'][name]['csi'][t]['mean']:.4f}" for t in DEFAULT_THRESHOLDS)
            for name in methods
        }
        print(f"trend {weight:g}: model CSI {csi['model']}; LK {csi['extrapolation']}", flush=True)


if __name__ == "__main__":
    main()
