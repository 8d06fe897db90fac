"""Radar windows in the frame that moves with the rain, computed once and cached under ``data/``.

For every source (``data.paths`` for training, ``data.val_paths`` for validation and test: a
radar that is not trained on) and every window of ``t_in + t_out`` frames (every
``window_every`` frames, at each temporal stride): resample to ``grid_km``, estimate
Lucas–Kanade motion from the inputs on the whole grid, advect the inputs to the analysis time and
bring the targets back to it (:mod:`nowcast.lagrangian`), then keep ``crops_per_window`` crops
where it rains. Mosaics larger than ``max_size_km`` are first cut into up to ``max_boxes``
boxes of that size where it rains, each read on its own (a continental mosaic is never held
whole). Items are flipped and rotated at random in training (valid once motion is removed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from nowcast import lagrangian, regrid
from nowcast.baselines import motion_field
from nowcast.checkpoint import atomic_write
from nowcast.data import DataBundle
from nowcast.errors import UserError
from nowcast.io.radar import ZR, expand_paths, open_radar, split_sequences
from nowcast.motion import MOTION_STRIDE
from nowcast.transforms import RAIN_FLOOR_MM_H, Transform, dry_below_floor

log = logging.getLogger(__name__)

#: The arrays of a cache file.
CACHED_ARRAYS = ("frames", "valid", "step_minutes", "velocity")
#: Settings that change the cached arrays (the cache key).
CACHE_KEYS = (
    "t_in", "t_out", "strides", "grid_km", "crop", "crops_per_window", "window_every", "max_size_km", "max_boxes",
    "wet_threshold", "min_wet_fraction", "zr_a", "zr_b", "transform_scale_mm_h", "seed",
)  # fmt: skip


def rainy_boxes(
    rates: np.ndarray, size: tuple[int, int], count: int, min_wet_fraction: float
) -> list[tuple[slice, slice]]:
    """Up to ``count`` non-overlapping ``size`` boxes of ``(T, H, W)`` with the most wet pixels, wettest first.

    A box is kept only while at least ``min_wet_fraction`` of it is wet (≥ 0.5 mm/h) on average;
    the wettest box is always kept.
    """
    from scipy.ndimage import uniform_filter

    wet = np.nanmean((np.nan_to_num(rates) >= 0.5).astype(np.float32), axis=0)
    score = uniform_filter(wet, size=size, mode="constant")
    h, w = size
    half_h, half_w = h // 2, w // 2
    inner = score[half_h : rates.shape[1] - (h - half_h) + 1, half_w : rates.shape[2] - (w - half_w) + 1].copy()
    boxes: list[tuple[slice, slice]] = []
    while len(boxes) < count:
        top, left = np.unravel_index(int(np.argmax(inner)), inner.shape)
        if boxes and inner[top, left] < min_wet_fraction:
            break
        boxes.append((slice(top, top + h), slice(left, left + w)))
        # no later box may overlap this one
        inner[max(0, top - h + 1) : top + h, max(0, left - w + 1) : left + w] = -np.inf
    return boxes


def source_regions(path: str, cfg: Any) -> list[tuple[float, float, float, float] | None]:
    """Regions of one source to read: ``[None]`` (all of it) when it fits in ``max_size_km``.

    A larger mosaic gets up to ``max_boxes`` non-overlapping boxes of that size where it rains,
    found on three frames (first, middle, last) so that a continental mosaic is never read whole
    over time. Regions are ``(x_min, x_max, y_min, y_max)`` in the data's coordinates.
    """
    files = expand_paths(path)
    probe_files = sorted({files[0], files[len(files) // 2], files[-1]})
    probe = open_radar(probe_files, zr=ZR(cfg.zr_a, cfg.zr_b), skip_bad=True)
    spacing = regrid.grid_spacing_km(probe)
    size = (int(cfg.max_size_km / spacing[0]), int(cfg.max_size_km / spacing[1]))
    if probe.sizes["y"] <= size[0] and probe.sizes["x"] <= size[1]:
        return [None]
    size = (min(size[0], probe.sizes["y"]), min(size[1], probe.sizes["x"]))
    x, y = probe["x"].values, probe["y"].values
    regions = []
    for rows, cols in rainy_boxes(probe["rainfall_rate"].values, size, cfg.max_boxes, cfg.min_wet_fraction):
        xs, ys = x[cols], y[rows]
        regions.append((float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())))
    log.info("%s: %d box(es) of %g km where it rains", path, len(regions), cfg.max_size_km)
    return regions


def source_sequences(path: str, cfg: Any) -> list[tuple[np.ndarray, float]]:
    """Regular sequences of one source on the common grid: ``[(rates (T, h, w) mm/h, step minutes)]``."""
    out = []
    for region in source_regions(path, cfg):
        ds = open_radar(path, zr=ZR(cfg.zr_a, cfg.zr_b), region=region, skip_bad=True)
        spacing = regrid.grid_spacing_km(ds)
        for seq, step in split_sequences(ds):
            values = dry_below_floor(seq["rainfall_rate"].values)  # a noise floor is no rain, as in predict
            out.append((regrid.resample(values, regrid.shape_at(values.shape[-2:], spacing, cfg.grid_km)), step))
    return out


def window_crops(
    window: np.ndarray, t_in: int, cfg: Any, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Lagrangian crops of one window ``(t_in + t_out, h, w)`` mm/h: ``[(rates, valid, motion)]``.

    ``rates`` and ``valid`` ``(T, c, c)``; ``motion`` ``(2, c, c)``, the window's motion there in
    pixels per step of the window.
    """
    t_out = window.shape[0] - t_in
    velocity = motion_field(window[:t_in])
    forward = lagrangian.displacements(velocity, t_in - 1)
    backward = lagrangian.displacements(velocity, t_out, backward=True)
    frames = np.concatenate(
        [
            lagrangian.inputs_to_lagrangian(window[:t_in], forward),
            lagrangian.targets_to_lagrangian(window[t_in:], backward),
        ]
    )
    h, w = frames.shape[-2:]
    size = min(cfg.crop, h, w)
    wet = np.nan_to_num(frames[t_in - 1]) >= cfg.wet_threshold
    crops = []
    for _ in range(cfg.crops_per_window):
        best, best_wet = (0, 0), -1.0
        for _ in range(20):
            top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            fraction = float(wet[top : top + size, left : left + size].mean())
            if fraction > best_wet:
                best, best_wet = (top, left), fraction
            if fraction >= cfg.min_wet_fraction:
                break
        if best_wet < cfg.min_wet_fraction:
            continue
        rows, cols = slice(best[0], best[0] + size), slice(best[1], best[1] + size)
        crop = frames[:, rows, cols]
        crops.append((crop, np.isfinite(crop), velocity[:, rows, cols]))
    return crops


