"""Pictures: forecast GIFs, score-by-lead plots, performance diagrams, loss curves.

All functions render headlessly (matplotlib's Agg backend) and write files atomically.
Radar fields use pysteps' rain-rate colour scale (log-spaced levels in mm/h, white below the
lowest level).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from nowcast.checkpoint import atomic_write  # noqa: E402

GIF_FRAME_MS = 400


def radar_colormap():
    """Pysteps' ``intensity`` colour map in mm/h: ``(cmap, norm, levels)``.

    Without pysteps (a minimal GPU image, say) a log-scaled viridis on the same levels is used.
    """
    try:
        from nowcast._quiet import import_pysteps

        import_pysteps()
        from pysteps.visualization.precipfields import get_colormap
    except ImportError:
        levels = [0.1, 0.25, 0.4, 0.63, 1, 1.6, 2.5, 4, 6.3, 10, 16, 25, 40, 63, 100, 160]
        cmap = matplotlib.colormaps["viridis"].with_extremes(under="white", bad="#d9d9d9")
        return cmap, matplotlib.colors.BoundaryNorm(levels, cmap.N, extend="max"), levels
    cmap, norm, levels, _ = get_colormap("intensity", "mm/h", "pysteps")
    return cmap.with_extremes(under="white", bad="#d9d9d9"), norm, levels


def _figure_to_image(fig) -> Image.Image:
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def save_gif(images: Sequence[Image.Image], path: str | Path, frame_ms: int = GIF_FRAME_MS) -> None:
    """Write frames as a looping GIF, atomically (adaptive palette, no dithering)."""
    paletted = [im.convert("P", palette=Image.Palette.ADAPTIVE, colors=255, dither=Image.Dither.NONE) for im in images]
    first, *rest = paletted

    def write(tmp: str) -> None:
        first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=frame_ms, loop=0)

    atomic_write(path, write)


def _save_figure(fig, path: str | Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=Path(path).suffix[1:] or "png", dpi=100))
    plt.close(fig)


def animate(
    panels: Mapping[str, np.ndarray],
    captions: Sequence[str],
    path: str | Path,
    kind: str = "radar",
    columns: int | None = None,
) -> int:
    """The one GIF builder: panels side by side, one GIF frame per caption.

    Parameters
    ----------
    panels
        Panel title → frames ``(T, H, W)``, all of the same ``T``; NaN shows as no data (grey in
        radar and probability pictures, blank in grey ones).
    captions
        The figure's title at each of the ``T`` frames (valid time, lead time…).
    path
        GIF to write (atomically).
    kind
        ``radar``: rain rate in mm/h on pysteps' colour scale with a colour bar; ``probability``:
        values in [0, 1] with a colour bar; ``gray``: Moving-MNIST intensities in [0, 1].
    columns
        Panels per row (default: all in one row).

    Returns
    -------
    int
        The number of GIF frames.

    """
    names = list(panels)
    columns = columns or len(names)
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns + 1.2, 3.2 * rows + 0.5), squeeze=False)
    style = _panel_style(kind)
    artists = []
    for ax, name in zip(axes.flat, names, strict=False):
        artists.append(ax.imshow(panels[name][0], interpolation="nearest", **style))
        ax.set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(names) :]:
        ax.set_axis_off()
    if kind == "radar":
        fig.colorbar(artists[0], ax=axes.ravel().tolist(), ticks=radar_colormap()[2], shrink=0.8, label="mm/h")
    elif kind == "probability":
        fig.colorbar(artists[0], ax=axes.ravel().tolist(), shrink=0.8, label="probability")
    title = fig.suptitle("")
    images = []
    for t, caption in enumerate(captions):
        for artist, name in zip(artists, names, strict=True):
            artist.set_data(panels[name][t])
        title.set_text(caption)
        images.append(_figure_to_image(fig))
    plt.close(fig)
    save_gif(images, path)
    return len(images)


def _panel_style(kind: str) -> dict:
    if kind == "radar":
        cmap, norm, _ = radar_colormap()
        return {"cmap": cmap, "norm": norm}
    if kind == "probability":
        cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#d9d9d9")
        return {"cmap": cmap, "vmin": 0.0, "vmax": 1.0}
    if kind == "gray":
        return {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    raise ValueError(f"unknown picture kind {kind!r}; choose radar, probability or gray")


def sample_panels(
    inputs: np.ndarray, truth: np.ndarray, forecast: np.ndarray
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Panels and captions for :func:`animate` of a training run's test samples.

    Arrays are ``(N, T, H, W)``; each sample gets an "observed" panel (inputs, then the truth) and a
    "forecast" panel (blank during the inputs), two panels per row.
    """
    t_in, t_out = inputs.shape[1], truth.shape[1]
    blank = np.full_like(inputs, np.nan)
    panels = {}
    for n in range(inputs.shape[0]):
        panels[f"sample {n + 1}: observed"] = np.concatenate([inputs[n], truth[n]])
        panels[f"sample {n + 1}: forecast"] = np.concatenate([blank[n], forecast[n]])
    captions = [f"input {t + 1}/{t_in}" for t in range(t_in)] + [f"lead +{t + 1}" for t in range(t_out)]
    return panels, captions


