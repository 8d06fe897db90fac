"""Choose how the recurrent layers are unrolled, by timing both ways on this machine.

The split unroll (input convolution batched over time, hidden convolution per step) does fewer
FLOPs; the fused one (one convolution over ``cat([x_t, h])`` per step) runs fewer, larger
convolutions. Which is faster depends on the hardware and the shapes: on a 2-core AVX2 CPU in fp32
the fused one won for the paper's Moving-MNIST net and the split one for the radar net in
training, and the fused one for the Lagrangian radar net in inference (0.56 s against 0.73 s for
a 10-frame forecast of a 512 × 512 frame). Both
give the same forecast up to rounding (tested).
"""

from __future__ import annotations

import statistics
import time

import torch

from nowcast.forecast import run_model
from nowcast.models.encoder_forecaster import UNROLLS, EncoderForecaster

#: ``trainer.unroll`` values: ``auto`` times both on the first batch.
UNROLL_CHOICES = ("auto", *UNROLLS)


def choose_unroll(
    model: EncoderForecaster,
    frames: torch.Tensor,
    n_out: int,
    step_minutes: torch.Tensor | None,
    precision: str,
    reps: int = 2,
    training: bool = True,
    motion: torch.Tensor | None = None,
) -> tuple[str, dict[str, float]]:
    """The faster unroll for one training step (or, ``training=False``, one forecast) of ``model``.

    Times a forward and backward pass (a forward pass without gradients) of each unroll on
    ``frames`` ``(B, T_in, C, H, W)``, alternating (after one untimed round), and returns the name
    with the lower median and the median seconds of each. Gradients are cleared and the global RNG
    state is left as it was. A model without fusable layers gets ``split``.
    """
    fusable = any(cell.fusable and cell.input_conv is not None for cell in model.encoder)
    if not fusable:
        return "split", {}
    original = model.unroll
    seconds: dict[str, list[float]] = {name: [] for name in UNROLLS}
    with torch.random.fork_rng(devices=[]):
        for round_ in range(reps + 1):
            for name in UNROLLS:
                model.unroll = name
                _sync(frames.device)
                start = time.perf_counter()
                if training:
                    run_model(model, frames, n_out, step_minutes, precision, motion=motion).square().mean().backward()
                else:
                    with torch.no_grad():
                        run_model(model, frames, n_out, step_minutes, precision, motion=motion)
                _sync(frames.device)
                if round_:
                    seconds[name].append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    model.unroll = original
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    return min(medians, key=medians.get), medians


def apply_memory_format(model: torch.nn.Module, name: str) -> None:
    """Put ``model``'s weights in memory format ``name`` (``channels_last``/``contiguous``; empty: as they are)."""
    if name:
        model.to(memory_format=torch.channels_last if name == "channels_last" else torch.contiguous_format)


def candidate_layouts(device: torch.device, precision: str, own: str) -> list[str]:
    """The memory formats ``auto`` times: both on a CPU in fp32, where either can win, else ``own``.

    On a 2-core AVX2 CPU in fp32 channels-last trained the paper's Moving-MNIST net at 0.81× NCHW's
    speed and the radar net at 1.17×; elsewhere the model keeps its own format (``own``).
    """
    if device.type == "cpu" and precision == "32":
        return ["contiguous", "channels_last"]
    return [own]


def choose_unroll_and_layout(
    model: EncoderForecaster,
    frames: torch.Tensor,
    n_out: int,
    step_minutes: torch.Tensor | None,
    precision: str,
    layouts: list[str],
    training: bool = True,
    motion: torch.Tensor | None = None,
) -> tuple[str, str, dict[str, float]]:
    """The fastest pair of unroll and memory format among ``layouts``: ``(unroll, layout, seconds)``.

    Puts ``model`` in each layout in turn and times both unrolls there (:func:`choose_unroll`);
    ``seconds`` is keyed ``"unroll layout"``. A model without fusable layers is timed in no layout:
    ``seconds`` is then empty and the layout the first of ``layouts``. ``model`` is left in the last
    layout timed; the caller applies the one chosen.
    """
    best: tuple[float, str, str] | None = None
    report: dict[str, float] = {}
    for layout in layouts:
        apply_memory_format(model, layout)
        name, seconds = choose_unroll(model, frames, n_out, step_minutes, precision, training=training, motion=motion)
        if not seconds:  # nothing to choose between: no fusable layer, so nothing was timed
            return name, layouts[0], {}
        report.update({f"{k} {layout}": v for k, v in seconds.items()})
        if best is None or seconds[name] < best[0]:
            best = (seconds[name], name, layout)
    _, name, layout = best
    return name, layout, report


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
