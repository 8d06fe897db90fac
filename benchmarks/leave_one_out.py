"""Leave-one-radar-out: train the Lagrangian model without a radar, score it on that radar.

For each held-out radar: train on every other shared source except the validation radar
(the recipe and its checkpoint were chosen there, never on the radar that is scored), then run
``nowcast-evaluate`` on the held-out radar (model, persistence, LK extrapolation, S-PROG) and the
Eulerian ConvLSTM on the same windows. Results go to ``OUT/<radar>/``; a Markdown table to stdout.

    python benchmarks/leave_one_out.py --shared ../shared/radar --out runs/loo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SOURCES = [
    "bom-melbourne-2018-06-16",
    "knmi-2010-08-26",
    "mch-2015-05-15",
    "mch-2017-01-31",
    "fmi-2017-05-09",
    "rmi-2021-07-04",
    "opera-2018-08-24",
    "mrms-2019-06-10",
]
#: held-out radar → the day it is scored on (both MeteoSwiss days are held out together)
FOLDS = {
    "bom": ["bom-melbourne-2018-06-16"],
    "knmi": ["knmi-2010-08-26"],
    "mch": ["mch-2015-05-15", "mch-2017-01-31"],
    "fmi": ["fmi-2017-05-09"],
}
VALIDATION = "rmi-2021-07-04"
TRAIN_SETTINGS = [
    "data=lagrangian_radar",
    "model=lagrangian",
    "trainer.loss=logcsi",
    "trainer.csi_weights=[0.3,1.0]",
    "trainer.lr=1e-3",
    "trainer.batch_size=8",
    "trainer.max_steps=3600",
    "trainer.average_from=1800",
    "trainer.max_minutes=30",
    "trainer.val_every=200",
    "model.motion_channels=true",  # round 21, chosen on RMI: benchmarks/results/motion_channels_round21.md
    "model.motion_correction=true",  # round 22, chosen on RMI: benchmarks/results/motion_correction_round22.md
]
#: The recipe's checkpoint: the last step's, which scored higher on the validation radar than the one
#: with the lowest validation loss for both models compared in round 18 (benchmarks/results/validation_round18.md);
#: since round 19 its weights are the mean over the run's second half (trainer.average_from, validation_round19.md).
CHECKPOINT = "last.pt"


def train(shared: Path, held_out: list[str], run_dir: Path, extra: list[str]) -> Path:
    """Train one fold; returns the recipe's checkpoint (:data:`CHECKPOINT`)."""
    paths = [str(shared / s) for s in SOURCES if s not in held_out and s != VALIDATION]
    cmd = [
        sys.executable, "-m", "nowcast.train", *TRAIN_SETTINGS,
        f"data.paths=[{','.join(paths)}]", f"data.val_paths=[{shared / VALIDATION}]",
        f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip
    checkpoint = run_dir / "checkpoints" / CHECKPOINT
    if not checkpoint.exists():
        subprocess.run(cmd, check=True)
    return checkpoint


def evaluate(radar: Path, checkpoint: Path | None, out: Path, methods: list[str], every: int) -> dict:
    """``nowcast-evaluate`` on one radar; returns its metrics document."""
    cmd = [sys.executable, "-m", "nowcast.evaluate", "--input", str(radar), "--output", str(out), "--quiet"]
    cmd += ["--minutes", "60", "--every", str(every), "--methods", *methods, "--overwrite"]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    if not (out / "metrics.json").exists():
        subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text())


def row(name: str, scores: dict) -> str:
    csi = [scores["csi"][t]["mean"] for t in ("0.5", "1.0", "2.0", "5.0", "10.0")]
    fss = scores["fss"]["1.0"]["17"]["mean"] if "fss" in scores else float("nan")
    cells = " | ".join(f"{v:.3f}" for v in [*csi, fss, scores["mse"]["mean"]])
    return f"| {name} | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/radar"))
    parser.add_argument("--out", type=Path, default=Path("runs/loo"))
    parser.add_argument("--every", type=int, default=3, help="start an evaluation window every N frames")
    parser.add_argument("--folds", nargs="+", default=list(FOLDS))
    parser.add_argument("--eulerian", type=Path, default=Path("nowcast/pretrained/radar_eulerian.pt"))
    parser.add_argument("--train-only", action="store_true", help="train the folds, score nothing")
    parser.add_argument("extra", nargs="*", help="more Hydra overrides for training")
    args = parser.parse_args()
    head = "| method | CSI ≥0.5 | CSI ≥1 | CSI ≥2 | CSI ≥5 | CSI ≥10 | FSS 1 mm/h, 17 px | MSE |"
    for fold in args.folds:
        held = FOLDS[fold]
        checkpoint = train(args.shared, held, args.out / fold / "train", args.extra)
        if args.train_only:
            print(checkpoint, flush=True)
            continue
        radar = args.shared / held[0]
        methods = ["model", "persistence", "extrapolation", "extrapolation_inflow", "sprog"]
        doc = evaluate(radar, checkpoint, args.out / fold / "eval", methods, args.every)
        eul = evaluate(radar, args.eulerian, args.out / fold / "eval_eulerian", ["model"], args.every)
        print(f"\n### {held[0]} ({doc['windows']['count']} windows, held out; validation on {VALIDATION})\n")
        print(head + "\n|" + "---|" * 8)
        names = {"model": "nowcast Lagrangian (not trained on this radar)", "persistence": "persistence",
                 "extrapolation": "LK extrapolation", "sprog": "S-PROG",
                 "extrapolation_inflow": "LK extrapolation with the model's inflow (not a baseline)"}  # fmt: skip
        for method, scores in doc["methods"].items():
            print(row(names[method], scores))
        print(row("Eulerian ConvLSTM (previous shipped model)", eul["methods"]["model"]), flush=True)


if __name__ == "__main__":
    main()
