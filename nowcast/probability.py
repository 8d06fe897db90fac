"""Exceedance probabilities ``P(R ≥ u)`` per threshold and lead time, from any forecast method.

* An ensemble ``(M, T, H, W)`` with ``M > 1`` (STEPS): the fraction of members at or above ``u``
  (optionally of each member's neighbourhood, as below).
* One deterministic forecast (the network, extrapolation): the fraction of pixels at or above ``u``
  in a square neighbourhood whose half-width grows linearly with lead time, ``radius_km =
  km_per_minute × lead``: the neighbourhood ensemble of Theis et al. (2005, Meteorol. Appl. 12), the
  spatial uncertainty of a forecast growing with its lead. :data:`NEIGHBOURHOOD_KM_PER_MINUTE` was
  chosen by Brier skill on the validation radar (see ``benchmarks/probabilistic.py``).

Pixels without data (NaN in the forecast) stay NaN and do not count in a neighbour's fraction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from nowcast.errors import UserError

#: Neighbourhood half-width growth, km per minute of lead time: 30 km at +60 min. Chosen by mean
#: Brier skill at 1 and 5 mm/h on the validation radar (RMI) among 0, 0.1, 0.2, 0.3, 0.5 and 0.8
#: (``benchmarks/results/probabilistic/neighbourhood_choice.md``).
NEIGHBOURHOOD_KM_PER_MINUTE = 0.5
#: The network's probabilities by default: its forecast advected along this many motions perturbed
#: as STEPS perturbs its members' (one network pass), each member with a neighbourhood growing by
#: :data:`MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE`. Chosen on the validation radar (RMI) by mean Brier
#: skill at 1 and 5 mm/h: 0.271 against 0.258 for the single forecast with its neighbourhood
#: (``benchmarks/results/probabilistic/designs.md``). The growth was chosen again for the GPU
#: recipe's models (round 12, two fold models, ``designs_round12.md``): 0.5 km/min, summed mean
#: Brier skill 0.511 against 0.509 at 0.4 and 0.501 at the previous 0.3. Since round 27 the forecast
#: the members are made from carries the deterministic forecast's trend (``forecast.TREND_WEIGHT``):
#: on RMI, over eight fold models, summed mean Brier skill 3.091 against 2.970 at 1 mm/h and 1.215
#: against 0.993 at 5 mm/h (``benchmarks/results/probabilistic/member_trend_round27.md``); since
#: round 28 at their own weight (``forecast.MEMBER_TREND_WEIGHT``: 1.25, ``member_trend_round28.md``;
#: 2 since round 29, ``member_trend_round29.md``).
MODEL_MEMBERS = 20
MEMBER_NEIGHBOURHOOD_KM_PER_MINUTE = 0.5
#: Neighbourhood growth (km per minute of lead) over a probability head's ``P(R ≥ u)``: the head
#: works at the network's 4 km patch resolution and cannot spread an event as far as the motion's
#: error at long leads. Chosen on the validation radar (RMI) by mean Brier skill at 1 and 5 mm/h
#: (``benchmarks/results/probabilistic/designs_head.md``).
HEAD_NEIGHBOURHOOD_KM_PER_MINUTE = 0.2


@dataclass
class HeadProbabilities:
    """Exceedance probabilities a network gives itself, from its probability head.

    ``thresholds`` (mm/h) are the ones the head was trained for; ``make`` maps the indices of some
    of them to their probabilities ``(len(indices), T, H, W)`` in [0, 1], NaN without data, made
    when asked (only the thresholds asked for are advected). :func:`exceedance` takes them as they
    are for any of ``thresholds``.
    """

    thresholds: tuple[float, ...]
    make: Callable[[list[int]], np.ndarray]

    def __len__(self) -> int:  # one forecast: the single-forecast neighbourhood default does not apply
        return 1

    def select(self, thresholds: Sequence[float]) -> np.ndarray:
        """``(len(thresholds), T, H, W)``; a threshold the head was not trained for is a one-line error."""
        index = {float(u): k for k, u in enumerate(self.thresholds)}
        missing = untrained_thresholds(self.thresholds, thresholds)
        if missing:
            known = ", ".join(f"{u:g}" for u in self.thresholds)
            asked = ", ".join(f"{u:g}" for u in missing)
            raise UserError(f"the model's probability head gives P(R ≥ u) for u = {known} mm/h, not {asked}")
        return self.make([index[float(u)] for u in thresholds])


def untrained_thresholds(trained: Sequence[float], asked: Sequence[float]) -> list[float]:
    """The thresholds in ``asked`` (mm/h) that a probability head trained for ``trained`` cannot give."""
    known = {float(u) for u in trained}
    return [u for u in asked if float(u) not in known]


def neighbourhood_radius_px(lead_minutes: float, spacing_km: float, km_per_minute: float) -> int:
    """Half-width in pixels of the neighbourhood at one lead time."""
    return int(round(km_per_minute * lead_minutes / spacing_km))


def exceedance(
    members: np.ndarray | Sequence[np.ndarray],
    thresholds: Sequence[float],
    lead_minutes: Sequence[float],
    spacing_km: float = 1.0,
    km_per_minute: float | None = None,
) -> np.ndarray:
    """``P(R ≥ u)`` in [0, 1], ``(U, T, H, W)`` float32, from a method's output ``(M, T, H, W)`` mm/h.

    The mean over members of each member's neighbourhood fraction (see the module docstring), the
    neighbourhood growing by ``km_per_minute``: by default :data:`NEIGHBOURHOOD_KM_PER_MINUTE` for a
    single forecast and 0 (plain member fractions) for an ensemble. NaN where the forecast has no data.

    ``members`` may be any sized iterable of ``(T, H, W)`` members, such as
    :class:`nowcast.forecast.PerturbedMembers`, which makes each member only when it is read: the
    members are counted one at a time, so only the counts ``(U, T, H, W)`` are held, never all members.
    """
    if isinstance(members, HeadProbabilities):
        chosen = members.select(thresholds)
        if not km_per_minute:
            return chosen
        return _neighbourhood_mean(chosen, np.isfinite(chosen[0]), lead_minutes, spacing_km, km_per_minute)
    count = len(members)
    if km_per_minute is None:
        km_per_minute = NEIGHBOURHOOD_KM_PER_MINUTE if count == 1 else 0.0
    if isinstance(members, CountsExceeding):
        exceeding, no_data = members.exceeding(thresholds)
    else:
        exceeding, no_data = count_exceeding(members, thresholds)
    # the neighbourhood mean is linear and its mask is every member's: filter the member fraction once
    fraction = exceeding.astype(np.float32) / np.float32(count)
    return _neighbourhood_mean(fraction, ~no_data, lead_minutes, spacing_km, km_per_minute)


@runtime_checkable
class CountsExceeding(Protocol):
    """Members that count themselves (:class:`nowcast.forecast.PerturbedMembers`), as :func:`count_exceeding` would."""

    def exceeding(self, thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """``(U, T, H, W)`` counts and ``(T, H, W)`` no-data, as :func:`count_exceeding` returns them."""
        ...


def count_exceeding(members: Iterable[np.ndarray], thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Members at or above each threshold ``(U, T, H, W)`` uint16, and where any has no data ``(T, H, W)``.

    ``members`` yields ``(T, H, W)`` mm/h, NaN without data (counted as 0); one is held at a time.
    """
    exceeding, no_data = None, None
    for member in members:
        member = np.asarray(member, dtype=np.float32)
        if exceeding is None:
            exceeding = np.zeros((len(thresholds), *member.shape), dtype=np.uint16)
            no_data = np.zeros(member.shape, dtype=bool)
        no_data |= ~np.isfinite(member)
        filled = np.nan_to_num(member, nan=0.0)
        for k, threshold in enumerate(thresholds):
            exceeding[k] += filled >= threshold
    return exceeding, no_data


