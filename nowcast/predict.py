r"""``python -m nowcast.predict``: forecast from radar files, write CF netCDF and a GIF.

Example::

    python -m nowcast.predict --input ../shared/radar/bom-melbourne-2018-06-16 \\
        --output forecast.nc --gif forecast.gif --minutes 60
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nowcast import __version__
from nowcast.checkpoint import CheckpointError
from nowcast.errors import UserError
from nowcast.forecast import SPROG_WEIGHT, Forecaster
from nowcast.io.formats import READERS, get_reader
from nowcast.io.radar import ZR, open_radar, split_sequences
from nowcast.lagrangian import INFLOWS
from nowcast.methods import Window, get_method
from nowcast.precision import PRECISIONS
from nowcast.probability import MODEL_MEMBERS, untrained_thresholds
from nowcast.regrid import grid_spacing_km

log = logging.getLogger("nowcast.predict")

DEFAULT_MINUTES = 60.0
#: Longest horizon a nowcast is asked for (minutes); beyond a few hours radar extrapolation has no skill.
MAX_HORIZON_MINUTES = 360.0


def add_forecaster_arguments(parser: argparse.ArgumentParser) -> None:
    """``--inflow`` and ``--sprog-weight``, shared by ``predict`` and ``evaluate`` (see :func:`load_forecaster`)."""
    parser.add_argument(
        "--inflow",
        choices=INFLOWS,
        default=None,
        help="for a Lagrangian model, what comes in where the motion comes from outside the radar's range: "
        "observed (the last frame's nearest observed value; the default) or empty (no rain, as pysteps)",
    )
    parser.add_argument(
        "--sprog-weight",
        type=float,
        default=None,
        metavar="W",
        help=f"for a Lagrangian model, S-PROG's share of the forecast, in [0, 1] (default {SPROG_WEIGHT:g}; "
        "0: the network alone)",
    )


def load_forecaster(args: argparse.Namespace) -> Forecaster:
    """The checkpoint of ``args`` with its device, precision, inflow and S-PROG weight; a bad weight is a UserError."""
    try:
        return Forecaster.from_checkpoint(
            args.checkpoint, args.device, args.precision, inflow=args.inflow, sprog_weight=args.sprog_weight
        )
    except (CheckpointError, UserError):
        raise
    except ValueError as err:  # the settings' check (the other settings are argparse choices)
        raise UserError(f"--sprog-weight: {err}") from None


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by predict and evaluate: inputs, checkpoint, variable, Z–R, device."""
    parser.add_argument(
        "--input",
        "-i",
        nargs="+",
        required=True,
        metavar="PATH",
        help="radar files, directories or glob patterns (CF netCDF, KNMI/ODIM/OPERA HDF5, MeteoSwiss GIF, "
        "FMI PGM, MRMS GRIB2, BoM Rainfields3)",
    )
    parser.add_argument(
        "--format",
        default=None,
        metavar="NAME",
        help=f"force the file format ({', '.join(READERS)}); default: found from each file",
    )
    parser.add_argument(
        "--region",
        type=parse_region,
        default=None,
        metavar="XMIN,XMAX,YMIN,YMAX",
        help="read only this box, in the data's coordinates (metres, or degrees on lon/lat grids such as MRMS); "
        "write --region=-87.4,-82.2,42.9,48.0 when it starts with a minus",
    )
    parser.add_argument(
        "--checkpoint",
        "-c",
        default=None,
        metavar="CKPT",
        help="model checkpoint (.pt); default: the pretrained radar model shipped with nowcast",
    )
    parser.add_argument(
        "--variable", default=None, help="precipitation variable name; default: found by CF standard_name"
    )
    parser.add_argument("--zr-a", type=float, default=200.0, help="Z-R relation Z=a*R^b, a (default 200)")
    parser.add_argument("--zr-b", type=float, default=1.6, help="Z-R relation Z=a*R^b, b (default 1.6)")
    parser.add_argument(
        "--device", type=device_name, default="cpu", metavar="{cpu,cuda,auto}", help="where the model runs"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="inference precision (default auto: bf16 where the hardware runs it natively, else fp32)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", "-q", action="store_true", help="only print errors")
    parser.add_argument("--version", action="version", version=f"nowcast {__version__}")


def device_name(text: str) -> str:
    """``--device``: cpu, cuda (only where a GPU is present) or auto."""
    import torch

    if text not in ("cpu", "cuda", "auto"):
        raise argparse.ArgumentTypeError(f"{text!r} is not one of cpu, cuda, auto")
    if text == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda: no CUDA device is available here; use --device cpu")
    return text


