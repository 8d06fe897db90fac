"""One physical grid: resample rain-rate fields to a common spacing and back, keeping rain totals.

The network sees pixels, so the same storm must move the same number of pixels per frame on
every radar: fields are resampled to ``grid_km`` (1 km by default) before the network and back
to the input grid after. Coarsening averages (anti-aliased), refining interpolates bilinearly;
both are NaN-aware (no-data stays no-data) and rescale the result so that the mean rain rate
over valid pixels, i.e. the rain total per unit area, is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from skimage.transform import resize

#: Kilometres per degree of latitude (spherical Earth, R = 6371 km).
KM_PER_DEGREE = 111.195

_UNIT_KM = {"m": 1e-3, "metre": 1e-3, "meter": 1e-3, "metres": 1e-3, "meters": 1e-3, "km": 1.0, "kilometre": 1.0}


def grid_spacing_km(ds: xr.Dataset | xr.DataArray) -> tuple[float, float]:
    """Grid spacing ``(dy, dx)`` in km from the ``y``/``x`` coordinates and their units.

    Projected coordinates in m or km; on a lon/lat grid (units ``degrees_*``) the spacing at the
    grid's central latitude. Without coordinates, 1 km is assumed.
    """
    if "x" not in ds.coords or "y" not in ds.coords or ds.sizes["x"] < 2 or ds.sizes["y"] < 2:
        return 1.0, 1.0
    x, y = ds["x"], ds["y"]
    dx = float(abs(x.values[1] - x.values[0]))
    dy = float(abs(y.values[1] - y.values[0]))
    unit = str(x.attrs.get("units", "m")).strip().lower()
    if unit.startswith("degree"):
        lat = float(np.mean(y.values))
        return dy * KM_PER_DEGREE, dx * KM_PER_DEGREE * np.cos(np.radians(lat))
    factor = _UNIT_KM.get(unit, 1e-3)
    return dy * factor, dx * factor


def shape_at(shape: tuple[int, int], spacing_km: tuple[float, float], grid_km: float) -> tuple[int, int]:
    """``(H, W)`` of a field of ``shape`` at ``spacing_km`` when resampled to ``grid_km``."""
    return (
        max(1, int(round(shape[0] * spacing_km[0] / grid_km))),
        max(1, int(round(shape[1] * spacing_km[1] / grid_km))),
    )


def resample(fields: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample ``(..., H, W)`` rain rates (mm/h, NaN = no data) to ``(..., *shape)``.

    A pixel of the result is no-data where less than half of its area was valid. Each field's
    mean over valid pixels is kept (rain totals are conserved up to the change of valid area).
    """
    fields = np.asarray(fields, dtype=np.float32)
    if fields.shape[-2:] == tuple(shape):
        return fields.copy()
    lead = fields.shape[:-2]
    flat = fields.reshape(-1, *fields.shape[-2:])
    out = np.empty((flat.shape[0], *shape), dtype=np.float32)
    coarsen = shape[0] < flat.shape[1] or shape[1] < flat.shape[2]
    for i, field in enumerate(flat):
        valid = np.isfinite(field)
        if valid.all():  # the common case after advection: no weights to carry
            values = _linear(field, shape, coarsen)
            before, after = float(field.mean(dtype=np.float64)), float(values.mean(dtype=np.float64))
        else:
            filled = np.where(valid, field, 0.0).astype(np.float32)
            weight = _linear(valid.astype(np.float32), shape, coarsen)
            total = _linear(filled, shape, coarsen)
            new_valid = weight >= 0.5
            values = np.where(new_valid, total / np.maximum(weight, 1e-6), np.nan)
            before = float(filled[valid].mean()) if valid.any() else 0.0
            after = float(np.nanmean(values)) if new_valid.any() else 0.0
        out[i] = values * np.float32(before / after) if after > 0 else values
    return out.reshape(*lead, *shape)


def _linear(field: np.ndarray, shape: tuple[int, int], coarsen: bool) -> np.ndarray:
    """``field`` ``(H, W)`` float32 resampled linearly to ``shape``, pixel centres aligned, edges held.

    Coarsening is scikit-image's ``resize`` with its anti-aliasing filter. Refining is the same
    bilinear interpolation (``order=1, mode="edge"``) done by torch, 20 times faster on a 512 × 512
    result (equal to float32 rounding of the sample positions, tested).
    """
    if coarsen:
        return resize(field, shape, order=1, anti_aliasing=True, mode="edge").astype(np.float32)
    image = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(image, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()
