"""Blends of a Lagrangian model's forecast with S-PROG's, scored on the validation radar only.

The choice of :data:`nowcast.forecast.SPROG_WEIGHT` (``benchmarks/results/sprog_blend_round23.md``):
each checkpoint forecasts every window of the validation radar (``nowcast-evaluate``'s protocol: 60
min, every third window) with the shipped post-processing and no blend, beside pysteps' S-PROG and
LK extrapolation on the same windows; then every candidate blend, ``(1 − w)·network + w·S-PROG``
in rain rate or in log(1 + R), with or without a CDF matching of each lead to the last observation
afterwards, or a weight going linearly with lead time (:data:`RAMPS`), is scored from the same
forecasts on the common mask of the three. The rule is the sum
of CSI ratios to LK at 1 and 5 mm/h, summed over the checkpoints.

    python benchmarks/sprog_blend.py runs/r22corr/{bom,knmi,mch,fmi}/train/checkpoints/last.pt

The members with S-PROG blended in (round 23's ``--probabilities``) are scored by
``benchmarks/member_trend.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from validation_cli import validation_parser

from nowcast.evaluation import iter_windows, window_spec, window_starts
from nowcast.forecast import Forecaster, match_distribution
from nowcast.io.radar import open_radar
from nowcast.methods import Window, get_method
from nowcast.metrics import Scorer
from nowcast.regrid import grid_spacing_km

THRESHOLDS = (1.0, 5.0)
WEIGHTS = (0.25, 0.5, 0.75)  # S-PROG's share
#: S-PROG's share going linearly from the first lead's to the last's
RAMPS = ((0.5, 0.0), (0.5, 0.25), (0.25, 0.0), (0.75, 0.0))


def candidates(network: np.ndarray, sprog: np.ndarray, last: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, forecast (T, H, W) mm/h)`` of every blend of one window's two forecasts (NaN as 0)."""
    network, sprog = np.nan_to_num(network), np.nan_to_num(sprog)
    yield "network alone", network
    yield "S-PROG alone", sprog
    for w in WEIGHTS:
        rate = (1 - w) * network + w * sprog
        log = np.expm1((1 - w) * np.log1p(network) + w * np.log1p(sprog))
        for space, blend in (("rain rate", rate), ("log rain", log)):
            yield f"{space}, w = {w:g}", blend
            yield f"{space}, w = {w:g}, matched after", match_distribution(blend, last)
    for first, last_lead in RAMPS:  # tried after the constant weight was chosen
        w = np.linspace(first, last_lead, len(network), dtype=np.float32)[:, None, None]
        yield f"rain rate, w = {first:g} → {last_lead:g} by lead", (1 - w) * network + w * sprog


def score(checkpoint: Path, radar: Path, every: int) -> dict[str, tuple[float, float, float]]:
    """Candidate → (CSI ≥1, CSI ≥5, rule) of one checkpoint on ``radar``."""
    ds = open_radar(radar, skip_bad=True)
    forecaster = Forecaster.from_checkpoint(checkpoint, precision="32", sprog_weight=0.0)
    spec, sequences = window_spec(ds, 60.0, None, forecaster.t_in)
    spacing = grid_spacing_km(ds)
    methods = {name: get_method(name, forecaster, model_members=1) for name in ("model", "extrapolation", "sprog")}
    scorers: dict[str, Scorer] = {}
    for inputs, observed, _ in iter_windows(sequences, spec, window_starts(sequences, spec, every)):
        window = Window(inputs, spec.n_out, spec.step_minutes, spacing)
        out = {name: method(window)[0] for name, method in methods.items()}
        valid = np.isfinite(observed)
        for forecast in out.values():
            valid &= np.isfinite(forecast)
        blends = [("LK", out["extrapolation"]), *candidates(out["model"], out["sprog"], inputs[-1])]
        for name, forecast in blends:
            scorer = scorers.setdefault(name, Scorer(THRESHOLDS, spec.n_out))
            scorer.update(np.where(valid, forecast, 0.0)[None], np.where(valid, observed, 0.0)[None], valid[None])
    csi = {name: [s.compute()["csi"][u]["mean"] for u in THRESHOLDS] for name, s in scorers.items()}
    lk = csi.pop("LK")
    return {name: (c[0], c[1], c[0] / lk[0] + c[1] / lk[1]) for name, c in csi.items()}


def main() -> None:
    args = validation_parser(__doc__.splitlines()[0]).parse_args()
    results = [score(checkpoint, args.radar, args.every) for checkpoint in args.checkpoints]
    names = " | ".join(str(c) for c in args.checkpoints)
    print(f"| forecast | {names} | sum of the rule | mean CSI ≥1 |")
    print("|---" * (len(args.checkpoints) + 3) + "|")
    for name in results[0]:
        cells = " | ".join("{:.3f} / {:.3f} / {:.3f}".format(*r[name]) for r in results)
        total = sum(r[name][2] for r in results)
        print(f"| {name} | {cells} | {total:.3f} | {np.mean([r[name][0] for r in results]):.4f} |")


if __name__ == "__main__":
    main()
