"""Verification scores, accumulated over batches: update / merge / compute.

Every accumulator takes forecasts and observations shaped ``(N, T, H, W)`` (N samples,
T lead times) in physical units (mm/h for radar, intensity for Moving-MNIST) and an optional
boolean ``valid`` mask of the same shape; invalid (no-data) pixels count nowhere. Scores are
computed from sums over all samples, never by averaging per-sample ratios.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import uniform_filter

#: HKO-7 balanced-loss weights (Shi et al. 2017): weight 1 below 2 mm/h, then 2, 5, 10, 30.
HKO7_EDGES_MM_H = (2.0, 5.0, 10.0, 30.0)
HKO7_WEIGHTS = (1.0, 2.0, 5.0, 10.0, 30.0)


def _valid(observed: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    finite = np.isfinite(observed)
    return finite if valid is None else finite & valid.astype(bool)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


class ContingencyTable:
    """Hits, misses, false alarms and correct negatives per threshold and lead time.

    An event is ``value >= threshold``. Arrays of counts have shape ``(n_thresholds, n_lead)``.
    """

    def __init__(self, thresholds: Sequence[float], n_lead: int) -> None:
        self.thresholds = np.asarray(thresholds, dtype=float)
        shape = (len(self.thresholds), n_lead)
        self.hits = np.zeros(shape, dtype=np.int64)
        self.misses = np.zeros(shape, dtype=np.int64)
        self.false_alarms = np.zeros(shape, dtype=np.int64)
        self.correct_negatives = np.zeros(shape, dtype=np.int64)

    def update(self, forecast: np.ndarray, observed: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the counts of one batch, arrays ``(N, T, H, W)``."""
        ok = _valid(observed, valid)
        for k, thr in enumerate(self.thresholds):
            f = (forecast >= thr) & ok
            o = (observed >= thr) & ok
            self.hits[k] += (f & o).sum(axis=(0, 2, 3))
            self.misses[k] += (~f & o).sum(axis=(0, 2, 3))
            self.false_alarms[k] += (f & ~o).sum(axis=(0, 2, 3))
            self.correct_negatives[k] += (~f & ~o & ok).sum(axis=(0, 2, 3))

    def merge(self, other: ContingencyTable) -> None:
        """Add another table's counts (e.g. from another worker)."""
        self.hits += other.hits
        self.misses += other.misses
        self.false_alarms += other.false_alarms
        self.correct_negatives += other.correct_negatives

    def compute(self) -> dict[str, np.ndarray]:
        """CSI, POD, FAR, frequency bias, HSS and ETS, each ``(n_thresholds, n_lead)``; NaN if undefined."""
        a, b, c, d = (x.astype(float) for x in (self.hits, self.false_alarms, self.misses, self.correct_negatives))
        n = a + b + c + d
        a_random = _safe_ratio((a + b) * (a + c), n)
        return {
            "csi": _safe_ratio(a, a + b + c),
            "pod": _safe_ratio(a, a + c),
            "far": _safe_ratio(b, a + b),
            "bias": _safe_ratio(a + b, a + c),
            "hss": _safe_ratio(2 * (a * d - b * c), (a + c) * (c + d) + (a + b) * (b + d)),
            "ets": _safe_ratio(a - a_random, a + b + c - a_random),
        }


