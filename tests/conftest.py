"""Shared fixtures: synthetic radar netCDF files, composed configs, a tiny trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "radar"
BOM = SHARED / "bom-melbourne-2018-06-16"
KNMI = SHARED / "knmi-2010-08-26"


def blob_field(t: int, size: int = 32, speed: float = 1.0, peak: float = 8.0) -> np.ndarray:
    """A Gaussian rain cell (mm/h) moving right by ``speed`` pixels per frame."""
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = 8 + speed * t, size / 2
    return (peak * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18.0)).astype(np.float64)


def write_frame(
    path: Path,
    values: np.ndarray,
    time: pd.Timestamp,
    kind: str = "accumulation",
    interval_min: float = 5.0,
    units: str | None = None,
    name: str = "precip",
    standard_name: str | None = None,
) -> Path:
    """Write one CF netCDF radar frame like the BoM Rainfields files (scalar valid/start time)."""
    ny, nx = values.shape
    defaults = {
        "accumulation": ("precipitation_amount", "kg m-2"),
        "rate": ("rainfall_rate", "mm h-1"),
        "dbz": ("equivalent_reflectivity_factor", "dBZ"),
    }
    std, unit = defaults[kind]
    ds = xr.Dataset(
        {
            name: (
                ("y", "x"),
                values,
                {"standard_name": standard_name or std, "units": units or unit, "grid_mapping": "proj"},
            ),
            "proj": ((), np.int8(0), {"grid_mapping_name": "albers_conical_equal_area"}),
            "valid_time": ((), np.datetime64(time, "ns"), {"standard_name": "time"}),
            "start_time": ((), np.datetime64(time - pd.Timedelta(minutes=interval_min), "ns")),
        },
        coords={
            "y": (
                "y",
                np.arange(ny, dtype=np.float32)[::-1],
                {"standard_name": "projection_y_coordinate", "units": "km"},
            ),
            "x": (
                "x",
                np.arange(nx, dtype=np.float32),
                {"standard_name": "projection_x_coordinate", "units": "km"},
            ),
        },
    )
    ds.to_netcdf(path)
    return path


def write_sequence(
    folder: Path,
    n: int = 8,
    step_min: float = 5.0,
    size: int = 32,
    speed: float = 1.0,
    start: str = "2024-01-01 00:00",
    prefix: str = "radar",
) -> list[Path]:
    """``n`` accumulation files of a moving blob, ``step_min`` apart (accumulation = rate × interval)."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = pd.Timestamp(start)
    paths = []
    for t in range(n):
        rate = blob_field(t, size, speed)
        time = t0 + pd.Timedelta(minutes=step_min * t)
        paths.append(write_frame(folder / f"{prefix}_{t:03d}.nc", rate * step_min / 60.0, time, interval_min=step_min))
    return paths


@pytest.fixture
def radar_dir(tmp_path: Path) -> Path:
    """Eight 5-minute frames of a blob moving 1 px/frame on a 32×32 grid."""
    write_sequence(tmp_path / "radar", n=8)
    return tmp_path / "radar"


@pytest.fixture
def compose_config():
    """Compose the real Hydra config with overrides (as the CLI would)."""
    from nowcast.config import register_configs

    register_configs()

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
            return compose("config", overrides=list(overrides))

    return _compose


def tiny_lagrangian_run(base: Path) -> list[str]:
    """Overrides for a tiny Lagrangian training run: two synthetic radars written under ``base``
    (``a`` trained on, ``b`` for validation), a one-layer net of 4 channels, 3 frames in, 4 out."""
    write_sequence(base / "a", n=14, size=40, speed=1.0)
    write_sequence(base / "b", n=14, size=40, speed=1.5, prefix="b")
    return [
        "data=lagrangian_radar",
        "model=lagrangian",
        "model.hidden=[4]",
        f"data.paths=[{base / 'a'}]",
        f"data.val_paths=[{base / 'b'}]",
        f"data.cache_dir={base / 'cache'}",
        "data.t_in=3",
        "data.t_out=4",
        "data.strides=[1]",
        "data.crop=24",
        "data.window_every=3",
        "data.crops_per_window=1",
        "trainer.loss=logcsi",
        "trainer.batch_size=2",
        "trainer.val_every=3",
        "trainer.precision=32",
    ]


TINY_TRAIN = (
    "model.hidden=[4,4]",
    "trainer.batch_size=2",
    "trainer.max_steps=2",
    "trainer.val_every=2",
    "trainer.precision=32",
    "trainer.unroll=split",  # no timing: runs compare bit for bit
    "data.val_size=2",
    "data.test_size=2",
)


@pytest.fixture(scope="session")
def tiny_radar_checkpoint(tmp_path_factory) -> Path:
    """A radar checkpoint (t_in=3) trained for two steps on synthetic files."""
    from nowcast.config import register_configs
    from nowcast.training import train

    register_configs()
    base = tmp_path_factory.mktemp("tiny")
    write_sequence(base / "radar", n=20, size=32)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(
            "config",
            overrides=[
                "data=radar",
                "model=radar",
                f"data.paths=[{base / 'radar'}]",
                "data.t_in=3",
                "data.t_out=3",
                "data.crop=16",
                "data.strides=[1,2]",
                "data.val_fraction=0.4",
                "model.patch_size=4",
                "trainer.loss=mse",
                *TINY_TRAIN,
            ],
        )
    train(cfg, base / "run")
    return base / "run" / "checkpoints" / "best.pt"


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``shared`` when ../shared is absent (a user's fresh clone)."""
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason="../shared/radar not present")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("MPLBACKEND", "Agg")
