"""Checkpoints: atomic writes, no pickled code, and a training run's payload and resume.

A checkpoint is a dict of tensors and plain Python values (no classes), so it loads with
``torch.load(weights_only=True)``. Keys: ``model`` (state dict), ``model_config`` (see
:class:`nowcast.models.ModelConfig`), ``transform``, ``data`` (frames in/out and the time steps
trained on), ``optimizer``, ``step``, ``epoch``, ``best_val``, ``config`` (the Hydra config as a
dict), ``version`` and ``rng`` states.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REQUIRED_KEYS = ("model", "model_config", "transform", "data")

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe or incompatible."""


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``.

    The temporary file lives in the target folder (same filesystem), is flushed to disk before
    the rename, and is removed if ``write`` fails, so ``path`` is either the old file or the
    complete new one, never a partial one.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write there ({err.strerror})") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; anything else raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        raise CheckpointError(f"{path}: refused, not a plain weights file ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a nowcast checkpoint (needs keys {list(REQUIRED_KEYS)})")
    return payload


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (recorded in forecast outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: What a forecast needs; :func:`slim_checkpoint` keeps only these (no optimiser state).
INFERENCE_KEYS = ("model", "model_config", "transform", "data", "config", "version", "step")


def slim_checkpoint(source: str | Path, target: str | Path) -> None:
    """Write an inference-only copy of a checkpoint (CPU tensors, no optimiser), e.g. to ship it."""
    payload = load_checkpoint(source, map_location="cpu")
    save_checkpoint({k: payload[k] for k in INFERENCE_KEYS if k in payload}, target)


@dataclass
class RunState:
    """A training run's bookkeeping, saved in every checkpoint."""

    step: int = 0
    best_val: float = math.inf
    stale_validations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    #: The unroll the run chose (``split``/``fused``; empty: not chosen yet), kept so a resumed run
    #: computes exactly as the run it continues.
    unroll: str = ""
    #: The weights' memory format the run chose (``channels_last``/``contiguous``; empty: the
    #: default of its device and precision), kept for the same reason.
    memory_format: str = ""
    #: How many steps' weights the running mean holds (``trainer.average_from``; 0: none yet).
    averaged_steps: int = 0


def training_payload(
    model: torch.nn.Module,
    model_config: dict[str, Any],
    transform: dict[str, Any],
    data: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    state: RunState,
    loss: str,
    config: dict[str, Any],
    averaged: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """A training checkpoint: the weights and what forecasting needs, plus what resuming needs.

    ``data`` holds ``t_in``, ``t_out``, ``step_minutes``, ``thresholds``, ``radar``, ``frame`` and
    ``grid_km``; ``config`` is the run's resolved Hydra config as plain types. With ``averaged``
    (the running mean of the weights, ``trainer.average_from``), ``model`` holds the mean and
    ``trained_model`` the weights the optimiser trains.
    """
    from nowcast import __version__

    payload = {
        "model": (model if averaged is None else averaged).state_dict(),
        "model_config": model_config,
        "transform": transform,
        "data": data,
        "optimizer": optimizer.state_dict(),
        "step": state.step,
        "best_val": state.best_val,
        "loss": loss,
        "stale_validations": state.stale_validations,
        "history": state.history,
        "unroll": state.unroll,
        "memory_format": state.memory_format,
        "averaged_steps": state.averaged_steps,
        "config": config,
        "version": __version__,
        "torch_rng": torch.get_rng_state(),
    }
    if averaged is not None:  # "model" holds the average (what forecasts use); resuming needs the trained weights
        payload["trained_model"] = model.state_dict()
    return payload


def resume_training(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_config: dict[str, Any],
    loss: str,
    averaged: torch.nn.Module | None = None,
) -> RunState:
    """Load weights, optimiser and RNG state from ``path`` into a run; returns its bookkeeping.

    ``averaged`` receives the running mean of the weights where the checkpoint has one.

    Refuses a checkpoint of another model config (naming what differs). A different ``loss`` is a
    fine-tuning: the best validation loss restarts.
    """
    from nowcast.forecast import build_model

    payload = load_checkpoint(path)
    saved = dict(payload["model_config"])
    _check_same_config(path, saved, model_config)
    build_model(payload, str(path))  # the weights fit the config, or an error names what differs
    has_mean = "trained_model" in payload  # then "model" is the mean and "trained_model" what the optimiser trains
    model.load_state_dict(payload["trained_model"] if has_mean else payload["model"])
    if averaged is not None and has_mean:
        averaged.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    state = RunState(
        step=int(payload["step"]),
        best_val=float(payload["best_val"]),
        stale_validations=int(payload.get("stale_validations", 0)),
        history=list(payload.get("history", [])),
        unroll=str(payload.get("unroll", "")),
        memory_format=str(payload.get("memory_format", "")),
        averaged_steps=int(payload["averaged_steps"]) if has_mean else 0,
    )
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("loss", loss) != loss:
        log.warning("loss changed from %s to %s: best validation loss restarts", payload["loss"], loss)
        state.best_val, state.stale_validations = math.inf, 0
    log.info("resumed from %s at step %d", path, state.step)
    return state


def _check_same_config(
    path: str | Path, saved: dict[str, Any], own: dict[str, Any], ignore: tuple[str, ...] = ()
) -> None:
    """Refuse a checkpoint whose model config differs from ``own`` (but for ``ignore``), naming what differs."""
    differ = [
        f"{k}={saved.get(k)!r} in checkpoint, {v!r} here"
        for k, v in own.items()
        if k not in ignore and saved.get(k) != v
    ]
    if differ:
        raise CheckpointError(f"{path}: incompatible model config ({'; '.join(differ)})")


def init_weights(model: torch.nn.Module, path: str | Path, transform: dict[str, Any]) -> None:
    """Start ``model`` from the network weights of the checkpoint at ``path`` (``trainer.init_from``).

    The checkpoint's model config must equal the model's but for ``probability_thresholds``; a
    probability head the checkpoint lacks keeps its initialisation, one it has is loaded. Its data
    transform must equal ``transform`` (the weights read model space). Optimiser and step start afresh.
    """
    payload = load_checkpoint(path)
    saved = dict(payload["model_config"])
    own = model.config.to_dict()
    _check_same_config(path, saved, own, ignore=("probability_thresholds",))
    if payload.get("transform") != transform:
        raise CheckpointError(f"{path}: data transform {payload.get('transform')} differs from this run's {transform}")
    state = dict(payload["model"])
    if saved.get("probability_thresholds", []) != own["probability_thresholds"]:
        state = {k: v for k, v in state.items() if not k.startswith("probability_conv.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("probability_conv.")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit (missing {missing[:3]}; unexpected {unexpected[:3]})")
    log.info("network weights from %s", path)
