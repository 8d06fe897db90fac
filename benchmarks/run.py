"""Speed benchmark: nowcast's ConvLSTM against a common-style reference, in one process.

Usage::

    python benchmarks/run.py [--quick] [--compile] [--json OUT.json] [--device auto|cpu|cuda]
                             [--batch N] [--graphs] [--skip-predict]

Measures (1) training throughput of the paper's Moving-MNIST net and the default radar model,
(2) the same for a reference written here in the common style (concatenate [x, h], one fp32
convolution per gate block and step, step-major loop, convolution over the forecaster's zero
inputs, eager NCHW), (3) the peak of a plain convolution of the recurrent shape in the precision `auto` picks
and our achieved GFLOP/s as a fraction of it, (4) the latency of a 10-frame forecast of a
512×512 radar frame with the shipped model, and peak memory. With no ``--quick`` it also trains
a small model in fp32 and in bf16 from the same seed and compares the validation losses. With
``--compile`` it also times our bf16 model under ``torch.compile`` and reports the compile time.
With ``--graphs`` on a GPU it also times our step and the reference's replayed as CUDA graphs
(:mod:`nowcast.graphs`, what ``trainer.cuda_graphs`` does) against the eager fp32 reference.

Ours runs both unrolls (``split``: input convolution batched over time, ``fused``: one convolution
over ``cat([x, h])`` per step); ``ours_fp32`` is the unroll and memory format that
``trainer.unroll=auto`` picks on this machine (``chosen_unroll``, ``chosen_memory_format``; on a CPU
in fp32 NCHW and channels-last are both timed), as a training run would.

The contenders are timed in alternating blocks in one process; ``like_for_like_fp32`` (and, where
bf16 is native, ``like_for_like_bf16``) compares ours and the reference at the same precision,
``best_precision_vs_reference_fp32`` ours at the precision ``auto`` picks against the fp32
reference, and ``fraction_of_peak`` our GFLOP/s against the conv peak of that precision.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from nowcast import __version__
from nowcast.forecast import Forecaster
from nowcast.graphs import GraphedStep, make_capturable
from nowcast.models import EncoderForecaster, ModelConfig
from nowcast.precision import autocast, cpu_capability, resolve_precision
from nowcast.unroll import candidate_layouts, choose_unroll_and_layout


@dataclass
class Case:
    """One benchmarked network and input shape."""

    name: str
    config: ModelConfig
    batch: int
    t_in: int
    t_out: int
    size: int


CASES = [
    Case(
        "convlstm_paper (Moving-MNIST)", ModelConfig(hidden=[128, 64, 64], kernel_size=5, patch_size=4), 8, 10, 10, 64
    ),
    Case(
        "radar default",
        ModelConfig(hidden=[64, 64], kernel_size=3, patch_size=8, step_channel=True),
        8,
        5,
        10,
        128,
    ),
]


class ReferenceCell(nn.Module):
    """Common-style ConvLSTM cell: one convolution over ``cat([x, h])`` per step."""

    def __init__(self, in_channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x, state):
        """One step from the concatenation of input and hidden state."""
        h, c = state
        i, f, o, g = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ReferenceModel(nn.Module):
    """Common-style encoder–forecaster with the same layers and shapes as ours."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        p, k = config.patch_size, config.kernel_size
        extra = 1 if config.step_channel else 0
        below = [p * p + extra, *config.hidden[:-1]]
        self.config = config
        self.encoder = nn.ModuleList(ReferenceCell(i, h, k) for i, h in zip(below, config.hidden, strict=True))
        below_fc = [max(extra, 1), *config.hidden[:-1]]  # the common code feeds zeros to the first layer
        self.forecaster = nn.ModuleList(ReferenceCell(i, h, k) for i, h in zip(below_fc, config.hidden, strict=True))
        self.out = nn.Conv2d(sum(config.hidden), p * p, 1)

    def forward(self, frames, n_out, step_minutes=None):
        """Step-major unroll: every layer at time t before any layer at t + 1."""
        b, t_in = frames.shape[:2]
        p = self.config.patch_size
        x = F.pixel_unshuffle(frames.flatten(0, 1), p).unflatten(0, (b, t_in))
        hp, wp = x.shape[-2:]
        extra = x.new_full((b, 1, hp, wp), 0.5) if self.config.step_channel else None
        states = [(x.new_zeros(b, cell.hidden, hp, wp), x.new_zeros(b, cell.hidden, hp, wp)) for cell in self.encoder]
        for t in range(t_in):
            inp = x[:, t] if extra is None else torch.cat([x[:, t], extra], 1)
            for i, cell in enumerate(self.encoder):
                states[i] = cell(inp, states[i])
                inp = states[i][0]
        outputs = []
        zeros = extra if extra is not None else x.new_zeros(b, 1, hp, wp)
        for _ in range(n_out):
            inp = zeros
            hs = []
            for i, cell in enumerate(self.forecaster):
                states[i] = cell(inp, states[i])
                inp = states[i][0]
                hs.append(inp)
            outputs.append(torch.sigmoid(F.pixel_shuffle(self.out(torch.cat(hs, 1)), p)))
        return torch.stack(outputs, 1)


