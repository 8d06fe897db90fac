"""Probe for issue 14: a step-by-step unroll of our paper net against the common-style reference.

    python benchmarks/step_major_probe.py [--rounds 4]

Our ``EncoderForecaster`` unrolls layer by layer; the reference in ``run.py`` runs step by step
(every layer at step t before any layer at t + 1). This script gives our network, with its own
cells and weights, a step-by-step forward written here, outside the model, and times one fp32
training step (forward, backward, Adam) of it against the reference and against the model's own
forward, in alternating blocks in one process (the paper's Moving-MNIST net, batch 8, NCHW).

On the 2-core AVX2 CPU it ran 1.02–1.07× the reference in four runs, while the model's own
unrolls ran 0.90–0.94×. The same step-by-step order written into the model ran 0.90×, with each
convolution's backward pass slower (86 against 55 ms per call). The cause was not the order: the
model turned its activations channels-last whenever its 1×1 output weight said so, and a 1×1
weight is contiguous in both formats, so an NCHW model ran channels-last (this probe skips that
line). With that fixed (``EncoderForecaster.channels_last``), the model's own split unroll in NCHW
ran 0.99× the reference, and channels-last 0.81–0.85×. The probe checks that its forward equals
the model's before timing.
"""

from __future__ import annotations

import argparse
import types

import torch
import torch.nn.functional as F
from run import CASES, ReferenceModel, alternating, training_stepper

from nowcast.models import EncoderForecaster


def step_major_forward(self: EncoderForecaster, frames: torch.Tensor, n_out: int, step_minutes=None) -> torch.Tensor:
    """``(B, T_in, 1, H, W) -> (B, n_out, 1, H, W)``, every layer at step t before any at t + 1.

    For a model without step channel and with the ``frames`` head (the paper's net).
    """
    b, t_in = frames.shape[:2]
    p = self.config.patch_size
    x = F.pixel_unshuffle(frames.flatten(0, 1), p).unflatten(0, (b, t_in))  # (B, T_in, C·p², h', w')
    weights = [cell.fused_weight() for cell in self.encoder]
    states = [None] * len(self.encoder)
    for t in range(t_in):
        layer_input = x[:, t]
        for i, cell in enumerate(self.encoder):
            h = states[i][0] if states[i] is not None else None
            states[i] = cell.step(cell.fused_gates(layer_input, h, weights[i]), states[i])
            layer_input = states[i][0]
    weights = [cell.fused_weight() if cell.input_conv is not None else None for cell in self.forecaster]
    outputs = []
    for _ in range(n_out):
        layer_input, hidden = None, []
        for i, cell in enumerate(self.forecaster):
            if layer_input is None:  # the first forecaster layer has no input
                states[i] = cell(None, states[i])
            else:
                states[i] = cell.step(cell.fused_gates(layer_input, states[i][0], weights[i]), states[i])
            layer_input = states[i][0]
            hidden.append(layer_input)
        outputs.append(F.pixel_shuffle(self.output_conv(torch.cat(hidden, 1)), p))
    return self.activation(torch.stack(outputs, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    case, device = CASES[0], torch.device("cpu")
    torch.manual_seed(0)
    probe = EncoderForecaster(case.config)
    own = EncoderForecaster(case.config)
    own.load_state_dict(probe.state_dict())
    own.unroll = "fused"
    probe.forward = types.MethodType(step_major_forward, probe)
    with torch.no_grad():
        frames = torch.rand(2, 10, 1, 64, 64)
        difference = float((probe(frames[:, :5], 5) - own(frames[:, :5], 5)).abs().max())
    print(f"probe against the model's forward: max difference {difference:.2e}")
    steppers = {
        "reference (NCHW)": training_stepper(ReferenceModel(case.config), case, device, "32", False)[0],
        "ours, fused, layer by layer": training_stepper(own, case, device, "32", False)[0],
        "ours, step by step (probe)": training_stepper(probe, case, device, "32", False)[0],
    }
    result = alternating(steppers, case, device, rounds=args.rounds, block=1)
    for name, value in result.items():
        print(f"{name:30s} {value:.3f} samples/s  {value / result['reference (NCHW)']:.3f}x the reference")


if __name__ == "__main__":
    main()
