"""The members' neighbourhood growth, threshold by threshold (issue 15), scored on the validation radar.

Since round 12 every threshold's probabilities average each member over a neighbourhood whose
half-width grows by :data:`~nowcast.probability.MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE` (0.5 km per
minute of lead), a growth chosen on the two thresholds' summed Brier skill. Heavy rain is placed less
predictably than light rain, so its best neighbourhood may be wider. For each checkpoint the members
are counted once per window (:class:`CountedMembers`) and every growth is scored on the same counts::

    python benchmarks/member_neighbourhood.py runs/ctrl/{bom,knmi,mch,fmi}/train/checkpoints/last.pt

Round 28's rule, written before any growth was scored: ``results/probabilistic/member_neighbourhood_round28.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from validation_cli import validation_parser

from nowcast.evaluation import common_mask, iter_windows, window_spec, window_starts
from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar
from nowcast.probability import MODEL_MEMBERS, CountsExceeding, exceedance
from nowcast.probscores import ProbabilisticScorer
from nowcast.regrid import grid_spacing_km

THRESHOLDS = (1.0, 5.0)
GROWTHS_KM_PER_MINUTE = (0.3, 0.5, 0.7, 1.0)


class CountedMembers:
    """Members counted once at :data:`THRESHOLDS`, so that every neighbourhood reuses the counts."""

    def __init__(self, members: CountsExceeding, thresholds: Sequence[float]) -> None:
        self.count = len(members)
        self.thresholds = tuple(thresholds)
        self.counts = members.exceeding(thresholds)

    def __len__(self) -> int:
        return self.count

    def exceeding(self, thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """The stored ``(U, T, H, W)`` counts and ``(T, H, W)`` no-data (only for the thresholds counted)."""
        if tuple(thresholds) != self.thresholds:
            raise ValueError(f"counted at {self.thresholds}, asked for {tuple(thresholds)}")
        return self.counts


def scores(checkpoint: Path, radar: Path, every: int) -> dict[float, dict]:
    """Growth (km/min) → the probabilistic scores of the members on ``radar`` (``ProbabilisticScorer.compute``)."""
    ds = open_radar(radar, skip_bad=True)
    forecaster = Forecaster.from_checkpoint(checkpoint, precision="32")
    spec, sequences = window_spec(ds, 60.0, None, forecaster.t_in)
    spacing_km = grid_spacing_km(ds)
    spacing = float(np.mean(spacing_km))
    lead_minutes = spec.step_minutes * np.arange(1, spec.n_out + 1)
    scorers = {growth: ProbabilisticScorer(THRESHOLDS, spec.n_out) for growth in GROWTHS_KM_PER_MINUTE}
    for inputs, observed, _ in iter_windows(sequences, spec, window_starts(sequences, spec, every)):
        out, members = forecaster.forecast_for_probabilities(
            inputs, spec.n_out, spec.step_minutes, spacing_km, members=MODEL_MEMBERS
        )
        valid = common_mask(observed, [out])
        counted = CountedMembers(members, THRESHOLDS)
        for growth, scorer in scorers.items():
            scorer.update(exceedance(counted, THRESHOLDS, lead_minutes, spacing, growth), observed, valid)
    return {growth: scorer.compute() for growth, scorer in scorers.items()}


def main() -> None:
    args = validation_parser(__doc__.splitlines()[0]).parse_args()
    print("| checkpoint | growth (km/min) | BSS ≥1 | BSS ≥5 | reliability ≥1 | reliability ≥5 |")
    print("|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        for growth, result in scores(checkpoint, args.radar, args.every).items():
            bss = [result["bss"][u]["mean"] for u in THRESHOLDS]
            rel = [result["reliability"][u]["term"] for u in THRESHOLDS]
            print(
                f"| {checkpoint} | {growth:g} | {bss[0]:.4f} | {bss[1]:.4f} | {rel[0]:.5f} | {rel[1]:.5f} |", flush=True
            )


if __name__ == "__main__":
    main()
