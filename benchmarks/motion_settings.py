"""Lucas–Kanade settings, scored by LK extrapolation on radars no reported figure uses.

The motion that every Lagrangian forecast, every training window and every baseline of nowcast
rests on is pysteps' LK with nowcast's defaults (:mod:`nowcast.motion`: declustering scale 20 px,
20 IDW neighbours, the last 3 frames, pysteps' 50 px tracking window). This script changes one
setting at a time (or a pair), extrapolates the last frame along the motion of each window with
:func:`nowcast.baselines.extrapolation`, and scores 60 min of it.

Protocol: each source read as training reads it (:func:`nowcast.data.lagrangian.source_sequences`:
the 1 km grid, a continental mosaic cut into boxes where it rains), every window of 5 frames in and
60 min out, CSI at 1 and 5 mm/h from counts summed over windows and leads (observed pixels only).
Rule per source: CSI ≥1 / the shipped setting's + CSI ≥5 / the shipped setting's (2.000 for the
shipped setting itself). Sources: RMI (the validation radar), MeteoSwiss 2017, OPERA and MRMS;
never a left-out radar of ``leave_one_out.py``.

    python benchmarks/motion_settings.py --shared ../shared/radar
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from nowcast import motion
from nowcast._quiet import import_pysteps
from nowcast.baselines import extrapolation, motion_field
from nowcast.config import register_configs
from nowcast.data.lagrangian import source_sequences
from nowcast.metrics import ContingencyTable

SOURCES = ["rmi-2021-07-04", "mch-2017-01-31", "opera-2018-08-24", "mrms-2019-06-10"]
THRESHOLDS = (1.0, 5.0)
T_IN = 5
#: name → changed settings: ``decluster`` (px), ``idw`` (neighbours), ``frames``, ``winsize`` (px)
VARIANTS = {
    "shipped (decluster 20, IDW 20, 3 frames, window 50)": {},
    "decluster 40": {"decluster": 40},
    "decluster 10, IDW 10": {"decluster": 10, "idw": 10},
    "IDW 50": {"idw": 50},
    "5 frames": {"frames": 5},
    "decluster 10, IDW 10, 4 frames": {"decluster": 10, "idw": 10, "frames": 4},
    "tracking window 80": {"winsize": 80},
}


@contextlib.contextmanager
def settings(decluster: int = 20, idw: int = 20, winsize: int = 50, **_):
    """Apply one variant's motion settings to :mod:`nowcast.motion` (and pysteps' LK) for the block."""
    pysteps = import_pysteps()
    original = (motion.DECLUSTER_SCALE, motion.IDW_NEIGHBOURS, pysteps.motion.get_method)

    def get_method(name):
        method = original[2](name)
        if name != "LK" or winsize == 50:
            return method
        return lambda *args, **kwargs: method(*args, lk_kwargs={"winsize": (winsize, winsize)}, **kwargs)

    motion.DECLUSTER_SCALE, motion.IDW_NEIGHBOURS, pysteps.motion.get_method = decluster, idw, get_method
    try:
        yield
    finally:
        motion.DECLUSTER_SCALE, motion.IDW_NEIGHBOURS, pysteps.motion.get_method = original


def score_source(path: Path, cfg, variants: dict[str, dict]) -> dict[str, dict]:
    """CSI ≥1 and ≥5 of LK extrapolation per variant on every window of one source, and the seconds of motion."""
    tables = {name: ContingencyTable(THRESHOLDS, 1) for name in variants}  # one table over every lead
    seconds = {name: 0.0 for name in variants}
    windows = 0
    for rates, step in source_sequences(str(path), cfg):
        n_out = int(round(60 / step))
        for start in range(0, len(rates) - T_IN - n_out + 1):
            inputs, observed = rates[start : start + T_IN], rates[start + T_IN : start + T_IN + n_out]
            windows += 1
            for name, variant in variants.items():
                with settings(**variant):
                    began = time.perf_counter()
                    velocity = motion_field(inputs, frames=variant.get("frames", 3))
                    seconds[name] += time.perf_counter() - began
                forecast = extrapolation(inputs, n_out, velocity)[:, None]  # leads as the batch: (n_out, 1, H, W)
                tables[name].update(forecast, observed[:, None], np.isfinite(forecast))
    out = {}
    for name in variants:
        csi = tables[name].compute()["csi"][:, 0]
        out[name] = {"csi": [float(c) for c in csi], "motion_seconds": seconds[name] / max(windows, 1)}
    out["windows"] = windows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/radar"))
    parser.add_argument("--sources", nargs="+", default=SOURCES)
    parser.add_argument("--json", type=Path, help="write the scores here")
    args = parser.parse_args()
    register_configs()
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose("config", overrides=["data=lagrangian_radar"]).data
    results = {source: score_source(args.shared / source, cfg, VARIANTS) for source in args.sources}
    shipped = next(iter(VARIANTS))
    print("| settings | " + " | ".join(f"{s} (CSI ≥1, ≥5, rule)" for s in args.sources) + " | sum of the rule |")
    print("|---|" + "---|" * (len(args.sources) + 1))
    for name in VARIANTS:
        cells, total = [], 0.0
        for source in args.sources:
            csi, base = results[source][name]["csi"], results[source][shipped]["csi"]
            rule = csi[0] / base[0] + csi[1] / base[1]
            total += rule
            cells.append(f"{csi[0]:.4f}, {csi[1]:.4f}, {rule:.4f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {total:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