def count_forward_flops(model: nn.Module, run) -> float:
    """FLOPs of all convolutions in one forward pass (2 × MACs), counted with hooks."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2.0 * module.in_channels * k * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        run()
    for h in handles:
        h.remove()
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn, device: torch.device, warmup: int, reps: int) -> float:
    """Median wall time of ``fn()`` over ``reps`` calls after ``warmup`` calls (GPU synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def with_unroll(model: EncoderForecaster, unroll: str) -> EncoderForecaster:
    """``model`` set to unroll its layers ``split`` or ``fused``."""
    model.unroll = unroll
    return model


def chosen_setup(case: Case, device, precision: str) -> tuple[str, bool]:
    """The unroll and memory format a training run with ``trainer.unroll=auto`` picks here.

    As the trainer does (:meth:`nowcast.training.Trainer._choose_unroll`): on a CPU in fp32 both
    memory formats are timed with both unrolls and the fastest pair kept; otherwise the unroll is
    timed in the model's own format (channels-last on a CPU, NCHW on a GPU). Returns
    ``(unroll, channels_last)``.
    """
    own = "channels_last" if device.type == "cpu" else "contiguous"
    layouts = candidate_layouts(device, precision, own)
    frames = torch.rand(case.batch, case.t_in, 1, case.size, case.size, device=device)
    step = torch.full((case.batch,), 10.0, device=device)
    torch.manual_seed(0)
    model = EncoderForecaster(case.config).to(device)
    name, layout, _ = choose_unroll_and_layout(model, frames, case.t_out, step, precision, layouts)
    return name, layout == "channels_last"


def training_stepper(
    model, case: Case, device, precision: str, channels_last: bool, compiled: bool = False, graphed: bool = False
):
    """One training step (forward + backward + Adam) as a function, and the forward FLOPs per batch.

    ``graphed``: the step is replayed as a CUDA graph after three eager steps, as
    ``trainer.cuda_graphs`` does (:class:`nowcast.graphs.GraphedStep`).
    """
    torch.manual_seed(0)
    frames = torch.rand(case.batch, case.t_in + case.t_out, 1, case.size, case.size, device=device)
    step = torch.full((case.batch,), 10.0, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    net = torch.compile(model) if compiled else model

    def forward(net=net, cache=True):
        with autocast(device, precision, cache):
            return net(frames[:, : case.t_in], case.t_out, step).float()

    flops = count_forward_flops(model, lambda: forward(model))

    def loss_step():
        loss = F.mse_loss(forward(cache=not graphed), frames[:, case.t_in :])
        loss.backward()
        opt.step()
        return loss.detach()

    if graphed:
        make_capturable(opt)
        stepper = GraphedStep(loss_step, opt)
        while not stepper.captured:  # warm-up steps and the capture, before any timing
            stepper()
        return stepper, flops

    def one_step():
        opt.zero_grad(set_to_none=True)
        loss_step()

    return one_step, flops


def time_training(
    model, case: Case, device, precision: str, steps: int, channels_last: bool, compiled: bool = False
) -> tuple[float, float]:
    """Samples per second (forward + backward + Adam step) and the forward FLOPs per batch."""
    one_step, flops = training_stepper(model, case, device, precision, channels_last, compiled)
    return case.batch / median_seconds(one_step, device, warmup=2, reps=steps), flops


def alternating(steppers: dict, case: Case, device, rounds: int, block: int) -> dict[str, float]:
    """Samples/s of each contender, timed in alternating blocks (A B C A B C …) in this process.

    Each contender is warmed up, then each round times ``block`` steps of every contender in
    turn; the median over rounds is reported, so a drift of the machine hits every contender.
    """
    for fn in steppers.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, fn in steppers.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(block):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) / block)
    return {name: case.batch / statistics.median(t) for name, t in times.items()}


