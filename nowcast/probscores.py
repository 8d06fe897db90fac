"""Probabilistic verification, accumulated window by window: update / compute.

Scores of exceedance probabilities ``P(R ≥ u)`` and of ensembles, through
``pysteps.verification`` where it has them (reliability diagram, ROC curve and area, CRPS, rank
histogram); the Brier score and its skill against the sample climatology are sums kept here:

    BS = mean((p - o)²),   BSS = 1 - BS / (ō (1 - ō)),

with ``o`` the observed event (0/1) and ``ō`` its frequency over every scored pixel of that lead
time (the climatology a forecaster would otherwise issue; its Brier score is ``ō (1 - ō)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nowcast._quiet import import_pysteps


class ProbabilisticScorer:
    """Probabilistic scores of one method at event thresholds ``u`` (mm/h), per lead time.

    Parameters
    ----------
    thresholds
        Event thresholds, mm/h.
    n_lead
        Number of lead times.
    members
        Ensemble size, for CRPS and the rank histogram; None for a method without members.
    n_bins
        Probability bins of the reliability diagram (and ROC probability thresholds).

    """

    def __init__(self, thresholds: Sequence[float], n_lead: int, members: int | None = None, n_bins: int = 10) -> None:
        import_pysteps()
        from pysteps.verification import ensscores, probscores

        self._prob, self._ens = probscores, ensscores
        self.thresholds = [float(u) for u in thresholds]
        shape = (len(self.thresholds), n_lead)
        self.squared_error = np.zeros(shape)
        self.events = np.zeros(shape)
        self.count = np.zeros(shape)
        self.reliability = [probscores.reldiag_init(u, n_bins=n_bins, min_count=1) for u in self.thresholds]
        self.roc = [probscores.ROC_curve_init(u, n_prob_thrs=n_bins) for u in self.thresholds]
        self.members = members
        self.crps = [probscores.CRPS_init() for _ in range(n_lead)] if members else None
        self.rank = ensscores.rankhist_init(members, X_min=0.1) if members else None

    def update(
        self, probability: np.ndarray, observed: np.ndarray, valid: np.ndarray, members: np.ndarray | None = None
    ) -> None:
        """Add one window.

        Parameters
        ----------
        probability
            ``P(R ≥ u)``, ``(U, T, H, W)`` in [0, 1].
        observed
            Observed rain rate, mm/h, ``(T, H, W)``.
        valid
            Pixels to score, ``(T, H, W)`` bool.
        members
            The ensemble ``(M, T, H, W)`` mm/h, when the method has members.

        """
        obs = np.where(valid, observed, np.nan)
        for k, u in enumerate(self.thresholds):
            p = np.where(valid, probability[k], np.nan)
            event = (obs >= u).astype(float)
            error = np.where(valid, (p - event) ** 2, 0.0)
            self.squared_error[k] += error.sum(axis=(1, 2))
            self.events[k] += np.where(valid, event, 0.0).sum(axis=(1, 2))
            self.count[k] += valid.sum(axis=(1, 2))
            self._prob.reldiag_accum(self.reliability[k], p.ravel(), obs.ravel())
            self._prob.ROC_curve_accum(self.roc[k], p.ravel(), obs.ravel())
        if self.members and members is not None:
            ens = np.where(valid[None], members, np.nan)
            for t in range(obs.shape[0]):
                self._prob.CRPS_accum(self.crps[t], ens[:, t], obs[t])
            self._ens.rankhist_accum(self.rank, ens.reshape(ens.shape[0], -1), obs.ravel())

    def compute(self) -> dict:
        """Scores keyed by threshold (a float, mm/h).

        ``brier`` and ``bss``: ``{u: {"by_lead": [...], "mean": x}}`` (mean: pooled over leads);
        ``roc_area``: ``{u: x}``; ``roc``: ``{u: {"pofd": [...], "pod": [...]}}``; ``reliability``:
        ``{u: {"forecast": [...], "observed": [...], "count": [...], "term": x}}`` (mean forecast
        probability and observed frequency per bin, NaN-free: empty bins are left out; ``term`` is
        Murphy's reliability term Σ n_k (f_k − o_k)² / N, 0 for perfect reliability). With members also ``crps``
        (mm/h, ``{"by_lead", "mean"}``) and ``rank_histogram`` (``M + 1`` frequencies).
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            brier = self.squared_error / self.count
            base = self.events / self.count
            bss = 1.0 - brier / (base * (1.0 - base))
            pooled_brier = self.squared_error.sum(axis=1) / self.count.sum(axis=1)
            pooled_clim = (base * (1.0 - base) * self.count).sum(axis=1) / self.count.sum(axis=1)
            pooled_bss = 1.0 - pooled_brier / pooled_clim
        out: dict = {"brier": {}, "bss": {}, "roc_area": {}, "roc": {}, "reliability": {}}
        for k, u in enumerate(self.thresholds):
            out["brier"][u] = _summary(brier[k], pooled_brier[k])
            out["bss"][u] = _summary(bss[k], pooled_bss[k])
            pofd, pod, area = self._prob.ROC_curve_compute(self.roc[k], compute_area=True)
            out["roc_area"][u] = _number(area)
            out["roc"][u] = {"pofd": [_number(v) for v in pofd], "pod": [_number(v) for v in pod]}
            out["reliability"][u] = self._reliability(k)
        if self.members:
            crps = np.array([self._prob.CRPS_compute(c) if c["n"] else np.nan for c in self.crps])
            out["crps"] = _summary(crps, float(np.nanmean(crps)) if np.isfinite(crps).any() else np.nan)
            out["rank_histogram"] = [float(v) for v in self._ens.rankhist_compute(self.rank)]
        return out

    def _reliability(self, k: int) -> dict:
        table = self.reliability[k]
        count = np.asarray(table["num_idx"], dtype=float)
        used = count > 0
        forecast = np.asarray(table["X_sum"])[used] / count[used]
        observed = np.asarray(table["Y_sum"])[used] / count[used]
        # Murphy's reliability term of the Brier score over the bins: lower is more reliable
        term = float(np.sum(count[used] * (forecast - observed) ** 2) / count.sum()) if used.any() else None
        return {
            "forecast": forecast.tolist(),
            "observed": observed.tolist(),
            "count": count[used].astype(int).tolist(),
            "term": term,
        }


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _summary(values: np.ndarray, pooled: float) -> dict:
    return {"by_lead": [_number(v) for v in np.asarray(values, dtype=float)], "mean": _number(pooled)}