class ErrorSums:
    """Squared and absolute errors per lead, plain and HKO-7 balanced (B-MSE, B-MAE).

    ``mse``/``mae`` are per valid pixel; ``mse_frame``/``mae_frame`` are per frame (the sum over
    the ``H×W`` pixels of one frame, as the Moving-MNIST literature reports). Balanced errors
    weight each pixel by :data:`HKO7_WEIGHTS` of the observed rain rate.
    """

    def __init__(self, n_lead: int, balanced: bool = False) -> None:
        self.balanced = balanced
        self.sq = np.zeros(n_lead)
        self.abs = np.zeros(n_lead)
        self.w_sq = np.zeros(n_lead)
        self.w_abs = np.zeros(n_lead)
        self.count = np.zeros(n_lead)
        self.frames = np.zeros(n_lead)
        self.pixels_per_frame = 0

    def update(self, forecast: np.ndarray, observed: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one batch, arrays ``(N, T, H, W)``."""
        ok = _valid(observed, valid)
        err = np.where(ok, forecast - np.where(ok, observed, 0.0), 0.0)
        self.sq += (err**2).sum(axis=(0, 2, 3))
        self.abs += np.abs(err).sum(axis=(0, 2, 3))
        self.count += ok.sum(axis=(0, 2, 3))
        self.frames += forecast.shape[0]
        self.pixels_per_frame = forecast.shape[2] * forecast.shape[3]
        if self.balanced:
            w = hko7_weights(np.where(ok, observed, 0.0))
            self.w_sq += (w * err**2).sum(axis=(0, 2, 3))
            self.w_abs += (w * np.abs(err)).sum(axis=(0, 2, 3))

    def merge(self, other: ErrorSums) -> None:
        """Add another accumulator's sums."""
        for name in ("sq", "abs", "w_sq", "w_abs", "count", "frames"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.pixels_per_frame = max(self.pixels_per_frame, other.pixels_per_frame)

    def compute(self) -> dict[str, np.ndarray]:
        """Scores per lead, each ``(n_lead,)``."""
        scores = {
            "mse": _safe_ratio(self.sq, self.count),
            "mae": _safe_ratio(self.abs, self.count),
            "mse_frame": _safe_ratio(self.sq, self.count) * self.pixels_per_frame,
            "mae_frame": _safe_ratio(self.abs, self.count) * self.pixels_per_frame,
        }
        if self.balanced:
            scores["b_mse"] = _safe_ratio(self.w_sq, self.count)
            scores["b_mae"] = _safe_ratio(self.w_abs, self.count)
        return scores


def hko7_weights(rain_rate: np.ndarray) -> np.ndarray:
    """HKO-7 balanced-loss weights for rain rates in mm/h."""
    return np.asarray(HKO7_WEIGHTS)[np.digitize(rain_rate, HKO7_EDGES_MM_H)]


class FractionsSkill:
    """Fractions skill score (Roberts & Lean 2008) per threshold, scale and lead.

    Fractions are the share of event pixels in a ``scale×scale`` window (``uniform_filter``,
    constant zero padding); no-data pixels are non-events and are left out of the sums.
    """

    def __init__(self, thresholds: Sequence[float], scales: Sequence[int], n_lead: int) -> None:
        self.thresholds = list(thresholds)
        self.scales = [int(s) for s in scales]
        shape = (len(self.thresholds), len(self.scales), n_lead)
        self.num = np.zeros(shape)
        self.den = np.zeros(shape)

    def update(self, forecast: np.ndarray, observed: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one batch, arrays ``(N, T, H, W)``."""
        ok = _valid(observed, valid)
        for k, thr in enumerate(self.thresholds):
            f_bin = ((forecast >= thr) & ok).astype(float)
            o_bin = ((observed >= thr) & ok).astype(float)
            for s, scale in enumerate(self.scales):
                size = (1, 1, scale, scale)
                pf = uniform_filter(f_bin, size=size, mode="constant")
                po = uniform_filter(o_bin, size=size, mode="constant")
                self.num[k, s] += np.where(ok, (pf - po) ** 2, 0.0).sum(axis=(0, 2, 3))
                self.den[k, s] += np.where(ok, pf**2 + po**2, 0.0).sum(axis=(0, 2, 3))

    def merge(self, other: FractionsSkill) -> None:
        """Add another accumulator's sums."""
        self.num += other.num
        self.den += other.den

    def compute(self) -> np.ndarray:
        """FSS ``(n_thresholds, n_scales, n_lead)``; NaN where neither field has events."""
        return 1.0 - _safe_ratio(self.num, self.den)


class StructuralSimilarity:
    """Mean SSIM per lead (scikit-image, Gaussian-free 7×7 windows), for fields without no-data."""

    def __init__(self, n_lead: int, data_range: float) -> None:
        self.data_range = data_range
        self.total = np.zeros(n_lead)
        self.count = np.zeros(n_lead)

    def update(self, forecast: np.ndarray, observed: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one batch, arrays ``(N, T, H, W)``; NaN observations are replaced by 0."""
        from skimage.metrics import structural_similarity

        observed = np.nan_to_num(observed)
        for n in range(forecast.shape[0]):
            for t in range(forecast.shape[1]):
                self.total[t] += structural_similarity(observed[n, t], forecast[n, t], data_range=self.data_range)
                self.count[t] += 1

    def merge(self, other: StructuralSimilarity) -> None:
        """Add another accumulator's sums."""
        self.total += other.total
        self.count += other.count

    def compute(self) -> np.ndarray:
        """Mean SSIM per lead ``(n_lead,)``."""
        return _safe_ratio(self.total, self.count)


class Scorer:
    """All scores of one method, accumulated batch by batch.

    Parameters
    ----------
    thresholds
        Event thresholds for the contingency scores (mm/h, or intensity for Moving-MNIST).
    n_lead
        Number of lead times.
    fss_scales
        Window sizes in pixels for the FSS; empty to skip it.
    ssim_range
        Data range for SSIM; None to skip it (radar).
    balanced
        Also compute the HKO-7 B-MSE and B-MAE (radar in mm/h).

    """

    def __init__(
        self,
        thresholds: Sequence[float],
        n_lead: int,
        fss_scales: Sequence[int] = (),
        ssim_range: float | None = None,
        balanced: bool = False,
    ) -> None:
        self.thresholds = [float(t) for t in thresholds]
        self.table = ContingencyTable(self.thresholds, n_lead)
        self.errors = ErrorSums(n_lead, balanced)
        self.fss = FractionsSkill(self.thresholds, fss_scales, n_lead) if fss_scales else None
        self.ssim = StructuralSimilarity(n_lead, ssim_range) if ssim_range else None

    def _parts(self) -> list:
        return [p for p in (self.table, self.errors, self.fss, self.ssim) if p is not None]

    def update(self, forecast: np.ndarray, observed: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one batch, arrays ``(N, T, H, W)`` in physical units."""
        forecast = np.asarray(forecast, dtype=np.float64)
        observed = np.asarray(observed, dtype=np.float64)
        for part in self._parts():
            part.update(forecast, observed, valid)

    def merge(self, other: Scorer) -> None:
        """Add another scorer's sums (same settings)."""
        for mine, theirs in zip(self._parts(), other._parts(), strict=True):
            mine.merge(theirs)

    def compute(self) -> dict:
        """Scores as ``{name: {"by_lead": [...], "mean": x}}``; categorical ones keyed by threshold.

        Keys are numbers: thresholds are floats (mm/h), FSS scales ints (pixels); ``json.dumps``
        writes them as ``"1.0"`` and ``"17"``. ``mean`` is the mean over lead times of the
        per-lead score.
        """
        out: dict = {}
        for name, values in self.table.compute().items():
            out[name] = {t: _summary(values[k]) for k, t in enumerate(self.thresholds)}
        for name, values in self.errors.compute().items():
            out[name] = _summary(values)
        if self.fss is not None:
            fss = self.fss.compute()
            out["fss"] = {
                t: {int(s): _summary(fss[k, j]) for j, s in enumerate(self.fss.scales)}
                for k, t in enumerate(self.thresholds)
            }
        if self.ssim is not None:
            out["ssim"] = _summary(self.ssim.compute())
        return out


def _summary(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return {
        "by_lead": [None if not np.isfinite(v) else float(v) for v in values],
        "mean": float(finite.mean()) if finite.size else None,
    }