def conv_peak(case: Case, device, dtype: torch.dtype, reps: int) -> float:
    """GFLOP/s of a plain convolution of the recurrent shape (batch × time stacked), fwd only."""
    hid = case.config.hidden[0]
    grid = case.size // case.config.patch_size
    k = case.config.kernel_size
    x = torch.randn(case.batch * 10, hid, grid, grid, device=device)
    w = torch.randn(4 * hid, hid, k, k, device=device)
    if device.type == "cpu":
        x = x.to(memory_format=torch.channels_last)

    def run():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            return F.conv2d(x, w, padding=k // 2)

    flops = 2.0 * hid * k * k * 4 * hid * grid * grid * case.batch * 10
    return flops / median_seconds(run, device, warmup=3, reps=reps) / 1e9


def predict_latency(device: str, reps: int) -> float:
    """Median seconds for a 10-frame forecast of a 512×512 frame with the shipped model.

    The frame is :func:`predict_speed.synthetic_rain` (smooth drifting cells); ``predict_speed.py``
    also times real radar crops and the stages.
    """
    from predict_speed import synthetic_rain

    forecaster = Forecaster.from_checkpoint(device=device)
    rates = synthetic_rain(forecaster.t_in)
    forecaster.forecast(rates, 10, 5.0)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        forecaster.forecast(rates, 10, 5.0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def precision_check(device, steps: int) -> dict[str, float]:
    """Train one small model in fp32 and in bf16 from the same seed; validation MSE of each."""
    from nowcast.data.moving_mnist import MovingMNIST, load_digits

    train = MovingMNIST(load_digits("train"), 10**9, seed=0)
    val = torch.stack([MovingMNIST(load_digits("val"), 64, seed=1)[i]["frames"] for i in range(64)]).to(device)
    out = {}
    for precision in ("32", "bf16"):
        torch.manual_seed(0)
        model = EncoderForecaster(ModelConfig(hidden=[32, 32])).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for s in range(steps):
            batch = torch.stack([train[s * 16 + j]["frames"] for j in range(16)]).to(device)
            with autocast(device, precision):
                pred = model(batch[:, :10], 10).float()
            loss = F.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6), batch[:, 10:])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad(), autocast(device, precision):
            out[f"val_mse_{precision}"] = float(F.mse_loss(model(val[:, :10], 10).float(), val[:, 10:]))
    return out


def time_compiled(case: Case, device, steps: int) -> dict[str, float]:
    """Our bf16 model under ``torch.compile``: samples/s after compiling, and the compile time."""
    model = EncoderForecaster(case.config).to(device)
    start = time.perf_counter()
    time_training(model, case, device, "bf16", 1, channels_last=device.type == "cpu", compiled=True)
    first = time.perf_counter() - start  # compiling + 3 steps
    sps, _ = time_training(model, case, device, "bf16", steps, channels_last=device.type == "cpu", compiled=True)
    return {"ours_bf16_compiled_samples_per_s": sps, "compile_seconds": first - 3 * case.batch / sps}