def time_captions(valid_times: Sequence, leads_minutes: Sequence[float | None], title: str = "") -> list[str]:
    """Captions ``"<title>  YYYY-mm-dd HH:MM UTC  observed|forecast +N min"`` for :func:`animate`."""
    import pandas as pd

    captions = []
    for when, lead in zip(valid_times, leads_minutes, strict=True):
        kind = "observed" if lead is None else f"forecast +{lead:g} min"
        captions.append(f"{title}  {pd.Timestamp(when):%Y-%m-%d %H:%M} UTC  {kind}".strip())
    return captions


def sample_grid(
    inputs: np.ndarray, truth: np.ndarray, forecast: np.ndarray, path: str | Path, radar: bool = False
) -> None:
    """PNG grid per sample: last input frames, observed and forecast rows by lead."""
    n, t_out = truth.shape[:2]
    style = _panel_style("radar" if radar else "gray")
    fig, axes = plt.subplots(2 * n, t_out, figsize=(1.3 * t_out, 2.7 * n), squeeze=False)
    for s in range(n):
        for t in range(t_out):
            for r, (name, field) in enumerate((("observed", truth), ("forecast", forecast))):
                ax = axes[2 * s + r, t]
                ax.imshow(field[s, t], **style)
                ax.set_xticks([])
                ax.set_yticks([])
                if t == 0:
                    ax.set_ylabel(name, fontsize=8)
                if s == 0 and r == 0:
                    ax.set_title(f"+{t + 1}", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def scores_by_lead(
    scores: dict[str, dict],
    path: str | Path,
    thresholds: Sequence[float],
    lead_minutes: Sequence[float] | None = None,
) -> None:
    """MSE, and CSI per threshold, by lead time for each method (``{method: Scorer.compute()}``)."""
    methods = list(scores)
    panels: list[float | None] = [None, *(float(t) for t in thresholds)]  # None: the MSE panel
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    for ax, threshold in zip(axes[0], panels, strict=True):
        for method in methods:
            if threshold is None:
                values = scores[method]["mse"]["by_lead"]
            else:
                values = scores[method]["csi"][threshold]["by_lead"]
            x = lead_minutes if lead_minutes is not None else range(1, len(values) + 1)
            ax.plot(list(x), [np.nan if v is None else v for v in values], marker="o", ms=3, label=method)
        ax.set_title("MSE" if threshold is None else f"CSI ≥ {threshold:g}")
        ax.set_xlabel("lead (min)" if lead_minutes is not None else "lead (frames)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def loss_curve(history: Sequence[dict[str, float]], path: str | Path) -> None:
    """Training and validation loss against optimiser step (log scale)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in ("train_loss", "val_loss"):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o" if key == "val_loss" else None, ms=3, label=key.replace("_", " "))
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def categorical_by_lead(
    scores: dict[str, dict], threshold: float, lead_minutes: Sequence[float], path: str | Path
) -> None:
    """CSI, POD and FAR by lead time for every method at one threshold (mm/h)."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    for ax, score in zip(axes, ("csi", "pod", "far"), strict=True):
        for method, values in scores.items():
            series = values[score][threshold]["by_lead"]
            ax.plot(lead_minutes, [np.nan if v is None else v for v in series], marker="o", ms=3, label=method)
        ax.set_title(f"{score.upper()} ≥ {threshold:g} mm/h")
        ax.set_xlabel("lead time (min)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def performance_diagram(scores: dict[str, dict], thresholds: Sequence[float], path: str | Path) -> None:
    """Roebber (2009) performance diagram: POD against success ratio (1 − FAR), CSI and bias lines.

    Each method is one line through its thresholds (mean scores over lead times).
    """
    fig, ax = plt.subplots(figsize=(5.5, 5.2))
    sr, pod = np.meshgrid(np.linspace(0.01, 1, 200), np.linspace(0.01, 1, 200))
    csi = 1.0 / (1.0 / sr + 1.0 / pod - 1.0)
    contours = ax.contour(sr, pod, csi, levels=np.arange(0.1, 1.0, 0.1), colors="0.75", linewidths=0.8)
    ax.clabel(contours, fmt="%.1f", fontsize=7)
    for bias in (0.5, 0.8, 1.0, 1.25, 2.0):
        ax.plot([0, 1], [0, bias], ls="--", color="0.85", lw=0.8)
        ax.annotate(f"{bias:g}", (min(1, 1 / bias), min(1, bias)), fontsize=7, color="0.5")
    for method, values in scores.items():
        points = [
            (1 - (values["far"][t]["mean"] or 0.0), values["pod"][t]["mean"] or 0.0)
            for t in thresholds
            if values["pod"][t]["mean"] is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            (line,) = ax.plot(xs, ys, marker="o", label=method)
            for (x, y), t in zip(points, thresholds, strict=False):
                ax.annotate(
                    f"{t:g}", (x, y), fontsize=6, color=line.get_color(), xytext=(3, 3), textcoords="offset points"
                )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("success ratio (1 − FAR)")
    ax.set_ylabel("probability of detection")
    ax.set_title("performance diagram (labels: mm/h)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save_figure(fig, path)


def reliability_diagram(probabilistic: dict[str, dict], path: str | Path) -> None:
    """Reliability diagrams, one panel per threshold: observed frequency against forecast probability.

    ``probabilistic`` maps method → scores of :class:`nowcast.probscores.ProbabilisticScorer`; the
    dashed diagonal is perfect reliability. Labels carry each method's Brier skill score.
    """

    def curve(scores: dict, u) -> tuple[list, list, str]:
        bss = scores["bss"][u]["mean"]
        points = scores["reliability"][u]
        return points["forecast"], points["observed"], "" if bss is None else f" (BSS {bss:.2f})"

    axes = ("forecast probability", "observed frequency")
    _panels_by_threshold(probabilistic, curve, axes, "reliability, P(R ≥ {u:g} mm/h)", "upper left", path)


def roc_curves(probabilistic: dict[str, dict], path: str | Path) -> None:
    """ROC curves (probability of detection against false detection), one panel per threshold."""

    def curve(scores: dict, u) -> tuple[list, list, str]:
        area = scores["roc_area"][u]
        return scores["roc"][u]["pofd"], scores["roc"][u]["pod"], "" if area is None else f" (area {area:.2f})"

    axes = ("probability of false detection", "probability of detection")
    _panels_by_threshold(probabilistic, curve, axes, "ROC, R ≥ {u:g} mm/h", "lower right", path)


def _panels_by_threshold(
    probabilistic: dict[str, dict], curve, axis_labels: tuple[str, str], title: str, legend: str, path: str | Path
) -> None:
    """One unit-square panel per threshold, one line per method: ``curve(scores, u) -> (x, y, label suffix)``."""
    thresholds = list(next(iter(probabilistic.values()))["bss"])
    fig, axes = plt.subplots(1, len(thresholds), figsize=(4.2 * len(thresholds), 4.2), squeeze=False)
    for ax, u in zip(axes[0], thresholds, strict=True):
        ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
        for method, scores in probabilistic.items():
            x, y, suffix = curve(scores, u)
            ax.plot(x, y, marker="o", ms=3, label=method + suffix)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        ax.set_title(title.format(u=float(u)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc=legend)
    fig.tight_layout()
    _save_figure(fig, path)
