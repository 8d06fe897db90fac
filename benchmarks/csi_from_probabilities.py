"""Issue 12, on the validation radar only: the members' probabilities as a deterministic CSI forecast.

CSI rewards a forecast whose rain area is somewhat larger than observed where the position is
uncertain: a pixel is worth forecasting wet when its chance of rain exceeds about CSI / (1 + CSI).
This diagnostic compares, lead by lead on the validation radar, the CSI and frequency bias of the
deterministic forecast with those of the event "P(R ≥ u) ≥ p" from the network's 20 motion-perturbed
members (their neighbourhood included) for several p. Contingency tables are summed over windows;
the means are over leads::

    python benchmarks/csi_from_probabilities.py nowcast/pretrained/radar_lagrangian.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from validation_cli import VALIDATION_RADAR

from nowcast.evaluation import common_mask, iter_windows, window_spec, window_starts
from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar
from nowcast.metrics import ContingencyTable
from nowcast.probability import MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE, MODEL_MEMBERS, exceedance
from nowcast.regrid import grid_spacing_km

THRESHOLDS = (1.0, 5.0)
PROBABILITY_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def contingency(checkpoint: Path, radar: Path, every: int) -> dict[str, dict[str, np.ndarray]]:
    """Threshold (mm/h) → the deterministic forecast's and each level's ``ContingencyTable.compute()`` on ``radar``.

    ``"deterministic"`` holds ``(U, n_out)`` scores at :data:`THRESHOLDS`; ``"probability ≥ u"`` holds
    ``(levels, n_out)`` scores of the events P(R ≥ u) ≥ p, one row per :data:`PROBABILITY_LEVELS`.
    """
    ds = open_radar(radar, skip_bad=True)
    forecaster = Forecaster.from_checkpoint(checkpoint, precision="32")
    spec, sequences = window_spec(ds, 60.0, None, forecaster.t_in)
    spacing = grid_spacing_km(ds)
    lead_minutes = spec.step_minutes * np.arange(1, spec.n_out + 1)
    deterministic = ContingencyTable(THRESHOLDS, spec.n_out)
    by_level = [ContingencyTable(PROBABILITY_LEVELS, spec.n_out) for _ in THRESHOLDS]
    for inputs, observed, _ in iter_windows(sequences, spec, window_starts(sequences, spec, every)):
        out, members = forecaster.forecast_for_probabilities(
            inputs, spec.n_out, spec.step_minutes, spacing, members=MODEL_MEMBERS
        )
        probability = exceedance(
            members, THRESHOLDS, lead_minutes, float(np.mean(spacing)), MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE
        )
        valid = common_mask(observed, [out]) & np.isfinite(probability[0])
        deterministic.update(np.nan_to_num(out)[None], observed[None], valid[None])
        for k, threshold in enumerate(THRESHOLDS):
            event = np.where(np.isfinite(observed), observed >= threshold, np.nan)  # 1 or 0: ≥ every level p
            by_level[k].update(np.nan_to_num(probability[k])[None], event[None], valid[None])
    scores = {"deterministic": deterministic.compute()}
    scores |= {f"probability ≥ {u:g}": table.compute() for u, table in zip(THRESHOLDS, by_level, strict=True)}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--radar", type=Path, default=VALIDATION_RADAR)
    parser.add_argument("--every", type=int, default=3)
    args = parser.parse_args()
    scores = contingency(args.checkpoint, args.radar, args.every)
    print("| threshold (mm/h) | forecast | mean CSI | mean bias | CSI, first and last lead | bias, last lead |")
    print("|---|---|---|---|---|---|")
    for k, threshold in enumerate(THRESHOLDS):
        rows = [("deterministic", scores["deterministic"], k)]
        rows += [(f"P ≥ {p:g}", scores[f"probability ≥ {threshold:g}"], v) for v, p in enumerate(PROBABILITY_LEVELS)]
        for name, table, row in rows:
            csi, bias = table["csi"][row], table["bias"][row]
            print(
                f"| {threshold:g} | {name} | {csi.mean():.4f} | {bias.mean():.2f} | "
                f"{csi[0]:.3f}, {csi[-1]:.3f} | {bias[-1]:.2f} |"
            )


if __name__ == "__main__":
    main()