def parse_thresholds(text: str) -> list[float]:
    """``--probabilities 1,5,10`` → rain-rate thresholds in mm/h, positive, finite, distinct, sorted."""
    try:
        values = sorted({float(v) for v in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated rain rates in mm/h, e.g. 1,5,10") from None
    if not values or not all(np.isfinite(v) and 0 < v <= 500 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: thresholds must be rain rates above 0 and at most 500 mm/h")
    return values


def probability_gif_path(gif: str) -> Path:
    """Where the probability animation goes beside ``--gif FILE.gif``: ``FILE_probability.gif``."""
    path = Path(gif)
    return path.with_name(f"{path.stem}_probability.gif")


def parse_region(text: str) -> tuple[float, float, float, float]:
    """``XMIN,XMAX,YMIN,YMAX`` → a tuple of four finite floats with min < max."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not four numbers XMIN,XMAX,YMIN,YMAX") from None
    if len(values) != 4 or not all(np.isfinite(values)) or values[0] >= values[1] or values[2] >= values[3]:
        raise argparse.ArgumentTypeError(f"{text!r} is not a box XMIN,XMAX,YMIN,YMAX with min < max")
    return values  # type: ignore[return-value]


def open_input(args: argparse.Namespace, skip_bad: bool = False):
    """Open the radar input named by the shared flags (see :func:`add_input_arguments`)."""
    for flag, value in (("--zr-a", args.zr_a), ("--zr-b", args.zr_b)):
        if not (np.isfinite(value) and value > 0):
            raise UserError(f"{flag} {value:g} is not a positive number (Z = a R^b; Marshall-Palmer: a 200, b 1.6)")
    if args.format is not None:
        get_reader(args.format)  # an unknown name: one line listing the known formats, before any file is read
    return open_radar(
        args.input, args.variable, ZR(args.zr_a, args.zr_b), fmt=args.format, region=args.region, skip_bad=skip_bad
    )


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``nowcast-predict``."""
    parser = argparse.ArgumentParser(
        prog="nowcast-predict",
        description="Forecast rain rate from the last frames of radar files; writes CF-1.8 netCDF "
        "(and optionally a GIF).",
        epilog="example: nowcast-predict --input radar_dir/ --output forecast.nc --gif forecast.gif --minutes 60",
    )
    add_input_arguments(parser)
    parser.add_argument("--output", "-o", required=True, metavar="FILE.nc", help="forecast netCDF to write")
    parser.add_argument(
        "--gif", default=None, metavar="FILE.gif", help="also write an animation: observed then forecast"
    )
    horizon = parser.add_mutually_exclusive_group()
    horizon.add_argument(
        "--minutes",
        type=float,
        default=None,
        help=f"forecast length in minutes (default {DEFAULT_MINUTES:g})",
    )
    horizon.add_argument("--steps", type=int, default=None, help="forecast length in input time steps")
    parser.add_argument(
        "--probabilities",
        type=parse_thresholds,
        default=None,
        metavar="U1,U2,...",
        help="also write P(rain rate >= U mm/h) per threshold and lead time into the netCDF "
        "(and FILE_probability.gif beside --gif), e.g. 1,5,10",
    )
    add_forecaster_arguments(parser)
    parser.add_argument(
        "--members",
        type=int,
        default=MODEL_MEMBERS,
        help=f"with --probabilities, for a model without a probability head: members of the motion-perturbed "
        f"ensemble they come from (default {MODEL_MEMBERS}; 1: the single forecast with a growing neighbourhood, "
        "faster); a model with a probability head gives them itself",
    )
    return parser


def check_outputs(paths: Sequence[str | None], overwrite: bool, suffixes: Sequence[str]) -> None:
    """Refuse existing outputs (unless ``overwrite``), wrong suffixes and missing folders."""
    for path, suffix in zip(paths, suffixes, strict=True):
        if path is None:
            continue
        p = Path(path)
        if p.suffix.lower() != suffix:
            raise UserError(f"{p}: output must end in {suffix}")
        if p.is_dir():
            raise UserError(f"{p}: is a directory; give a file name ending in {suffix}")
        if p.exists() and not overwrite:
            raise UserError(f"{p}: exists (use --overwrite to replace it)")
        if not p.parent.is_dir():
            raise UserError(f"{p.parent}: output folder does not exist")
        if not os.access(p.parent, os.W_OK):
            raise UserError(f"{p.parent}: output folder is not writable")


def horizon_steps(step_minutes: float, minutes: float | None, steps: int | None) -> int:
    """Number of forecast frames from ``--steps`` or ``--minutes``."""
    if steps is not None:
        if not 1 <= steps <= MAX_HORIZON_MINUTES / step_minutes:
            raise UserError(
                f"--steps {steps} is out of range: 1 to {int(MAX_HORIZON_MINUTES // step_minutes)} "
                f"({MAX_HORIZON_MINUTES:g} min at {step_minutes:g} min per step)"
            )
        return steps
    minutes = DEFAULT_MINUTES if minutes is None else minutes
    check_minutes("--minutes", minutes)
    return max(1, int(round(minutes / step_minutes)))


def check_minutes(flag: str, minutes: float) -> None:
    """A horizon in minutes must be finite, positive and at most :data:`MAX_HORIZON_MINUTES`."""
    if not (np.isfinite(minutes) and 0 < minutes <= MAX_HORIZON_MINUTES):
        raise UserError(
            f"{flag} {minutes:g} is out of range: give more than 0 and at most {MAX_HORIZON_MINUTES:g} minutes"
        )


def last_regular_frames(ds, t_in: int):
    """The last ``t_in`` frames of the latest regular sequence, and its step in minutes."""
    sequences = split_sequences(ds)
    seq, step = sequences[-1]
    if seq.sizes["time"] < t_in:
        sources = ds.attrs.get("source_files", ["input"])
        first = pd.Timestamp(seq["time"].values[0])
        if len(sequences) > 1 or seq.sizes["time"] < ds.sizes["time"]:
            raise UserError(
                f"{sources[-1]}: irregular time steps; only {seq.sizes['time']} regularly spaced frames "
                f"end the input (from {first}), the model needs {t_in}"
            )
        raise UserError(f"{sources[-1]}: {ds.sizes['time']} frame(s) given, the model needs {t_in}")
    return seq.isel(time=slice(-t_in, None)), step


def warn_step(forecaster: Forecaster, step: float, say: Callable[[str], None]) -> None:
    """Tell the user when the input's step is outside the steps the model was trained on."""
    trained = forecaster.step_minutes
    if trained and not (min(trained) - 1e-6 <= step <= max(trained) + 1e-6):
        say(
            f"warning: input time step {step:g} min is outside the steps the model was trained on "
            f"({min(trained):g}-{max(trained):g} min); the forecast may move rain at the wrong speed"
        )


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed predict command; raises UserError/CheckpointError on bad input."""
    from nowcast.io.forecast_writer import add_probabilities, forecast_dataset, write_forecast
    from nowcast.probability import exceedance

    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    probability_gif = str(probability_gif_path(args.gif)) if args.gif and args.probabilities else None
    check_outputs([args.output, args.gif, probability_gif], args.overwrite, [".nc", ".gif", ".gif"])
    if not 1 <= args.members <= 200:
        raise UserError(f"--members must be between 1 and 200, got {args.members}")
    forecaster = load_forecaster(args)
    trained = forecaster.model.config.probability_thresholds
    if forecaster.probability_source == "head" and untrained_thresholds(trained, args.probabilities or []):
        known = ", ".join(f"{u:g}" for u in trained)
        raise UserError(f"--probabilities: this model's probability head gives P(R ≥ u) for u = {known} mm/h only")
    ds = open_input(args)
    window, step = last_regular_frames(ds, forecaster.t_in)
    if not np.isfinite(window["rainfall_rate"].values[-1]).any():
        raise UserError(f"{ds.attrs['source_files'][-1]}: the latest frame has no valid data (all NaN)")
    warn_step(forecaster, step, say)
    n_out = horizon_steps(step, args.minutes, args.steps)
    spacing = grid_spacing_km(ds)
    spacing_km = float(np.mean(spacing))
    forecast_window = Window(window["rainfall_rate"].values, n_out, step, spacing)
    members = args.members if args.probabilities else 1
    forecast = get_method("model", forecaster, model_members=members)(forecast_window)[0]  # as evaluate does
    for_probabilities = forecast_window.probability_fields["model"]  # (M, n_out, H, W)
    attrs = {
        "nowcast_model": f"{forecaster.frame} {forecaster.model.config.cell} encoder-forecaster "
        f"{forecaster.model.config.hidden}",
        "nowcast_checkpoint": Path(forecaster.source).name,
        "nowcast_checkpoint_sha256": forecaster.sha256,
        "nowcast_input_files": "\n".join(ds.attrs["source_files"]),
        "nowcast_time_step_minutes": float(step),
    }
    out = forecast_dataset(window, forecast, step, attrs)
    if args.probabilities:
        growth = forecast_window.probability_growth.get("model")
        probability = exceedance(for_probabilities, args.probabilities, out["lead_time"].values, spacing_km, growth)
        out = add_probabilities(out, probability, args.probabilities)
    write_forecast(out, args.output)
    say(f"wrote {args.output}: {n_out} frames every {step:g} min from {pd.Timestamp(window['time'].values[-1])}")
    if args.gif:
        from nowcast.plots import animate, time_captions

        observed = window["rainfall_rate"].values
        frames = np.concatenate([observed, forecast])
        times = list(window["time"].values) + list(out["time"].values)
        leads = [None] * len(observed) + list(out["lead_time"].values)
        animate({"nowcast": frames}, time_captions(times, leads), args.gif)
        say(f"wrote {args.gif}")
    if probability_gif:
        panels = {f"P(R ≥ {u:g} mm/h)": p for u, p in zip(args.probabilities, out["probability"].values, strict=True)}
        animate(panels, time_captions(out["time"].values, out["lead_time"].values), probability_gif, kind="probability")
        say(f"wrote {probability_gif}")
    return 0


def guarded(run_fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a CLI command: user errors become one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        return run_fn(args)
    except (UserError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nowcast-predict`` / ``python -m nowcast.predict``."""
    args = build_parser().parse_args(argv)
    return guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
