"""What the network's motion-perturbed members are made from (issue 15), scored on the validation radar.

Round 27's trend in the members (rule in ``results/probabilistic/member_trend_round27.md``, written
before any candidate was scored; trend 0.75 adopted) and round 23's S-PROG blend in them
(``results/sprog_blend_round23.md``). For each checkpoint, the mean Brier skill at 1 and 5 mm/h of the
20 motion-perturbed members made from the network's unsmoothed, matched forecast without the trend
(shipped until round 27) and from each candidate's field::

    python benchmarks/member_trend.py runs/ctrl/{bom,knmi,mch,fmi}/train/checkpoints/last.pt
    python benchmarks/member_trend.py CHECKPOINT --trend 0.75 1 1.25      # round 28: past round 27's grid
    python benchmarks/member_trend.py CHECKPOINT --trend 1.25 1.5 2       # round 29: past round 28's grid
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from validation_cli import validation_parser

from nowcast.evaluation import common_mask, iter_windows, window_spec, window_starts
from nowcast.forecast import SPROG_WEIGHT, Forecaster, PerturbedMembers, blend_sprog
from nowcast.io.radar import open_radar
from nowcast.probability import MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE, MODEL_MEMBERS, exceedance
from nowcast.probscores import ProbabilisticScorer
from nowcast.regrid import grid_spacing_km

THRESHOLDS = (1.0, 5.0)
#: (name, trend weight, S-PROG blended in)
CANDIDATES = (
    ("shipped", 0.0, False),  # until round 27: the members without the trend
    ("trend 0.5", 0.5, False),
    ("trend 0.75", 0.75, False),
    ("trend 0.75 + S-PROG", 0.75, True),
    ("S-PROG", 0.0, True),  # round 23's try (results/sprog_blend_round23.md): the blend without the trend
)


def brier_skill(
    checkpoint: Path, radar: Path, every: int, candidates: tuple = CANDIDATES
) -> dict[str, tuple[float, float]]:
    """Candidate ``(name, trend weight, S-PROG blended in)`` → mean Brier skill at 1 and 5 mm/h of its members."""
    ds = open_radar(radar, skip_bad=True)
    forecaster = Forecaster.from_checkpoint(checkpoint, precision="32")
    spec, sequences = window_spec(ds, 60.0, None, forecaster.t_in)
    spacing = grid_spacing_km(ds)
    lead_minutes = spec.step_minutes * np.arange(1, spec.n_out + 1)
    scorers = {name: ProbabilisticScorer(THRESHOLDS, spec.n_out) for name, _, _ in candidates}
    for inputs, observed, _ in iter_windows(sequences, spec, window_starts(sequences, spec, every)):
        out, shipped = forecaster.forecast_for_probabilities(
            inputs, spec.n_out, spec.step_minutes, spacing, members=MODEL_MEMBERS
        )
        run = shipped.run
        valid = common_mask(observed, [out])
        sprog = run.sprog() if any(blended for *_, blended in candidates) else None  # once per window
        prepared = {}  # trend weight → the matched, unsmoothed field, shared by the candidates with that weight
        for weight in {weight for _, weight, _ in candidates}:
            prepared[weight] = run.prepare(run.trended(weight), np.zeros(len(run.analysis)))
        for name, weight, blended in candidates:
            field = blend_sprog(prepared[weight], sprog, SPROG_WEIGHT) if blended else prepared[weight]
            members = PerturbedMembers(run, field, MODEL_MEMBERS, spec.step_minutes)
            probability = exceedance(
                members, THRESHOLDS, lead_minutes, float(np.mean(spacing)), MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE
            )
            scorers[name].update(probability, observed, valid)
    return {name: tuple(s.compute()["bss"][u]["mean"] for u in THRESHOLDS) for name, s in scorers.items()}


def main() -> None:
    parser = validation_parser(__doc__.splitlines()[0])
    parser.add_argument("--trend", nargs="+", type=float, metavar="WEIGHT", help="these trend weights alone")
    args = parser.parse_args()
    candidates = tuple((f"trend {w:g}", w, False) for w in args.trend) if args.trend else CANDIDATES
    print("| checkpoint | members | BSS ≥1 | BSS ≥5 |\n|---|---|---|---|")
    for checkpoint in args.checkpoints:
        for name, (bss1, bss5) in brier_skill(checkpoint, args.radar, args.every, candidates).items():
            print(f"| {checkpoint} | {name} | {bss1:.4f} | {bss5:.4f} |", flush=True)


if __name__ == "__main__":
    main()
