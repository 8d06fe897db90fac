"""Probabilistic nowcasts: choose the neighbourhood growth on the validation radar, then score.

1. ``choose``: on the validation radar only (RMI, never trained on), forecast every window with the
   model once and score its exceedance probabilities for several neighbourhood growths (km of
   half-width per minute of lead, :mod:`nowcast.probability`); the best mean Brier skill over the
   thresholds is the shipped :data:`nowcast.probability.NEIGHBOURHOOD_KM_PER_MINUTE`.
2. ``designs``: on the validation radar, the unsmoothed forecast with its neighbourhood against
   an ensemble of it advected along motions perturbed as STEPS perturbs its members' (one network
   pass), with and without a neighbourhood per member, and, for a checkpoint with a probability
   head, the head's probabilities with and without a neighbourhood.
3. ``score``: ``nowcast-evaluate`` on a radar the model was not trained on, model against
   extrapolation and a STEPS ensemble, with seconds per window.

    python benchmarks/probabilistic.py choose --checkpoint runs/loo/bom/train/checkpoints/best.pt
    python benchmarks/probabilistic.py score --checkpoint runs/loo/bom/train/checkpoints/best.pt
        --radar ../shared/radar/bom-melbourne-2018-06-16 --out runs/prob/bom  (one line)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from nowcast.evaluation import common_mask, iter_windows, window_spec, window_starts
from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar
from nowcast.methods import Window, get_method
from nowcast.probability import exceedance
from nowcast.probscores import ProbabilisticScorer
from nowcast.regrid import grid_spacing_km

GROWTHS_KM_PER_MINUTE = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8)
THRESHOLDS = (1.0, 5.0)


def choose(checkpoint: Path, radar: Path, every: int) -> dict[float, dict]:
    """Brier skill and ROC area of the model's probabilities for each neighbourhood growth."""
    forecaster = Forecaster.from_checkpoint(checkpoint)
    model = get_method("model", forecaster)
    ds = open_radar(radar, skip_bad=True)
    spec, sequences = window_spec(ds, 60.0, None, forecaster.t_in)
    spacing = float(np.mean(grid_spacing_km(ds)))
    scorers = {g: ProbabilisticScorer(THRESHOLDS, spec.n_out) for g in GROWTHS_KM_PER_MINUTE}
    for inputs, observed, _ in iter_windows(sequences, spec, window_starts(sequences, spec, every)):
        window = Window(inputs, spec.n_out, spec.step_minutes, grid_spacing_km(ds))
        out = model(window)
        source = window.probability_fields.get("model", out)  # the field probabilities come from
        valid = common_mask(observed, [out[0]])
        for growth, scorer in scorers.items():
            scorer.update(exceedance(source, THRESHOLDS, window.lead_minutes, spacing, growth), observed, valid)
    result = {}
    for growth, scorer in scorers.items():
        scores = scorer.compute()
        result[growth] = {
            "bss": {u: scores["bss"][u]["mean"] for u in THRESHOLDS},
            "roc_area": {u: scores["roc_area"][u] for u in THRESHOLDS},
            "mean_bss": float(np.mean([scores["bss"][u]["mean"] for u in THRESHOLDS])),
        }
    return result


#: Probability designs compared on the validation radar by ``designs``: (members, growth km/min);
#: members 1 is the unsmoothed forecast, more are its motion-perturbed ensemble, 0 the network's
#: probability head (when the checkpoint has one).
DESIGNS = ((1, 0.5), (20, 0.0), (20, 0.1), (20, 0.2), (20, 0.3), (20, 0.4), (20, 0.5), (20, 0.7))
HEAD_DESIGNS = ((0, 0.0), (0, 0.05), (0, 0.1), (0, 0.2), (0, 0.3), (0, 0.5))


