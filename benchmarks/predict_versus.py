"""Forecast seconds of two versions of nowcast, in alternating processes on the same machine.

    python benchmarks/predict_versus.py OLD_TREE NEW_TREE [--rounds 4] [--shared ../shared/radar]
    python benchmarks/predict_versus.py OLD_TREE NEW_TREE --members 20   # probabilities

``OLD_TREE`` and ``NEW_TREE`` are checkouts (e.g. ``git worktree add /tmp/old COMMIT``). Each round
starts one process per tree, old then new; each process loads the shipped model of
``NEW_TREE`` (the same weights for both) and times ``Forecaster.forecast`` (10 frames) on the
512 × 512 real-radar crops of :data:`predict_speed.REAL_CROPS` (median of 3 after one untimed
call). With ``--members`` it times the probabilities instead: the forecast with that many
motion-perturbed members and ``P(R ≥ 1)`` and ``P(R ≥ 5 mm/h)`` from them, as ``evaluate`` makes
them, on the same crops and on the whole Melbourne radar (512 × 512 at 500 m, 6-minute steps).
Prints each round's seconds and, per crop, the median over rounds and the ratio old / new.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from predict_speed import REAL_CROPS

#: Run inside each tree's process: crops are read and saved once by this script.
CHILD = """
import json, statistics, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
tree, checkpoint, members, crops = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
sys.path.insert(0, tree)
import nowcast
assert nowcast.__file__.startswith(tree), nowcast.__file__
from nowcast.forecast import Forecaster
from nowcast.probability import MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE, exceedance
forecaster = Forecaster.from_checkpoint(checkpoint)

def run(rates, spacing, step):
    if not members:
        return forecaster.forecast(rates, 10, step, (spacing, spacing))
    _, fields = forecaster.forecast_for_probabilities(rates, 10, step, (spacing, spacing), members=members)
    lead = step * np.arange(1, 11)
    return exceedance(fields, (1.0, 5.0), lead, spacing, MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE)

out = {}
for path, (spacing, step) in crops.items():
    rates = np.load(path)
    run(rates, spacing, step)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run(rates, spacing, step)
        times.append(time.perf_counter() - start)
    out[path] = statistics.median(times)
print(json.dumps(out))
"""
#: The whole Melbourne radar (500 m, 6 minutes; first of five frames), timed for probabilities only.
MELBOURNE = ("bom-melbourne-2018-06-16", 40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--shared", type=Path, default=Path("../shared/radar"))
    parser.add_argument("--members", type=int, default=0, help="time probabilities from this many members")
    args = parser.parse_args()
    import numpy as np

    from nowcast.io.radar import open_radar
    from nowcast.regrid import grid_spacing_km

    checkpoint = args.new.resolve() / "nowcast" / "pretrained" / "radar_lagrangian.pt"
    seconds: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory() as tmp:
        crops, spec = {}, {}
        chosen = {**REAL_CROPS, MELBOURNE[0]: (MELBOURNE[1], 0, 0)} if args.members else REAL_CROPS
        for folder, (first, top, left) in chosen.items():
            files = sorted(p for p in (args.shared / folder).iterdir() if not p.name.startswith("."))
            ds = open_radar(files[first : first + 5])
            crops[folder] = str(Path(tmp) / f"{folder}.npy")
            np.save(crops[folder], ds["rainfall_rate"].values[:, top : top + 512, left : left + 512].astype(np.float32))
            spacing = float(np.mean(grid_spacing_km(ds)))
            spec[crops[folder]] = (spacing, float(ds["time"].diff("time").median() / np.timedelta64(1, "m")))
        for round_ in range(args.rounds):
            for label, tree in (("old", args.old), ("new", args.new)):
                cmd = [sys.executable, "-c", CHILD, str(tree.resolve()), str(checkpoint), str(args.members)]
                cmd.append(json.dumps(spec))
                result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                for folder, path in crops.items():
                    seconds[label].setdefault(folder, []).append(result[path])
                print(f"round {round_ + 1} {label}: " + ", ".join(f"{f} {result[p]:.3f} s" for f, p in crops.items()))
    what = f"probabilities from {args.members} members" if args.members else "forecast"
    print(f"\n| radar crop (512 × 512, 10 frames; {what}) | old (s) | new (s) | old / new |\n|---|---|---|---|")
    for folder in crops:
        old, new = statistics.median(seconds["old"][folder]), statistics.median(seconds["new"][folder])
        print(f"| {folder} | {old:.2f} | {new:.2f} | {old / new:.2f}× |")


if __name__ == "__main__":
    main()
