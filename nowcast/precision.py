"""Numeric precision chosen by the hardware: ``auto``, ``32`` or ``bf16``.

bf16 autocast pays only where the hardware runs it natively: a CPU whose oneDNN build reports
bf16 support (AVX512-BF16 or AMX) or a GPU of compute capability 8.0 or newer. Elsewhere (an
AVX2 CPU, say) bf16 is emulated in software and 5-14× slower than fp32, so ``auto`` picks fp32
there, and an explicit ``bf16`` runs with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

#: The precision names a user may give (``trainer.precision``, ``--precision``).
PRECISIONS = ("auto", "32", "bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to run in (``32`` or ``bf16``) and why, for the log."""

    name: str
    reason: str


def cpu_capability() -> str:
    """What torch's CPU kernels were dispatched for (``AVX2``, ``AVX512``, ``DEFAULT``…)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - very old torch
        return "unknown"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions natively (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"GPU {torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    return f"{cpu_capability()} CPU"


def resolve_precision(requested: str, device: torch.device) -> PrecisionChoice:
    """Turn ``auto``/``32``/``bf16`` into the precision to run, warning when bf16 is emulated.

    Raises
    ------
    ValueError
        For a name outside :data:`PRECISIONS`.

    """
    requested = str(requested)
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    native = native_bf16(device)
    hardware = _hardware(device)
    if requested == "auto":
        if native:
            return PrecisionChoice("bf16", f"{hardware} with native bf16: bf16")
        return PrecisionChoice("32", f"{hardware} without native bf16: fp32")
    if requested == "bf16" and not native:
        log.warning(
            "precision bf16 on a %s without native bf16: it is emulated and will run several times slower "
            "than fp32 (use precision auto or 32)",
            hardware,
        )
        return PrecisionChoice("bf16", f"{hardware} without native bf16, bf16 as requested (emulated)")
    return PrecisionChoice(requested, f"{hardware}: {'fp32' if requested == '32' else 'bf16'} as requested")


def autocast(device: torch.device, precision: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision='bf16'``, a no-op for ``'32'`` (resolve ``auto`` first).

    ``cache=False`` turns off autocast's cache of cast weights, as CUDA graph capture requires.
    """
    precision = str(precision)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    if precision == "32":
        return contextlib.nullcontext()
    raise ValueError(f"unknown precision {precision!r}; choose 32 or bf16 (resolve auto first)")