def build_cache(paths: list[str], cfg: Any) -> dict[str, np.ndarray]:
    """Lagrangian crops of every window of ``paths``, one cache file per source under ``cfg.cache_dir``."""
    parts = [source_cache(str(path), cfg) for path in paths]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def source_cache(path: str, cfg: Any) -> dict[str, np.ndarray]:
    """Lagrangian crops of one source: ``frames``, ``valid``, ``step_minutes`` and ``velocity``.

    ``frames`` (N, T, c, c) float16 model space, ``valid`` alike, ``velocity`` (N, 2, c, c) float16
    pixels per step.
    """
    settings = {k: (list(cfg[k]) if k == "strides" else cfg[k]) for k in CACHE_KEYS}
    settings["motion_stride"] = MOTION_STRIDE  # the motion grid changes the cached windows too
    settings["rain_floor_mm_h"] = RAIN_FLOOR_MM_H  # and so does what counts as no rain
    settings["arrays"] = list(CACHED_ARRAYS)  # a cache written before an array was added is not reused
    key = hashlib.sha256(json.dumps([str(Path(path).resolve()), settings], sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(cfg.cache_dir) / f"lagrangian_{Path(path).name}_{key}.npz"
    if cache.exists():
        with np.load(cache) as data:
            return dict(data)
    transform = Transform("log1p", cfg.transform_scale_mm_h)
    n_frames = cfg.t_in + cfg.t_out
    rng = np.random.default_rng(cfg.seed)
    frames, valid, steps, velocity = [], [], [], []
    jobs = [
        (seq, start, stride, step)
        for seq, step in source_sequences(path, cfg)
        for stride in cfg.strides
        for start in range(0, len(seq) - (n_frames - 1) * stride, cfg.window_every)
    ]
    bar = tqdm(jobs, desc=f"lagrangian windows {Path(path).name}", unit="window", disable=not sys.stderr.isatty())
    for seq, start, stride, step in bar:
        window = seq[start : start + (n_frames - 1) * stride + 1 : stride]
        for crop, mask, motion in window_crops(window, cfg.t_in, cfg, rng):
            frames.append(transform.encode(np.nan_to_num(crop)).astype(np.float16))
            valid.append(mask)
            steps.append(step * stride)
            velocity.append(motion.astype(np.float16))
    if not frames:
        raise UserError(f"{path}: no rainy window of {n_frames} frames (lower data.min_wet_fraction)")
    arrays = {
        "frames": np.stack(frames),
        "valid": np.stack(valid),
        "step_minutes": np.asarray(steps, np.float32),
        "velocity": np.stack(velocity),
    }
    save_npz(cache, arrays)
    log.info("cached %d Lagrangian crops of %s in %s", len(frames), path, cache)
    return arrays


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` (uncompressed ``.npz``) atomically, as checkpoints are written."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    atomic_write(path, write)


class LagrangianWindows(Dataset):
    """Cached Lagrangian crops; item ``i`` is a pure function of ``(seed, i)``.

    Items: ``frames`` ``(T, 1, c, c)`` (model space), ``valid`` (1 where the pixel was observed
    and did not come from outside the domain), ``step_minutes`` and ``motion`` ``(2, c, c)``
    (pixels per step). With ``augment``, each item is rotated and mirrored at random (its motion
    turned with it, :func:`nowcast.lagrangian.turn_motion`), and with ``jitter_db > 0`` all its
    rain rates are multiplied by one factor 10^(d/10), d uniform in ±``jitter_db`` dB (a radar
    calibrated a little higher or lower; ``transform`` maps model space to mm/h and back).
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        augment: bool,
        seed: int,
        length: int | None = None,
        jitter_db: float = 0.0,
        transform: Transform | None = None,
    ) -> None:
        if jitter_db > 0 and transform is None:
            raise ValueError("an intensity jitter needs the transform of the cached frames")
        self.arrays = arrays
        self.augment = augment
        self.seed = seed
        self.length = length if length is not None else len(arrays["frames"])
        self.jitter_db = jitter_db
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        count = len(self.arrays["frames"])
        i = int(rng.integers(count)) if self.augment else index % count
        frames, valid = self.arrays["frames"][i].astype(np.float32), self.arrays["valid"][i]
        motion = self.arrays["velocity"][i].astype(np.float32)
        if self.augment:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            frames, valid = np.rot90(frames, k, axes=(1, 2)), np.rot90(valid, k, axes=(1, 2))
            if flip:
                frames, valid = frames[:, :, ::-1], valid[:, :, ::-1]
            motion = lagrangian.turn_motion(motion, k, flip)
            if self.jitter_db > 0:
                factor = 10 ** (rng.uniform(-self.jitter_db, self.jitter_db) / 10)
                frames = self.transform.encode(self.transform.decode(frames) * factor).astype(np.float32)
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(frames)).unsqueeze(1),
            "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=np.float32)).unsqueeze(1),
            "step_minutes": torch.tensor(float(self.arrays["step_minutes"][i])),
            "motion": torch.from_numpy(np.ascontiguousarray(motion)),
        }


def build_lagrangian_bundle(cfg: Any) -> DataBundle:
    """Train windows from ``data.paths``; validation and test from ``data.val_paths`` (other radars)."""
    if not cfg.paths:
        raise UserError("data.paths is empty: give training radar directories, e.g. data.paths=[dir]")
    if not cfg.val_paths:
        raise UserError("data.val_paths is empty: give a radar that is not trained on, for validation")
    overlap = {str(Path(p).resolve()) for p in cfg.paths} & {str(Path(p).resolve()) for p in cfg.val_paths}
    if overlap:
        raise UserError(f"data.val_paths must be radars that are not trained on; both lists have {sorted(overlap)[0]}")
    train = build_cache(list(cfg.paths), cfg)
    held = build_cache(list(cfg.val_paths), cfg)
    order = np.random.default_rng(cfg.seed).permutation(len(held["frames"]))
    half = max(1, len(order) // 2)
    val = {k: v[order[:half]] for k, v in held.items()}
    test = {k: v[order[half:]] if len(order) > 1 else v for k, v in held.items()}
    transform = Transform("log1p", cfg.transform_scale_mm_h)
    return DataBundle(
        train=LagrangianWindows(
            train, cfg.augment, cfg.seed, cfg.samples_per_epoch, cfg.intensity_jitter_db, transform
        ),
        val=LagrangianWindows(val, False, cfg.seed + 1, min(cfg.val_size, len(val["frames"]))),
        test=LagrangianWindows(test, False, cfg.seed + 2, min(cfg.test_size, len(test["frames"]))),
        transform=transform,
        t_in=cfg.t_in,
        t_out=cfg.t_out,
        thresholds=[float(t) for t in cfg.thresholds],
        radar=True,
        step_minutes=sorted({float(s) for s in train["step_minutes"]}),
        frame="lagrangian",
        grid_km=float(cfg.grid_km),
    )