def bench_case(case: Case, device: torch.device, choice, steps: int, args: argparse.Namespace) -> dict:
    """Time one case's contenders in alternating blocks; the row of ratios and rates for the JSON."""
    graphs = args.graphs and device.type == "cuda"
    steppers, flops = {}, {}
    steppers["reference_fp32"], flops["reference"] = training_stepper(
        ReferenceModel(case.config).to(device), case, device, "32", channels_last=False
    )
    unroll, cl = chosen_setup(case, device, choice.name)
    steppers["ours_fp32"], flops["ours"] = training_stepper(
        EncoderForecaster(case.config).to(device), case, device, "32", channels_last=cl
    )
    steppers["ours_fused_fp32"], _ = training_stepper(
        with_unroll(EncoderForecaster(case.config).to(device), "fused"), case, device, "32", channels_last=cl
    )
    if choice.name == "bf16":
        steppers["reference_bf16"], _ = training_stepper(
            ReferenceModel(case.config).to(device), case, device, "bf16", channels_last=False
        )
        steppers["ours_bf16"], _ = training_stepper(
            with_unroll(EncoderForecaster(case.config).to(device), unroll), case, device, "bf16", channels_last=cl
        )
    if graphs:
        steppers["reference_graphed_fp32"], _ = training_stepper(
            ReferenceModel(case.config).to(device), case, device, "32", channels_last=False, graphed=True
        )
        steppers[f"ours_graphed_{choice.name}"], _ = training_stepper(
            with_unroll(EncoderForecaster(case.config).to(device), unroll),
            case,
            device,
            choice.name,
            channels_last=cl or choice.name == "bf16",
            graphed=True,
        )
    sps = alternating(steppers, case, device, rounds=steps, block=1 if args.quick else 2)
    sps["ours_split_fp32"] = sps["ours_fp32"]
    sps["ours_fp32"] = sps["ours_fused_fp32" if unroll == "fused" else "ours_split_fp32"]  # as training runs
    peak = conv_peak(case, device, torch.bfloat16 if choice.name == "bf16" else torch.float32, steps * 2)
    ref_sps, ours_fp32 = sps["reference_fp32"], sps["ours_fp32"]
    best = sps[f"ours_{'bf16' if choice.name == 'bf16' else 'fp32'}"]
    achieved = 3.0 * flops["ours"] * best / case.batch / 1e9  # forward + backward ≈ 3 × forward
    row = {f"{name}_samples_per_s": value for name, value in sps.items()}
    row.update(
        {
            "like_for_like_fp32": ours_fp32 / ref_sps,
            "best_precision_vs_reference_fp32": best / ref_sps,
            "chosen_precision": choice.name,
            "chosen_unroll": unroll,
            "chosen_memory_format": "channels_last" if cl else "contiguous",
            "conv_peak_gflops_chosen_precision": peak,
            "achieved_gflops": achieved,
            "fraction_of_peak": achieved / peak,
            "reference_forward_gflop_per_batch": flops["reference"] / 1e9,
            "ours_forward_gflop_per_batch": flops["ours"] / 1e9,
        }
    )
    if choice.name == "bf16":
        row["like_for_like_bf16"] = sps["ours_bf16"] / sps["reference_bf16"]
    if graphs:
        graphed = sps[f"ours_graphed_{choice.name}"]
        row["graphed_vs_reference_fp32"] = graphed / ref_sps
        row["graphed_vs_graphed_reference_fp32"] = graphed / sps["reference_graphed_fp32"]
        row["graphed_fraction_of_peak"] = 3.0 * flops["ours"] * graphed / case.batch / 1e9 / peak
    print(
        f"{case.name}: unroll {unroll}, {'channels-last' if cl else 'NCHW'} "
        f"(split {sps['ours_split_fp32']:.2f}, fused {sps['ours_fused_fp32']:.2f}); "
        f"ours fp32 {ours_fp32:.2f} samples/s vs reference fp32 {ref_sps:.2f} "
        f"(like for like x{row['like_for_like_fp32']:.2f}); "
        f"ours at {choice.name} x{row['best_precision_vs_reference_fp32']:.2f}; "
        f"{achieved:.0f} GFLOP/s = {row['fraction_of_peak']:.0%} of the {choice.name} conv peak ({peak:.0f})",
        flush=True,
    )
    if graphs:
        print(
            f"  CUDA graphs: ours at {choice.name} {graphed:.2f} samples/s, x{row['graphed_vs_reference_fp32']:.2f} "
            f"the eager fp32 reference, x{row['graphed_vs_graphed_reference_fp32']:.2f} the graphed fp32 "
            f"reference ({sps['reference_graphed_fp32']:.2f}); {row['graphed_fraction_of_peak']:.0%} of peak",
            flush=True,
        )
    if args.compile:
        compiled = time_compiled(case, device, steps)
        row.update(compiled)
        print(
            f"  compiled: {compiled['ours_bf16_compiled_samples_per_s']:.2f} samples/s "
            f"(x{compiled['ours_bf16_compiled_samples_per_s'] / sps['reference_fp32']:.2f}) after "
            f"{compiled['compile_seconds']:.0f} s of compiling",
            flush=True,
        )
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no precision check")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="batch size of every case (default: 8)")
    parser.add_argument(
        "--graphs", action="store_true", help="on a GPU, also time our step and the reference's as CUDA graphs"
    )
    parser.add_argument("--skip-predict", action="store_true", help="do not time the shipped model's forecast")
    args = parser.parse_args(argv)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    steps = 3 if args.quick else 8
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "versions": {"nowcast": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
        "cases": {},
    }
    choice = resolve_precision("auto", device)
    results["cpu_capability"] = cpu_capability()
    results["auto_precision"] = {"precision": choice.name, "reason": choice.reason}
    print(f"hardware: {choice.reason}", flush=True)
    results["batch"] = args.batch or CASES[0].batch
    for case in CASES:
        case = replace(case, batch=args.batch) if args.batch else case
        results["cases"][case.name] = bench_case(case, device, choice, steps, args)
    paper = results["cases"][CASES[0].name]
    # with --graphs on a GPU, the graphed step is what training runs (trainer.cuda_graphs)
    results["train_speedup_vs_reference"] = paper.get(
        "graphed_vs_reference_fp32", paper["best_precision_vs_reference_fp32"]
    )
    results["train_fraction_of_peak"] = paper.get("graphed_fraction_of_peak", paper["fraction_of_peak"])
    if not args.skip_predict:
        results["predict_512_seconds"] = predict_latency(str(device), 3 if args.quick else 5)
        print(f"predict 512x512, 10 frames: {results['predict_512_seconds']:.3f} s", flush=True)
    if not args.quick:
        results["precision_check"] = precision_check(device, 150)
        print(f"precision check: {results['precision_check']}", flush=True)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        results["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"peak RSS {results['peak_rss_mb']:.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