def designs(checkpoint: Path, radar: Path, every: int, which: str = "all") -> dict[str, dict]:
    """Brier skill, ROC area and reliability of each design, with the seconds each spends per window.

    The designs are :data:`DESIGNS` (``which`` ``all`` or ``members``) and, for a checkpoint with a
    probability head, :data:`HEAD_DESIGNS` (``all`` or ``head``).
    """
    import time

    forecaster = Forecaster.from_checkpoint(checkpoint, probability_source="members")
    head = None
    if forecaster.model.probability_conv is not None:
        head = Forecaster.from_checkpoint(checkpoint, probability_source="head")
    with_head = head is not None and which != "members"
    all_designs = (DESIGNS if which != "head" else ()) + (HEAD_DESIGNS if with_head else ())
    ds = open_radar(radar, skip_bad=True)
    spec, sequences = window_spec(ds, 60.0, None, forecaster.t_in)
    spacing_km = grid_spacing_km(ds)
    spacing = float(np.mean(spacing_km))
    lead = spec.step_minutes * np.arange(1, spec.n_out + 1)
    scorers = {d: ProbabilisticScorer(THRESHOLDS, spec.n_out) for d in all_designs}
    seconds = {m: 0.0 for m, _ in all_designs}
    windows = 0
    for inputs, observed, _ in iter_windows(sequences, spec, window_starts(sequences, spec, every)):
        sources = {}
        for members in sorted({m for m, _ in all_designs}):
            start = time.perf_counter()
            out, fields = (head if members == 0 else forecaster).forecast_for_probabilities(
                inputs, spec.n_out, spec.step_minutes, spacing_km, members=max(members, 1)
            )
            sources[members] = fields if members == 0 else np.asarray(fields)  # made once, read by several designs
            seconds[members] += time.perf_counter() - start
        valid = common_mask(observed, [out])
        for (members, growth), scorer in scorers.items():
            scorer.update(exceedance(sources[members], THRESHOLDS, lead, spacing, growth), observed, valid)
        windows += 1
    result = {}
    for (members, growth), scorer in scorers.items():
        scores = scorer.compute()
        result[f"{'head' if members == 0 else members} x {growth:g}"] = {
            "members": members,
            "growth_km_per_minute": growth,
            "bss": {u: scores["bss"][u]["mean"] for u in THRESHOLDS},
            "roc_area": {u: scores["roc_area"][u] for u in THRESHOLDS},
            "reliability_term": {u: scores["reliability"][u]["term"] for u in THRESHOLDS},
            "mean_bss": float(np.mean([scores["bss"][u]["mean"] for u in THRESHOLDS])),
            "seconds_per_window": seconds[members] / max(windows, 1),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["choose", "designs", "score"])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--radar", type=Path, default=Path("../shared/radar/rmi-2021-07-04"))
    parser.add_argument("--out", type=Path, default=Path("runs/prob"))
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--designs", choices=["all", "members", "head"], default="all", help="which designs to compare")
    args = parser.parse_args()
    if args.task == "designs":
        result = designs(args.checkpoint, args.radar, args.every, args.designs)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"designs_{args.designs}.json").write_text(json.dumps(result, indent=2))
        print(
            "| members × growth km/min | BSS ≥1 | BSS ≥5 | ROC area ≥1 | ROC area ≥5 | reliability ≥1 | "
            "reliability ≥5 | mean BSS | s/window |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name, r in result.items():
            print(
                f"| {name} | {r['bss'][1.0]:.3f} | {r['bss'][5.0]:.3f} | {r['roc_area'][1.0]:.3f} | "
                f"{r['roc_area'][5.0]:.3f} | {r['reliability_term'][1.0]:.4f} | {r['reliability_term'][5.0]:.5f} | "
                f"{r['mean_bss']:.3f} | {r['seconds_per_window']:.2f} |"
            )
        return
    if args.task == "choose":
        result = choose(args.checkpoint, args.radar, args.every)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "neighbourhood_choice.json").write_text(json.dumps(result, indent=2))
        print("| growth km/min | BSS ≥1 | BSS ≥5 | ROC area ≥1 | ROC area ≥5 | mean BSS |\n|---|---|---|---|---|---|")
        for growth, r in result.items():
            print(
                f"| {growth:g} | {r['bss'][1.0]:.3f} | {r['bss'][5.0]:.3f} | {r['roc_area'][1.0]:.3f} | "
                f"{r['roc_area'][5.0]:.3f} | {r['mean_bss']:.3f} |"
            )
        print(f"best: {max(result, key=lambda g: result[g]['mean_bss']):g} km/min")
        return
    cmd = [sys.executable, "-m", "nowcast.evaluate", "--input", str(args.radar), "--output", str(args.out)]
    cmd += ["--checkpoint", str(args.checkpoint), "--minutes", "60", "--every", str(args.every), "--overwrite"]
    cmd += ["--methods", "model", "extrapolation", "steps", "--members", str(args.members)]
    cmd += ["--thresholds", "1", "5", "--fss-scales", "17", "--probability-thresholds", "1", "5"]
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