def neighbourhood_fraction(event: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    """Fraction of valid pixels with the event within ``radius`` pixels (a square), ``(H, W)``.

    ``event`` is 0/1, or a fraction of members in [0, 1] (the mean of their neighbourhood fractions).
    """
    if radius <= 0:
        return event.astype(np.float32)
    size = 2 * radius + 1
    hits = ndimage.uniform_filter(event.astype(np.float32), size=size, mode="constant")
    count = ndimage.uniform_filter(valid.astype(np.float32), size=size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(count > 0, hits / count, 0.0), 0.0, 1.0).astype(np.float32)


def _neighbourhood_mean(
    probability: np.ndarray,
    valid: np.ndarray,
    lead_minutes: Sequence[float],
    spacing_km: float,
    km_per_minute: float,
) -> np.ndarray:
    """Each ``(U, T, H, W)`` probability field averaged over its lead's neighbourhood; NaN where not valid.

    Only ``valid`` ``(T, H, W)`` pixels count in a neighbourhood (see :func:`neighbourhood_fraction`).
    """
    out = np.empty_like(probability)
    for k in range(len(probability)):
        for t, lead in enumerate(lead_minutes):
            radius = neighbourhood_radius_px(lead, spacing_km, km_per_minute)
            out[k, t] = neighbourhood_fraction(np.nan_to_num(probability[k, t]), valid[t], radius)
    out[:, ~valid] = np.nan
    return out
