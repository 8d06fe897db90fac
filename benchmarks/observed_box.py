"""Seconds of a Lagrangian forecast on the box around the observed pixels against the whole grid.

    python benchmarks/observed_box.py [--radar ../shared/radar/knmi-2010-08-26] [--first 40] [--rounds 3]

On one whole window of a radar (5 frames from file ``--first``; the KNMI composite by default, whose
radars see a quarter of the grid), times in one process, alternating (box, whole, box, whole…,
after one untimed call of each): the 12-frame forecast, and the probabilities as ``evaluate``
makes them (20 motion-perturbed members, ``P(R ≥ 1)`` and ``P(R ≥ 5 mm/h)``). "Whole" is the
forecast with :func:`nowcast.forecast.observed_box` switched off. Prints the box's share of the grid,
the median seconds of each, and how much the two forecasts differ on the observed pixels.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import nowcast.forecast as forecast_module
from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar
from nowcast.probability import MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE, exceedance
from nowcast.regrid import grid_spacing_km

LEADS = 12
MEMBERS = 20
#: The forecast's own box function, set back for the "box" calls and at the end.
box_function = forecast_module.observed_box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--radar", type=Path, default=Path("../shared/radar/knmi-2010-08-26"))
    parser.add_argument("--first", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = sorted(p for p in args.radar.iterdir() if not p.name.startswith("."))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = open_radar(files[args.first : args.first + 5])
    rates = ds["rainfall_rate"].values.astype(np.float32)
    spacing = grid_spacing_km(ds)
    step = float(np.diff(ds["time"].values).mean() / np.timedelta64(1, "m"))
    forecaster = Forecaster.from_checkpoint(precision="32")
    box = forecast_module.observed_box(rates, forecaster.model.config.patch_size)
    share = 1.0 if box is None else (box[0].stop - box[0].start) * (box[1].stop - box[1].start) / rates[0].size
    print(f"{args.radar.name}: {rates.shape[1:]} pixels, step {step:g} min, box {box}, {share:.2f} of the grid")
    print(f"CPU {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, fp32")
    whole_grid = lambda r, *args: None  # noqa: E731

    def deterministic() -> np.ndarray:
        return forecaster.forecast(rates, LEADS, step, spacing)

    def probabilities() -> np.ndarray:
        _, fields = forecaster.forecast_for_probabilities(rates, LEADS, step, spacing, members=MEMBERS)
        lead = step * np.arange(1, LEADS + 1)
        return exceedance(fields, (1.0, 5.0), lead, float(np.mean(spacing)), MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE)

    seconds: dict[str, list[float]] = {}
    outputs: dict[str, np.ndarray] = {}
    for round_ in range(args.rounds + 1):
        for where in ("box", "whole"):
            forecast_module.observed_box = box_function if where == "box" else whole_grid
            for name, work in (("forecast", deterministic), ("probabilities", probabilities)):
                start = time.perf_counter()
                outputs[f"{name} {where}"] = work()
                if round_:
                    seconds.setdefault(f"{name} {where}", []).append(time.perf_counter() - start)
    forecast_module.observed_box = box_function
    for name in ("forecast", "probabilities"):
        boxed, whole = (statistics.median(seconds[f"{name} {w}"]) for w in ("box", "whole"))
        print(f"{name}: box {boxed:.2f} s, whole grid {whole:.2f} s, {whole / boxed:.2f}x")
    a, b = outputs["forecast box"], outputs["forecast whole"]
    valid = np.isfinite(b)
    assert np.array_equal(np.isfinite(a), valid)
    difference = np.abs(a - b)[valid]
    print(
        f"forecast difference on observed pixels: 99th percentile {np.quantile(difference, 0.99):.4f} mm/h, "
        f"max {difference.max():.3f} mm/h; pixels on other sides of 1 mm/h: "
        f"{np.mean((a[valid] >= 1) != (b[valid] >= 1)):.5f}"
    )
    p, q = outputs["probabilities box"], outputs["probabilities whole"]
    print(f"probabilities difference: max {np.nanmax(np.abs(p - q)):.3f}, mean {np.nanmean(np.abs(p - q)):.5f}")


if __name__ == "__main__":
    main()
