"""Radar training windows: sliding (t_in + t_out)-frame windows, random crops, augmentation.

Each entry of ``data.paths`` is one *source* (a directory, glob or file list on one grid),
opened with :func:`nowcast.io.radar.open_radar` and split into regular sequences. The last
``val_fraction`` of every sequence is held out in one block of time; training windows come only
from the part before it, so no training window overlaps a validation window. Windows are taken
at several temporal strides (``strides``), so the model sees time steps of 1×, 2×, … the radar's
cycle and learns to use the step it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nowcast.data import DataBundle
from nowcast.errors import UserError
from nowcast.io.radar import ZR, open_radar, split_sequences
from nowcast.transforms import Transform


@dataclass(frozen=True)
class Window:
    """A window: frames ``start, start + stride, …`` of sequence ``seq``, time step in minutes."""

    seq: int
    start: int
    stride: int
    step_minutes: float


def windows_for(lengths: list[int], base_steps: list[float], n_frames: int, strides: list[int]) -> list[Window]:
    """Every window of ``n_frames`` frames at each stride that fits inside each sequence."""
    out = []
    for seq, (length, base) in enumerate(zip(lengths, base_steps, strict=True)):
        for stride in strides:
            span = (n_frames - 1) * stride + 1
            out.extend(Window(seq, start, stride, base * stride) for start in range(length - span + 1))
    return out


class RadarWindows(Dataset):
    """Crops of radar windows in model space; item ``i`` is a pure function of ``(seed, i)``.

    Items: ``frames`` ``(T, 1, crop, crop)`` (model space, no-data set to 0), ``valid``
    (same shape, 1 where observed) and ``step_minutes`` (scalar).

    Parameters
    ----------
    sequences
        Rain-rate arrays ``(T, H, W)`` in mm/h, NaN = no data.
    windows
        Windows to draw from.
    crop
        Side of the square crop in pixels (capped at the grid size).
    wet_threshold, min_wet_fraction
        A crop is accepted when at least this fraction of its last input frame is ≥ the
        threshold (mm/h); otherwise the wettest of several tries is used.
    augment
        Random flips and 90° rotations.
    length
        ``len()``; the training sampler may ask for any index.

    """

    def __init__(
        self,
        sequences: list[np.ndarray],
        windows: list[Window],
        transform: Transform,
        t_in: int,
        n_frames: int,
        crop: int,
        wet_threshold: float,
        min_wet_fraction: float,
        augment: bool,
        seed: int,
        length: int,
    ) -> None:
        self.sequences = sequences
        self.windows = windows
        self.transform = transform
        self.t_in = t_in
        self.n_frames = n_frames
        self.crop = crop
        self.wet_threshold = wet_threshold
        self.min_wet_fraction = min_wet_fraction
        self.augment = augment
        self.seed = seed
        self.length = length

    def __len__(self) -> int:
        return self.length

    def _pick_crop(self, frames: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
        h, w = frames.shape[-2:]
        size = min(self.crop, h, w)
        best, best_wet = (0, 0), -1.0
        last_input = frames[self.t_in - 1]
        for _ in range(20):
            top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            patch = last_input[top : top + size, left : left + size]
            wet = float(np.mean(patch >= self.wet_threshold))  # NaN compares False: dry
            if wet > best_wet:
                best, best_wet = (top, left), wet
            if wet >= self.min_wet_fraction:
                break
        return best[0], best[1], size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        window = self.windows[int(rng.integers(len(self.windows)))]
        stop = window.start + window.stride * (self.n_frames - 1) + 1
        frames = self.sequences[window.seq][window.start : stop : window.stride]  # (T, H, W)
        top, left, size = self._pick_crop(frames, rng)
        frames = frames[:, top : top + size, left : left + size]
        if self.augment:
            frames = np.rot90(frames, k=int(rng.integers(4)), axes=(1, 2))
            if rng.integers(2):
                frames = frames[:, :, ::-1]
        valid = np.isfinite(frames)
        x = self.transform.encode(np.where(valid, frames, 0.0)).astype(np.float32)
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1),
            "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=np.float32)).unsqueeze(1),
            "step_minutes": torch.tensor(window.step_minutes, dtype=torch.float32),
        }


def load_sources(cfg: Any) -> list[tuple[np.ndarray, float]]:
    """Regular rain-rate sequences ``[(array (T, H, W) mm/h, step_minutes)]`` of every source."""
    if not cfg.paths:
        raise UserError("data.paths is empty: give radar files, directories or globs, e.g. data.paths=[dir]")
    zr = ZR(cfg.zr_a, cfg.zr_b)
    out = []
    for source in cfg.paths:
        ds = open_radar(source, cfg.variable, zr, skip_bad=True)
        for seq, step in split_sequences(ds):
            out.append((seq["rainfall_rate"].values.astype(np.float32), step))
    return out


def build_radar_bundle(cfg: Any) -> DataBundle:
    """Train/validation/test windows from ``cfg`` (a ``data=radar`` config)."""
    n_frames = cfg.t_in + cfg.t_out
    transform = Transform("log1p", cfg.transform_scale_mm_h)
    train_parts, held_parts, steps = [], [], []
    for array, step in load_sources(cfg):
        split = int(round(len(array) * (1.0 - cfg.val_fraction)))
        train_parts.append(array[:split])
        held_parts.append(array[split:])
        steps.append(step)
    strides = [int(s) for s in cfg.strides]
    train_windows = windows_for([len(a) for a in train_parts], steps, n_frames, strides)
    held_windows = windows_for([len(a) for a in held_parts], steps, n_frames, strides)
    if not train_windows:
        raise UserError(f"radar data too short: no training window of {n_frames} frames at strides {strides}")
    if not held_windows:
        raise UserError(
            f"radar data too short: the held-out {cfg.val_fraction:.0%} has no window of {n_frames} frames "
            "(raise data.val_fraction or add frames)"
        )

    def dataset(parts, windows, augment, seed, length) -> RadarWindows:
        return RadarWindows(
            parts,
            windows,
            transform,
            cfg.t_in,
            n_frames,
            cfg.crop,
            cfg.wet_threshold,
            cfg.min_wet_fraction,
            augment,
            seed,
            length,
        )

    return DataBundle(
        train=dataset(train_parts, train_windows, cfg.augment, cfg.seed, cfg.samples_per_epoch),
        val=dataset(held_parts, held_windows, False, cfg.seed + 1, cfg.val_size),
        test=dataset(held_parts, held_windows, False, cfg.seed + 2, cfg.test_size),
        transform=transform,
        t_in=cfg.t_in,
        t_out=cfg.t_out,
        thresholds=[float(t) for t in cfg.thresholds],
        radar=True,
        step_minutes=sorted({w.step_minutes for w in train_windows}),
    )
