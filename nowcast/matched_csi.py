"""A soft CSI of the forecast that a Lagrangian model's post-processing makes of the network's output.

At forecast time a Lagrangian model's frame carries on the last step's trend, is smoothed with a
Gaussian that widens with lead time and is then probability-matched to the last observation
(:mod:`nowcast.forecast`). After the matching, the forecast rains at or above ``u`` on exactly as
many pixels as the last observation does, and on the pixels where the smoothed frame ranks highest:
CSI at ``u`` depends only on the frame's ranks. The plain soft CSI of :func:`nowcast.training.soft_csi`
scores the network's raw values against a fixed level, a different forecast from the one scored.
:func:`matched_soft_csi` applies the same trend and smoothing to the network's output and sets the
level of each window and lead where the matching would put it: between the ``k``-th and
``k + 1``-th highest pixel, ``k`` being the number of pixels of the last input at or above ``u``.

Shapes: ``(B, T, 1, H, W)`` in model space (:class:`~nowcast.transforms.Transform`), ``T`` the
leads; ``inputs`` ``(B, T_in, 1, H, W)``, all in the frame that moves with the rain.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nowcast.transforms import Transform

#: Width of the sigmoid that softens the event indicator, in model space (as ``soft_csi``'s).
SOFT_WIDTH = 0.02


def post_processed(
    pred: torch.Tensor,
    inputs: torch.Tensor,
    step_minutes: torch.Tensor,
    transform: Transform,
    trend_weight: float,
    smoothing_km_per_minute: float,
    grid_km: float,
) -> torch.Tensor:
    """The network's frames with the forecast's trend and lead-time smoothing, ``(B, T, 1, H, W)`` model space.

    As the forecast does it, on rain rates: the frames are decoded (below 0 mm/h is 0), carry on
    ``trend_weight`` times the last input step's change of log rain
    (:func:`nowcast.forecast.continue_trend`, which may leave them below 0 mm/h, above −1) and are
    smoothed with a Gaussian of ``smoothing_km_per_minute · step · lead / grid_km`` pixels
    (:func:`nowcast.forecast.smooth_by_lead`; borders mirrored about the edge pixel).
    ``step_minutes`` ``(B,)``; ``transform`` is the radar models' ``log1p``. The result is
    ``log(1 + R) / log(1 + scale)`` of those rates, so only its ranks matter to the matching.
    """
    scale = math.log1p(transform.scale_mm_h)
    change = (inputs[:, -1:] - inputs[:, -2:-1]) * scale  # log1p(last) - log1p(previous)
    rates = (1.0 + transform.decode(pred)) * torch.exp(trend_weight * change) - 1.0
    if smoothing_km_per_minute > 0:
        frames = []
        for lead in range(pred.shape[1]):
            sigmas = smoothing_km_per_minute * step_minutes * (lead + 1) / grid_km  # (B,) pixels
            frames.append(torch.stack([_blur(r, float(s)) for r, s in zip(rates[:, lead], sigmas, strict=True)]))
        rates = torch.stack(frames, dim=1)
    return torch.log1p(rates.clamp_min(-1.0 + 1e-6)) / scale


def matched_levels(forecast: torch.Tensor, last: torch.Tensor, valid: torch.Tensor, level: float) -> torch.Tensor:
    """Per window and lead, the level that the matching puts between the forecast's wet and dry pixels.

    ``forecast`` ``(B, T, 1, H, W)``, ``last`` the last input ``(B, 1, 1, H, W)`` and ``level`` (``u``)
    in model space; ``valid`` ``(B, T, 1, H, W)``, 1 where the target was observed. ``k`` is the
    number of valid pixels where ``last ≥ u``; the result ``(B, T, 1, 1, 1)`` lies midway between the
    ``k``-th and ``k + 1``-th highest valid forecast pixels (+inf when ``k`` is 0, so nothing is wet;
    below every valid pixel when all are wet), without a gradient.
    """
    b, t = forecast.shape[:2]
    mask = valid > 0
    count = ((last >= level) & mask).flatten(2).sum(-1)  # (B, T)
    ranked = forecast.detach().masked_fill(~mask, -math.inf).flatten(2).sort(dim=-1, descending=True).values
    ranked = torch.cat([ranked, torch.full((b, t, 1), -math.inf, device=ranked.device)], dim=-1)
    above = ranked.gather(-1, (count - 1).clamp_min(0)[..., None])[..., 0]
    below = ranked.gather(-1, count[..., None])[..., 0]
    below = torch.where(torch.isfinite(below), below, above - 1.0)
    levels = torch.where(count > 0, (above + below) / 2, torch.full_like(above, math.inf))
    return levels.reshape(b, t, 1, 1, 1)


def matched_soft_csi(
    forecast: torch.Tensor, last: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, level: float
) -> torch.Tensor:
    """Soft CSI at ``level`` (model space) of ``forecast`` ranked as probability matching ranks it.

    The forecast's event indicator is ``sigmoid((forecast − m) / SOFT_WIDTH)`` with ``m`` from
    :func:`matched_levels`; the observed one is ``target ≥ level``; hits and union are summed over
    the valid pixels of the whole batch, as in :func:`nowcast.training.soft_csi`.
    """
    p = torch.sigmoid((forecast - matched_levels(forecast, last, valid, level)) / SOFT_WIDTH)
    o = (target >= level).to(forecast.dtype)
    hits = (p * o * valid).sum()
    union = ((p + o - p * o) * valid).sum()
    return hits / union.clamp_min(1.0)


def _blur(frame: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(1, H, W)`` with ``sigma`` pixels, borders mirrored about the edge pixel (0: unchanged)."""
    if sigma <= 0:
        return frame
    radius = min(int(math.ceil(4 * sigma)), min(frame.shape[-2:]) - 1)  # scipy's truncate=4
    x = torch.arange(-radius, radius + 1, dtype=frame.dtype, device=frame.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.pad(frame[None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[0]
