"""Per-frame Moving-MNIST test scores of a checkpoint, batched on the GPU (or CPU).

Usage::

    python benchmarks/mnist_test.py RUN/checkpoints/best.pt [--sequences 10000] [--test-file mnist_test_seq.npy]
                                    [--device auto] [--batch 500] [--json OUT.json]

The test set is the one training scores (:func:`nowcast.data.build_data` with the checkpoint's
own ``data`` config): ``--sequences`` sequences made from the test digits, which share no image
with the training digits, or the standard ``mnist_test_seq.npy`` with ``--test-file``. Scores
follow the usual Moving-MNIST convention (Srivastava et al. 2015; OpenSTL): pixels in [0, 1],
squared (absolute) error summed over the 64 × 64 pixels of a frame, averaged over frames and
sequences, so ``mse`` is "MSE per frame". The trainer's own test pass (``metrics.json``,
``mse_frame``) scores the same way one window at a time; this script batches the network, so it
scores 10,000 sequences in seconds. Copy-last-frame is scored beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from nowcast.checkpoint import load_checkpoint
from nowcast.data import build_data
from nowcast.forecast import build_model, resolve_device, run_model
from nowcast.precision import resolve_precision


@torch.no_grad()
def score(model, test, t_in: int, t_out: int, device, precision: str, batch: int) -> dict[str, list[float]]:
    """Per-lead MSE and MAE per frame (sums over pixels) of ``model`` and of copy-last-frame, ``(t_out,)`` each."""
    sums = {name: np.zeros(t_out) for name in ("mse", "mae", "copy_last_mse", "copy_last_mae")}
    count = 0
    for first in range(0, len(test), batch):
        frames = torch.stack([test[k]["frames"] for k in range(first, min(first + batch, len(test)))]).to(device)
        inputs, truth = frames[:, :t_in], frames[:, t_in:]  # (B, T, 1, H, W)
        forecast = run_model(model, inputs, t_out, None, precision).clamp(0.0, 1.0)
        last = inputs[:, -1:].expand_as(truth)
        for prefix, fc in (("", forecast), ("copy_last_", last)):
            error = fc - truth
            sums[prefix + "mse"] += error.square().sum(dim=(2, 3, 4)).sum(dim=0).double().cpu().numpy()
            sums[prefix + "mae"] += error.abs().sum(dim=(2, 3, 4)).sum(dim=0).double().cpu().numpy()
        count += frames.shape[0]
    return {name: (value / count).tolist() for name, value in sums.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sequences", type=int, default=10000, help="test sequences made from test digits")
    parser.add_argument("--test-file", default=None, help="the standard mnist_test_seq.npy instead")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "32", "bf16"])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", default=None, help="write the scores here")
    args = parser.parse_args(argv)
    payload = load_checkpoint(args.checkpoint)
    data_cfg = OmegaConf.create(payload["config"]["data"])
    if data_cfg.name != "moving_mnist":
        print(f"{args.checkpoint}: trained on {data_cfg.name}, not Moving-MNIST", file=sys.stderr)
        return 2
    data_cfg.test_size = args.sequences
    data_cfg.test_file = args.test_file
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    model = build_model(payload, args.checkpoint).to(device).eval()
    test = build_data(data_cfg).test
    start = time.perf_counter()
    scores = score(model, test, data_cfg.t_in, data_cfg.t_out, device, precision.name, args.batch)
    result = {
        "checkpoint": args.checkpoint,
        "sequences": len(test),
        "test_file": args.test_file,
        "precision": precision.name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "seconds": time.perf_counter() - start,
        "mse_per_frame": float(np.mean(scores["mse"])),
        "mae_per_frame": float(np.mean(scores["mae"])),
        "copy_last_mse_per_frame": float(np.mean(scores["copy_last_mse"])),
        "by_lead": scores,
    }
    print(
        f"{len(test)} test sequences: MSE/frame {result['mse_per_frame']:.2f}, MAE/frame {result['mae_per_frame']:.2f} "
        f"(copy last frame: MSE {result['copy_last_mse_per_frame']:.2f}); {result['seconds']:.1f} s, {precision.reason}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
