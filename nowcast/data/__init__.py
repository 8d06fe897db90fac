"""Datasets that turn sequences into ``(T, C, H, W)`` training windows, and their registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from nowcast.transforms import Transform


@dataclass
class DataBundle:
    """What the trainer needs from a data source.

    Items of each dataset are dicts with ``frames`` ``(T_in + T_out, C, H, W)`` in model space
    and, for radar, ``valid`` (same shape, 1 where observed) and ``step_minutes`` (scalar).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    transform: Transform
    t_in: int
    t_out: int
    thresholds: list[float]
    radar: bool
    step_minutes: list[float] = field(default_factory=list)
    frame_size: list[int] | None = None
    frame: str = "eulerian"  # or "lagrangian": windows in the frame that moves with the rain
    grid_km: float = 1.0


def build_moving_mnist(cfg: Any) -> DataBundle:
    """Moving-MNIST train/val/test sets from a ``data`` config."""
    from nowcast.data.moving_mnist import MovingMNIST, MovingMNISTFile, load_digits

    n_frames = cfg.t_in + cfg.t_out

    def generated(split: str, length: int, seed: int) -> MovingMNIST:
        digits = load_digits(split, cfg.mnist_dir)
        return MovingMNIST(digits, length, seed, n_frames, cfg.size, cfg.num_digits)

    test = (
        MovingMNISTFile(cfg.test_file, n_frames, cfg.test_size)
        if cfg.test_file
        else generated("test", cfg.test_size, cfg.seed + 2)
    )
    return DataBundle(
        train=generated("train", cfg.samples_per_epoch, cfg.seed),
        val=generated("val", cfg.val_size, cfg.seed + 1),
        test=test,
        transform=Transform("identity"),
        t_in=cfg.t_in,
        t_out=cfg.t_out,
        thresholds=list(cfg.thresholds),
        radar=False,
        frame_size=[cfg.size, cfg.size],
    )


def build_radar(cfg: Any) -> DataBundle:
    """Radar train/val/test windows from a ``data`` config (see :mod:`nowcast.data.radar`)."""
    from nowcast.data.radar import build_radar_bundle

    return build_radar_bundle(cfg)


def build_lagrangian_radar(cfg: Any) -> DataBundle:
    """Cached Lagrangian radar windows (see :mod:`nowcast.data.lagrangian`)."""
    from nowcast.data.lagrangian import build_lagrangian_bundle

    return build_lagrangian_bundle(cfg)


BUILDERS: dict[str, Callable[[Any], DataBundle]] = {
    "moving_mnist": build_moving_mnist,
    "radar": build_radar,
    "lagrangian_radar": build_lagrangian_radar,
}


def build_data(cfg: Any) -> DataBundle:
    """Build the datasets named by ``cfg.name``; the error lists the valid names."""
    try:
        builder = BUILDERS[cfg.name]
    except KeyError:
        raise ValueError(f"unknown data source {cfg.name!r}; choose one of {sorted(BUILDERS)}") from None
    return builder(cfg)
