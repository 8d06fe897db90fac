"""``python -m nowcast.evaluate``: the model against persistence, extrapolation and S-PROG.

Example::

    python -m nowcast.evaluate --input ../shared/radar/bom-melbourne-2018-06-16 --output eval/
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nowcast.checkpoint import atomic_write
from nowcast.errors import UserError
from nowcast.evaluation import (
    DEFAULT_FSS_SCALES,
    DEFAULT_PROBABILITY_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    evaluate,
    metrics_document,
    metrics_rows,
)
from nowcast.methods import DEFAULT_MEMBERS, DEFAULT_METHODS, METHOD_NAMES
from nowcast.predict import (
    add_forecaster_arguments,
    add_input_arguments,
    check_minutes,
    guarded,
    load_forecaster,
    open_input,
)
from nowcast.probability import MODEL_MEMBERS

OUTPUT_NAMES = (
    "metrics.json",
    "metrics.csv",
    "performance_diagram.png",
    "comparison.gif",
    "reliability.png",
    "roc.png",
)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``nowcast-evaluate``."""
    parser = argparse.ArgumentParser(
        prog="nowcast-evaluate",
        description="Score the model, Eulerian persistence, Lucas-Kanade extrapolation, S-PROG and (on request) "
        "the STEPS ensemble on the same windows of a radar sequence, deterministically and by their exceedance "
        "probabilities; writes metrics.json/.csv, plots and comparison.gif into DIR.",
        epilog="example: nowcast-evaluate --input radar_dir/ --output eval/ --minutes 60 --every 2",
    )
    add_input_arguments(parser)
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the results (created)")
    parser.add_argument("--minutes", type=float, default=60.0, help="forecast horizon in minutes (default 60)")
    parser.add_argument(
        "--input-minutes",
        type=float,
        default=None,
        help="input length in minutes (default: what the model reads)",
    )
    parser.add_argument("--every", type=int, default=1, help="start a window every N frames (default 1)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=METHOD_NAMES,
        help=f"methods to score (default {' '.join(DEFAULT_METHODS)}; steps is slow)",
    )
    parser.add_argument(
        "--members", type=int, default=DEFAULT_MEMBERS, help=f"STEPS ensemble size (default {DEFAULT_MEMBERS})"
    )
    parser.add_argument(
        "--model-members",
        type=int,
        default=MODEL_MEMBERS,
        help=f"for a model without a probability head: members of its motion-perturbed ensemble for its "
        f"probabilities (default {MODEL_MEMBERS}; 1: its single forecast with a growing neighbourhood, faster)",
    )
    add_forecaster_arguments(parser)
    parser.add_argument(
        "--probability-thresholds",
        nargs="*",
        type=float,
        default=list(DEFAULT_PROBABILITY_THRESHOLDS),
        help="mm/h events whose forecast probabilities are scored (Brier, reliability, ROC; default 1 5; none: skip)",
    )
    parser.add_argument(
        "--thresholds",
        nargs="+",
        type=float,
        default=list(DEFAULT_THRESHOLDS),
        help="event thresholds in mm/h (default 0.5 1 2 5 10)",
    )
    parser.add_argument(
        "--fss-scales",
        nargs="+",
        type=int,
        default=list(DEFAULT_FSS_SCALES),
        help="FSS window sizes in pixels (default 1 5 17)",
    )
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse settings no evaluation can use, with one line naming the flag."""
    if args.every < 1:
        raise UserError(f"--every must be at least 1, got {args.every}")
    check_minutes("--minutes", args.minutes)
    if args.input_minutes is not None:
        check_minutes("--input-minutes", args.input_minutes)
    if any(s < 1 for s in args.fss_scales):
        raise UserError(f"--fss-scales must be window sizes of at least 1 pixel, got {args.fss_scales}")
    for flag, values in (("--thresholds", args.thresholds), ("--probability-thresholds", args.probability_thresholds)):
        if not all(np.isfinite(t) and t > 0 for t in values):
            raise UserError(f"{flag} must be positive rain rates in mm/h, got {values}")
    if not 2 <= args.members <= 200:
        raise UserError(f"--members must be between 2 and 200, got {args.members}")
    if not 1 <= args.model_members <= 200:
        raise UserError(f"--model-members must be between 1 and 200, got {args.model_members}")


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed evaluate command."""
    from nowcast import plots

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    clashes = [name for name in OUTPUT_NAMES if (out / name).exists()]
    if clashes and not args.overwrite:
        raise UserError(f"{out / clashes[0]}: exists (use --overwrite to replace the results in {out})")
    check_arguments(args)
    forecaster = load_forecaster(args) if "model" in args.methods else None
    ds = open_input(args, skip_bad=True)
    result = evaluate(
        ds,
        forecaster,
        args.minutes,
        args.input_minutes,
        args.every,
        args.methods,
        args.thresholds,
        args.fss_scales,
        progress=not args.quiet and sys.stderr.isatty(),
        probability_thresholds=args.probability_thresholds,
        members=args.members,
        model_members=args.model_members,
    )
    document = metrics_document(result)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2)))
    atomic_write(out / "metrics.csv", lambda tmp: Path(tmp).write_text(_csv(metrics_rows(document))))
    leads = document["windows"]["lead_minutes"]
    thresholds = [float(t) for t in args.thresholds]
    for threshold in thresholds:
        plots.categorical_by_lead(result.scores, threshold, leads, out / f"scores_{threshold}mmh.png")
    plots.performance_diagram(result.scores, thresholds, out / "performance_diagram.png")
    if result.probabilistic:
        plots.reliability_diagram(result.probabilistic, out / "reliability.png")
        plots.roc_curves(result.probabilistic, out / "roc.png")
    panels = {
        k: result.example[k] for k in ("observed", "model", "extrapolation", "persistence") if k in result.example
    }
    plots.animate(panels, plots.time_captions(result.example_times[result.spec.n_in :], leads), out / "comparison.gif")
    if not args.quiet:
        print(summary_table(document, thresholds), file=sys.stderr)
        if result.probabilistic:
            print(probabilistic_table(document), file=sys.stderr)
        print(f"wrote {out}/ ({result.count} windows)", file=sys.stderr)
    return 0


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summary_table(document: dict, thresholds: Sequence[float]) -> str:
    """Markdown table of mean CSI per threshold and MSE per method."""
    head = "| method | " + " | ".join(f"CSI ≥{t:g}" for t in thresholds) + " | MSE (mm/h)² | MAE mm/h |"
    lines = [head, "|" + "---|" * (len(thresholds) + 3)]
    for method, scores in document["methods"].items():
        cells = [_fmt(scores["csi"][t]["mean"]) for t in thresholds]
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {_fmt(scores['mse']['mean'])} | {_fmt(scores['mae']['mean'])} |"
        )
    return "\n".join(lines)


def probabilistic_table(document: dict) -> str:
    """Markdown table of Brier skill, ROC area and seconds per window for each method's probabilities."""
    probabilistic = document["probabilistic"]
    thresholds = list(next(iter(probabilistic.values()))["bss"])
    head = "| method | " + " | ".join(f"BSS ≥{t:g} | ROC area ≥{t:g}" for t in thresholds) + " | CRPS | s/window |"
    lines = [head, "|" + "---|" * (2 * len(thresholds) + 3)]
    for method, scores in probabilistic.items():
        cells = [f"{_fmt(scores['bss'][t]['mean'])} | {_fmt(scores['roc_area'][t])}" for t in thresholds]
        crps = _fmt(scores["crps"]["mean"]) if "crps" in scores else "–"
        seconds = document["seconds_per_window"].get(method)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {crps} | {_fmt(seconds)} |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nowcast-evaluate`` / ``python -m nowcast.evaluate``."""
    args = build_parser().parse_args(argv)
    return guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
