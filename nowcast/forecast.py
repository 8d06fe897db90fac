"""The one inference path: checkpoint → model → forecast in physical units.

``predict``, ``evaluate`` and the training run's test pass all forecast through
:func:`run_model` (model space) or :class:`Forecaster` (rain rates in mm/h).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nowcast.checkpoint import CheckpointError, file_sha256, load_checkpoint
from nowcast.models import EncoderForecaster, ModelConfig
from nowcast.precision import autocast, resolve_precision
from nowcast.transforms import Transform

log = logging.getLogger(__name__)

PRETRAINED_NAME = "radar_convlstm.pt"

#: Forecast rain rates below this (mm/h) are set to 0: the network's output never reaches exactly
#: zero, and radars report no rain below about this rate.
RAIN_FLOOR_MM_H = 0.1


def pretrained_checkpoint() -> Path:
    """Path of the small radar model shipped inside the package."""
    return Path(str(resources.files("nowcast.pretrained").joinpath(PRETRAINED_NAME)))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but no CUDA device is available")
    return torch.device(name)


def run_model(
    model: torch.nn.Module,
    frames: torch.Tensor,
    n_out: int,
    step_minutes: torch.Tensor | None = None,
    precision: str = "32",
) -> torch.Tensor:
    """Forecast in model space: ``(B, T_in, C, H, W) -> (B, n_out, C, H, W)`` float32."""
    with autocast(frames.device, precision):
        out = model(frames, n_out, step_minutes)
    return out.float()


def build_model(payload: dict[str, Any], source: str = "checkpoint") -> EncoderForecaster:
    """Rebuild the network from a checkpoint payload; a mismatch names what differs."""
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        model = EncoderForecaster(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: incompatible model config ({err})") from None
    state = payload["model"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)}, model needs {tuple(own[k].shape)}")
        raise CheckpointError(f"{source}: weights do not fit the model config ({'; '.join(parts)})")
    model.load_state_dict(state)
    return model


@dataclass
class Forecaster:
    """A trained model with its data transform, ready to forecast rain rates.

    Attributes
    ----------
    t_in, t_out
        Frames the model was trained to read and to forecast.
    step_minutes
        Radar time steps (minutes) seen in training; empty for non-radar models.

    """

    model: EncoderForecaster
    transform: Transform
    t_in: int
    t_out: int
    step_minutes: list[float] = field(default_factory=list)
    source: str = ""
    sha256: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "32"

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None = None, device: str = "cpu", precision: str | None = "auto"
    ) -> Forecaster:
        """Load a checkpoint (default: the shipped pretrained radar model).

        ``precision`` ``auto`` (or None) picks bf16 where the hardware runs it natively, else fp32
        (see :mod:`nowcast.precision`).
        """
        path = Path(path) if path is not None else pretrained_checkpoint()
        payload = load_checkpoint(path)
        model = build_model(payload, str(path))
        dev = resolve_device(device)
        model.to(dev).eval()
        data = payload["data"]
        try:
            transform = Transform.from_dict(payload["transform"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: bad transform ({err})") from None
        choice = resolve_precision(precision or "auto", dev)
        log.debug("precision: %s", choice.reason)
        precision = choice.name
        return cls(
            model=model,
            transform=transform,
            t_in=int(data["t_in"]),
            t_out=int(data["t_out"]),
            step_minutes=[float(s) for s in data.get("step_minutes", [])],
            source=str(path),
            sha256=file_sha256(path),
            device=dev,
            precision=precision,
        )

    @property
    def needs_step(self) -> bool:
        """Whether the model takes the time step as an input."""
        return self.model.config.step_channel

    @torch.no_grad()
    def forecast(self, rates: np.ndarray, n_out: int, step_minutes: float | None = None) -> np.ndarray:
        """Forecast rain rates.

        Parameters
        ----------
        rates
            Observed rain rate, mm/h, ``(T, H, W)`` (the last ``t_in`` frames are used) or a
            batch ``(B, T, H, W)``. NaN marks no-data.
        n_out
            Frames to forecast.
        step_minutes
            Time step of the input in minutes.

        Returns
        -------
        numpy.ndarray
            Forecast rain rate, mm/h, ``(n_out, H, W)`` (or ``(B, n_out, H, W)``), float32; 0 below
            :data:`RAIN_FLOOR_MM_H`; NaN where the last observed frame has no data.

        """
        single = rates.ndim == 3
        batch = rates[None] if single else rates
        batch = batch[:, -self.t_in :]
        no_data = ~np.isfinite(batch[:, -1])  # (B, H, W)
        x = self.transform.encode(np.nan_to_num(batch, nan=0.0).astype(np.float32))
        frames = torch.from_numpy(x).unsqueeze(2).to(self.device)  # (B, T, 1, H, W)
        step = None
        if self.needs_step:
            if step_minutes is None:
                raise ValueError("this model needs the input's time step in minutes")
            step = torch.full((frames.shape[0],), float(step_minutes), device=self.device)
        y = run_model(self.model, frames, n_out, step, self.precision)[:, :, 0]
        out = self.transform.decode(y.cpu().numpy()).astype(np.float32)  # (B, n_out, H, W)
        if self.transform.kind != "identity":
            out[out < RAIN_FLOOR_MM_H] = 0.0
        out[np.broadcast_to(no_data[:, None], out.shape)] = np.nan
        return out[0] if single else out
