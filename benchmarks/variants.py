r"""Compare the gate variants (ConvLSTM, peephole, coupled, ConvGRU) with one budget and seed.

Usage::

    python benchmarks/variants.py [--steps 500] [--radar-steps 1500] [--device auto] \\
        [--radar-train ../shared/radar/knmi-2010-08-26] [--radar-test ../shared/radar/bom-melbourne-2018-06-16] \\
        [--skip-radar] [--out-dir benchmarks/results]

Trains every ``model.cell`` on Moving-MNIST (and on the radar training set) with the same
number of steps, batch, learning rate and seed, then writes one table: parameters, training
samples/s, Moving-MNIST test MSE/MAE per frame and SSIM, and radar CSI at 1 and 5 mm/h by lead on
the test radar (never seen in training), with the copy-last-frame baseline in both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from nowcast.config import register_configs
from nowcast.evaluation import evaluate
from nowcast.forecast import Forecaster
from nowcast.io.radar import open_radar
from nowcast.models import CELLS
from nowcast.training import train

ROOT = Path(__file__).resolve().parents[1]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("config", overrides=overrides)


def _throughput(history: list[dict]) -> float:
    rates = [h["samples_per_s"] for h in history if "samples_per_s" in h]
    return float(np.median(rates)) if rates else float("nan")


def moving_mnist_rows(cells: list[str], steps: int, device: str, work: Path) -> list[dict]:
    """Train each cell on Moving-MNIST; one row per cell plus persistence."""
    rows = []
    persistence = None
    for cell in cells:
        cfg = _compose(
            [
                f"model.cell={cell}",
                f"trainer.max_steps={steps}",
                f"trainer.device={device}",
                f"trainer.val_every={steps}",
                "trainer.seed=0",
                "data.test_size=512",
            ]
        )
        metrics = train(cfg, work / f"mnist_{cell}")
        test = metrics["test"]
        from nowcast.checkpoint import load_checkpoint

        history = load_checkpoint(work / f"mnist_{cell}/checkpoints/last.pt")["history"]
        rows.append(
            {
                "cell": cell,
                "parameters": metrics["parameters"],
                "samples_per_s": _throughput(history),
                "mse_frame": test["model"]["mse_frame"]["mean"],
                "mae_frame": test["model"]["mae_frame"]["mean"],
                "ssim": test["model"]["ssim"]["mean"],
            }
        )
        persistence = test["persistence"]
    rows.append(
        {
            "cell": "copy last frame",
            "parameters": 0,
            "samples_per_s": float("nan"),
            "mse_frame": persistence["mse_frame"]["mean"],
            "mae_frame": persistence["mae_frame"]["mean"],
            "ssim": persistence["ssim"]["mean"],
        }
    )
    return rows


def radar_rows(cells, steps, device, train_path, test_path, work: Path) -> list[dict]:
    """Train each cell on the radar training set; score on the test radar."""
    test = open_radar(test_path)
    rows = []
    for cell in cells:
        cfg = _compose(
            [
                "data=radar",
                "model=radar",
                f"model.cell={cell}",
                f"data.paths=[{train_path}]",
                "data.strides=[1,2,3]",
                "trainer.loss=mse",
                f"trainer.max_steps={steps}",
                "trainer.batch_size=32",
                f"trainer.val_every={max(steps // 5, 1)}",
                f"trainer.device={device}",
                "trainer.seed=0",
                "trainer.num_workers=4",
                "data.samples_per_epoch=1000000",
            ]
        )
        metrics = train(cfg, work / f"radar_{cell}")
        from nowcast.checkpoint import load_checkpoint

        history = load_checkpoint(work / f"radar_{cell}/checkpoints/last.pt")["history"]
        forecaster = Forecaster.from_checkpoint(work / f"radar_{cell}/checkpoints/best.pt", device=device)
        result = evaluate(
            test,
            forecaster,
            60.0,
            every=2,
            methods=["model", "persistence"],
            thresholds=[1.0, 5.0],
            fss_scales=[],
            progress=False,
        )
        rows.append(_radar_row(cell, metrics["parameters"], _throughput(history), result.scores["model"]))
    rows.append(_radar_row("copy last frame", 0, float("nan"), result.scores["persistence"]))
    return rows


def _radar_row(name, params, sps, scores) -> dict:
    return {
        "cell": name,
        "parameters": params,
        "samples_per_s": sps,
        "csi1_by_lead": scores["csi"][1.0]["by_lead"],
        "csi5_by_lead": scores["csi"][5.0]["by_lead"],
        "csi1": scores["csi"][1.0]["mean"],
        "csi5": scores["csi"][5.0]["mean"],
    }


def markdown(mnist: list[dict], radar: list[dict], args) -> str:
    """The comparison as Markdown tables."""
    lines = [
        f"Moving-MNIST: {args.steps} steps, batch 16, lr 3e-3, seed 0, bf16, 512 test sequences.",
        "",
        "| cell | parameters | train samples/s | MSE/frame | MAE/frame | SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for r in mnist:
        lines.append(
            f"| {r['cell']} | {r['parameters']:,} | {r['samples_per_s']:.1f} | {r['mse_frame']:.1f} | "
            f"{r['mae_frame']:.1f} | {r['ssim']:.3f} |"
        )
    if radar:
        lines += [
            "",
            f"Radar: trained {args.radar_steps} steps (batch 32) on {Path(args.radar_train).name}, "
            f"scored on {Path(args.radar_test).name} (unseen radar), 60 min ahead.",
            "",
            "| cell | parameters | train samples/s | CSI ≥1 mm/h (mean; by lead) | CSI ≥5 mm/h (mean; by lead) |",
            "|---|---|---|---|---|",
        ]
        for r in radar:
            by1 = " ".join(f"{v:.2f}" for v in r["csi1_by_lead"])
            by5 = " ".join(f"{v:.2f}" for v in r["csi5_by_lead"])
            lines.append(
                f"| {r['cell']} | {r['parameters']:,} | {r['samples_per_s']:.1f} | "
                f"{r['csi1']:.3f}; {by1} | {r['csi5']:.3f}; {by5} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="Moving-MNIST optimiser steps per variant")
    parser.add_argument("--radar-steps", type=int, default=1500, help="radar optimiser steps per variant")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--radar-train", default=str(ROOT.parent / "shared/radar/knmi-2010-08-26"))
    parser.add_argument("--radar-test", default=str(ROOT.parent / "shared/radar/bom-melbourne-2018-06-16"))
    parser.add_argument("--skip-radar", action="store_true")
    parser.add_argument("--cells", nargs="+", default=sorted(CELLS))
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks/results"))
    args = parser.parse_args(argv)
    register_configs()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        mnist = moving_mnist_rows(args.cells, args.steps, args.device, Path(tmp))
        radar = (
            []
            if args.skip_radar
            else radar_rows(args.cells, args.radar_steps, args.device, args.radar_train, args.radar_test, Path(tmp))
        )
    table = markdown(mnist, radar, args)
    (out / "variants.md").write_text(table)
    (out / "variants.json").write_text(json.dumps({"moving_mnist": mnist, "radar": radar}, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
