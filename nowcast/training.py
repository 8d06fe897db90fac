"""The training loop: ``train(cfg, run_dir) -> metrics``.

Holds optimisation, validation, checkpointing, resume, interruption and the final test pass.
The Hydra entry point lives in :mod:`nowcast.train`.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from nowcast.checkpoint import (
    RunState,
    atomic_write,
    init_weights,
    load_checkpoint,
    resume_training,
    save_checkpoint,
    training_payload,
)
from nowcast.data import DataBundle, build_data
from nowcast.forecast import resolve_device, run_model
from nowcast.graphs import GraphedStep, make_capturable, set_learning_rate
from nowcast.metrics import HKO7_EDGES_MM_H, HKO7_WEIGHTS
from nowcast.models import EncoderForecaster, ModelConfig, count_parameters
from nowcast.precision import resolve_precision
from nowcast.unroll import apply_memory_format, candidate_layouts, choose_unroll_and_layout

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss diverged); the message says what to do."""


@dataclass
class DistInfo:
    """Rank and world size under ``torchrun`` (1 process otherwise)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes files."""
        return self.rank == 0


def learning_rate(base: float, schedule: str, step: int, total_steps: int, decay_fraction: float = 0.5) -> float:
    """Learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``base`` throughout. ``cosine``: half a cosine from ``base`` at step 0 down to 0
    after the last step (Loshchilov & Hutter 2017, without restarts). ``constant_cosine``: ``base``
    for the first ``1 - decay_fraction`` of the steps, then half a cosine down to 0 after the last
    step (the stable-then-decay schedule; its constant part equals a ``constant`` run's, so a
    constant run's checkpoint can be resumed into it). A function of the step alone, so a resumed
    run continues the same schedule.
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 0.5 * base * (1.0 + math.cos(math.pi * step / max(total_steps, 1)))
    if schedule == "constant_cosine":
        decay_steps = max(decay_fraction * total_steps, 1.0)
        into_decay = max(step - (total_steps - decay_steps), 0.0)
        return 0.5 * base * (1.0 + math.cos(math.pi * into_decay / decay_steps))
    raise ValueError(f"unknown lr_schedule {schedule!r}")


class StepSampler(Sampler[int]):
    """Sample indices for optimiser steps ``start_step .. total_steps-1``.

    Step ``s`` on rank ``r`` of ``W`` reads indices ``(s*W + r)*B .. (s*W + r + 1)*B - 1``: every
    rank gets its own shard (the role of ``DistributedSampler``), datasets map an index to a
    sample deterministically, and a resumed run reads exactly what the first run would have.
    """

    def __init__(self, batch_size: int, start_step: int, total_steps: int, dist_info: DistInfo) -> None:
        self.batch_size = batch_size
        self.start_step = start_step
        self.total_steps = total_steps
        self.dist_info = dist_info

    def __iter__(self) -> Iterator[int]:
        w, r, b = self.dist_info.world_size, self.dist_info.rank, self.batch_size
        for step in range(self.start_step, self.total_steps):
            first = (step * w + r) * b
            yield from range(first, first + b)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.batch_size


def masked_loss(
    name: str,
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over valid pixels; ``pred``/``target`` ``(B, T, C, H, W)`` in model space, float32.

    ``bmse`` is the squared error weighted per pixel by ``weights`` (the HKO-7 weights of the
    observed rain rate, see :func:`loss_weights`), normalised by the valid-pixel count.
    """
    if name == "mse":
        per_pixel = (pred - target) ** 2
    elif name == "bmse":
        if weights is None:
            raise ValueError("loss bmse needs per-pixel weights (radar data)")
        per_pixel = weights * (pred - target) ** 2
    elif name == "l1":
        per_pixel = (pred - target).abs()
    elif name == "logcsi":
        per_pixel = (pred - target) ** 2  # the soft-CSI terms are added in :func:`training_loss`
    elif name == "bce":
        per_pixel = F.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6), target.clamp(0, 1), reduction="none")
    else:
        raise ValueError(f"unknown loss {name!r}; choose mse, bmse, logcsi, bce or l1")
    if valid is None:
        return per_pixel.mean()
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def soft_csi(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, threshold: float, width: float
) -> torch.Tensor:
    """Differentiable CSI (soft Jaccard index) of ``pred ≥ threshold`` against ``target ≥ threshold``.

    Both in model space; the forecast's event indicator is ``sigmoid((pred − threshold) / width)``,
    the observed one is exact: CSI = Σ p·o / Σ (p + o − p·o) over valid pixels.
    """
    p = torch.sigmoid((pred - threshold) / width)
    o = (target >= threshold).to(pred.dtype)
    w = valid if valid is not None else torch.ones_like(pred)
    hits = (p * o * w).sum()
    union = ((p + o - p * o) * w).sum()
    return hits / union.clamp_min(1.0)


def training_loss(
    name: str,
    pred,
    target,
    valid,
    bundle: DataBundle,
    cfg,
    logits=None,
    probability_thresholds=(),
    inputs=None,
    step_minutes=None,
) -> torch.Tensor:
    """The loss the optimiser sees: :func:`masked_loss`, plus ``Σ w_u (1 − soft CSI_u)`` for ``logcsi``.

    Soft-CSI thresholds ``trainer.csi_thresholds`` (mm/h) are encoded with the data transform; the
    sigmoid width is 0.02 in model space (about 0.2 mm/h at 1 mm/h for log1p with 100 mm/h scale).
    With ``trainer.csi_matched`` the soft CSI is that of the forecast the shipped post-processing
    makes of ``pred`` (trend, lead-time smoothing, probability matching to the last of ``inputs``
    ``(B, T_in, 1, H, W)``; ``step_minutes`` ``(B,)``), see :mod:`nowcast.matched_csi`.
    With a probability head's ``logits`` ``(B, T, U, H, W)`` for ``probability_thresholds`` (mm/h),
    ``trainer.probability_weight`` times their binary cross-entropy is added (:func:`probability_loss`).
    """
    loss = masked_loss(name, pred, target, valid, loss_weights(name, target, bundle))
    if name == "logcsi":
        levels = model_space(bundle, cfg.csi_thresholds)
        score = functools.partial(soft_csi, pred, target, valid, width=0.02)
        if getattr(cfg, "csi_matched", False):
            score = _matched_scorer(pred, target, valid, bundle, inputs, step_minutes)
        for threshold, weight in zip(levels, cfg.csi_weights, strict=True):
            loss = loss + weight * (1.0 - score(threshold))
    if logits is not None:
        levels = model_space(bundle, probability_thresholds)
        loss = loss + cfg.probability_weight * probability_loss(logits, target, valid, levels)
    return loss


def _matched_scorer(pred, target, valid, bundle: DataBundle, inputs, step_minutes):
    """``threshold -> matched soft CSI`` of ``pred`` post-processed as a shipped Lagrangian forecast is."""
    from nowcast import matched_csi
    from nowcast.forecast import SMOOTHING_KM_PER_MINUTE, TREND_WEIGHT

    if bundle.frame != "lagrangian" or inputs is None or step_minutes is None or valid is None:
        raise ValueError("trainer.csi_matched needs Lagrangian radar windows (data=lagrangian_radar)")
    forecast = matched_csi.post_processed(
        pred, inputs, step_minutes, bundle.transform, TREND_WEIGHT, SMOOTHING_KM_PER_MINUTE, bundle.grid_km
    )
    last = inputs[:, -1:]
    return functools.partial(matched_csi.matched_soft_csi, forecast, last, target, valid)


def model_space(bundle: DataBundle, rates_mm_h) -> list[float]:
    """Rain rates (mm/h) in model space, through the data transform."""
    return [float(bundle.transform.encode(torch.tensor(float(u)))) for u in rates_mm_h]


def probability_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, levels: list[float]
) -> torch.Tensor:
    """Mean binary cross-entropy of ``P(R ≥ u)`` over valid pixels and thresholds.

    ``logits`` ``(B, T, U, H, W)``; ``target`` ``(B, T, 1, H, W)`` in model space; ``levels`` the
    ``U`` thresholds in model space; ``valid`` ``(B, T, 1, H, W)`` or None.
    """
    events = torch.cat([(target >= level).to(logits.dtype) for level in levels], dim=2)  # (B, T, U, H, W)
    per_pixel = F.binary_cross_entropy_with_logits(logits, events, reduction="none")
    if valid is None:
        return per_pixel.mean()
    return (per_pixel * valid).sum() / (valid.sum() * len(levels)).clamp_min(1.0)


def loss_weights(name: str, target: torch.Tensor, bundle: DataBundle) -> torch.Tensor | None:
    """HKO-7 weights of the target's rain rate for ``bmse``; None for other losses."""
    if name != "bmse":
        return None
    rate = bundle.transform.decode(target)
    edges, weights = _hko7_tables(target.device)
    return weights[torch.bucketize(rate, edges, right=True)]


@functools.cache
def _hko7_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """HKO-7 rain-rate edges (mm/h) and weights on ``device``, made once (no copy inside a CUDA graph)."""
    return torch.tensor(HKO7_EDGES_MM_H, device=device), torch.tensor(HKO7_WEIGHTS, device=device)


def split_batch(batch: dict[str, torch.Tensor], t_in: int, device: torch.device) -> tuple:
    """Inputs, targets, valid mask, step and motion ``(B, 2, H, W)`` (each None if absent), on ``device``."""
    frames = batch["frames"].to(device, non_blocking=True)  # (B, T, C, H, W)
    valid = batch.get("valid")
    valid_out = valid[:, t_in:].to(device) if valid is not None else None
    step = batch.get("step_minutes")
    step = step.to(device).float() if step is not None else None
    motion = batch.get("motion")
    motion = motion.to(device).float() if motion is not None else None
    return frames[:, :t_in], frames[:, t_in:], valid_out, step, motion


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _dist_info() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def _model_config(cfg: DictConfig, bundle: DataBundle) -> ModelConfig:
    values = OmegaConf.to_container(cfg.model, resolve=True)
    config = ModelConfig.from_dict(values)
    if config.frame_size is None and config.cell == "convlstm_peephole" and bundle.frame_size:
        config.frame_size = list(bundle.frame_size)
    return config


class Trainer:
    """One training run writing into ``run_dir``."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.run_dir = Path(run_dir)
        self.dist = _dist_info()
        if self.dist.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and self.tcfg.device != "cpu" else "gloo"
            dist.init_process_group(backend)
        self.device = resolve_device(self.tcfg.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = not self.tcfg.deterministic
        self.precision = resolve_precision(self.tcfg.precision, self.device)
        _seed_everything(self.tcfg.seed)
        if self.tcfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.bundle = build_data(cfg.data)
        self.model_config = _model_config(cfg, self.bundle)
        self.model = EncoderForecaster(self.model_config).to(self.device)
        self.model.gradient_checkpointing = bool(self.tcfg.checkpoint_steps)
        self._initial_weights()
        if self.device.type == "cpu" or self.precision.name == "bf16":
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = self._make_optimizer()
        #: the running mean of the weights (trainer.average_from); its .module forecasts once it holds any step
        self.averaged = AveragedModel(self.model) if self.tcfg.average_from else None
        self.state = RunState()
        self.stop_signal: int | None = None
        steps_per_epoch = max(1, len(self.bundle.train) // (self.tcfg.batch_size * self.dist.world_size))
        self.total_steps = min(self.tcfg.max_steps, self.tcfg.max_epochs * steps_per_epoch)
        self.ckpt_dir = self.run_dir / "checkpoints"
        if self.tcfg.resume:
            self._resume(Path(str(self.tcfg.resume)))
        self.net: torch.nn.Module = self.model
        if self.tcfg.compile:
            self.net = try_compile(self.model)
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.graphed: GraphedStep | None = None
        if self._uses_cuda_graphs():
            make_capturable(self.optimizer)
            self.graphed = GraphedStep(self._optimise, self.optimizer)

    def _initial_weights(self) -> None:
        """The probability head's start, ``trainer.init_from``'s weights, and ``trainer.train_only``."""
        if self.model.probability_conv is not None:
            self.model.init_probability_head(model_space(self.bundle, self.model_config.probability_thresholds))
        if self.tcfg.init_from:
            init_weights(self.model, Path(str(self.tcfg.init_from)), self.bundle.transform.to_dict())
        if self.tcfg.train_only == "probability_head":
            for name, parameter in self.model.named_parameters():
                parameter.requires_grad_(name.startswith("probability_conv."))

    def _uses_cuda_graphs(self) -> bool:
        """``trainer.cuda_graphs`` on a GPU, in one process, without compile or gradient checkpointing."""
        if not self.tcfg.cuda_graphs or self.device.type != "cuda":
            return False
        others = {
            "trainer.compile": self.tcfg.compile,
            "torchrun": self.dist.world_size > 1,
            "trainer.checkpoint_steps": self.tcfg.checkpoint_steps,
        }
        clash = [name for name, on in others.items() if on]
        if clash:
            log.info("CUDA graphs off: they do not combine with %s here", ", ".join(clash))
            return False
        return True

    def _make_optimizer(self) -> torch.optim.Optimizer:
        name = self.tcfg.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        if name == "adam":
            return torch.optim.Adam(params, lr=self.tcfg.lr)
        if name == "rmsprop":
            return torch.optim.RMSprop(params, lr=self.tcfg.lr, alpha=0.9)
        raise ValueError(f"unknown optimizer {name!r}; choose adam or rmsprop")

    # ------------------------------------------------------------------ checkpoints
    def payload(self) -> dict[str, Any]:
        """Everything needed to resume or to forecast (see :func:`nowcast.checkpoint.training_payload`)."""
        data = {
            "t_in": self.bundle.t_in,
            "t_out": self.bundle.t_out,
            "step_minutes": list(self.bundle.step_minutes),
            "thresholds": list(self.bundle.thresholds),
            "radar": self.bundle.radar,
            "frame": self.bundle.frame,
            "grid_km": self.bundle.grid_km,
        }
        config = OmegaConf.to_container(self.cfg, resolve=True)
        evaluated = self.evaluated_model()
        averaged = None if evaluated is self.model else evaluated
        return training_payload(
            self.model, self.model_config.to_dict(), self.bundle.transform.to_dict(), data, self.optimizer, self.state,
            self.tcfg.loss, config, averaged,
        )  # fmt: skip

    def evaluated_model(self) -> EncoderForecaster:
        """The weights validated, checkpointed for forecasting and tested: the running mean once it holds a step."""
        if self.averaged is not None and self.state.averaged_steps:
            return self.averaged.module
        return self.model

    def save(self, name: str) -> Path:
        """Write ``checkpoints/<name>.pt`` atomically (rank 0 only)."""
        path = self.ckpt_dir / f"{name}.pt"
        if self.dist.is_main:
            save_checkpoint(self.payload(), path)
        return path

    def _resume(self, path: Path) -> None:
        averaged = None if self.averaged is None else self.averaged.module
        self.state = resume_training(
            path, self.model, self.optimizer, self.model_config.to_dict(), self.tcfg.loss, averaged
        )
        if self.averaged is not None:
            self.averaged.n_averaged.fill_(self.state.averaged_steps)
            if not self.state.averaged_steps and self.state.step >= self.tcfg.average_from:
                log.warning(
                    "%s holds no weight average: the mean starts after step %d, not at trainer.average_from=%d",
                    path, self.state.step, self.tcfg.average_from,
                )  # fmt: skip

    # ------------------------------------------------------------------ loop
    def _loader(self, dataset, sampler=None, shuffle=False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.tcfg.batch_size,
            sampler=sampler,
            shuffle=shuffle,
            num_workers=self.tcfg.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def _train_step(self, batch: dict[str, torch.Tensor]) -> float:
        x, y, valid, step, motion = split_batch(batch, self.bundle.t_in, self.device)
        if self.device.type == "cpu":
            x = x.contiguous()
        set_learning_rate(
            self.optimizer,
            learning_rate(
                self.tcfg.lr, self.tcfg.lr_schedule, self.state.step, self.total_steps, self.tcfg.decay_fraction
            ),
        )
        if self.graphed is not None:  # the step is already taken when the loss is read
            return self._finite(float(self.graphed(x, y, valid, step, motion)))
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(x, y, valid, step, motion)
        loss_value = self._finite(float(loss.detach()))
        self._backward_and_step(loss)
        return loss_value

    def _loss(self, x, y, valid, step, motion, autocast_cache: bool = True) -> torch.Tensor:
        """The training loss of one batch (forward pass included)."""
        return self._model_loss(self.net, x, y, valid, step, motion, autocast_cache)

    def _model_loss(self, net, x, y, valid, step, motion, autocast_cache: bool = True) -> torch.Tensor:
        """Forward pass of ``net`` and :func:`training_loss`, the probability head's term included."""
        thresholds = self.model_config.probability_thresholds
        out = run_model(
            net, x, self.bundle.t_out, step, self.precision.name, autocast_cache, bool(thresholds), motion=motion
        )
        pred, logits = out if thresholds else (out, None)
        return training_loss(
            self.tcfg.loss, pred, y, valid, self.bundle, self.tcfg, logits, thresholds, inputs=x, step_minutes=step
        )

    def _optimise(self, x, y, valid, step, motion) -> torch.Tensor:
        """Forward, loss, backward and optimiser step with no host synchronisation (what a CUDA graph records)."""
        loss = self._loss(x, y, valid, step, motion, autocast_cache=False)
        self._backward_and_step(loss)
        return loss.detach()

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        loss.backward()
        if self.tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        self.optimizer.step()

    def _finite(self, loss_value: float) -> float:
        """``loss_value``, or a :class:`TrainingError` when it is not finite."""
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"loss became {loss_value} at step {self.state.step + 1}; stopped, last good checkpoint "
                f"kept in {self.ckpt_dir} (try a lower trainer.lr or trainer.precision=32)"
            )
        return loss_value

    def _choose_unroll(self) -> tuple[str, str]:
        """The unroll and the weights' memory format of the run: ``(unroll, memory_format)``.

        ``trainer.unroll``, or for ``auto`` the faster unroll timed on the first training batch.
        In one process without ``compile``, ``auto`` also times the memory formats of
        :func:`~nowcast.unroll.candidate_layouts` (both on a CPU in fp32).
        """
        current = "channels_last" if self.model.channels_last else "contiguous"
        if self.tcfg.unroll != "auto":
            return str(self.tcfg.unroll), current
        from torch.utils.data import default_collate

        items = [self.bundle.train[i] for i in range(min(self.tcfg.batch_size, len(self.bundle.train)))]
        x, _, _, step, motion = split_batch(default_collate(items), self.bundle.t_in, self.device)
        x = x.contiguous()
        # with the network frozen (train_only=probability_head) a training step is its forward pass
        training = self.tcfg.train_only == "all"
        one_plain_process = self.net is self.model  # no DDP wrapper, no compiled graph
        layouts = candidate_layouts(self.device, self.precision.name, current) if one_plain_process else [current]
        name, layout, seconds = choose_unroll_and_layout(
            self.model, x, self.bundle.t_out, step, self.precision.name, layouts, training=training, motion=motion
        )
        if not seconds:
            log.info("unroll: %s, %s (no fusable layer)", name, current)
            return name, current
        report = ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items())
        log.info("unroll: %s, %s (one training step timed on this machine: %s)", name, layout, report)
        return name, layout  # fit applies the layout

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss of :meth:`evaluated_model` on the validation set (model space)."""
        model = self.evaluated_model()
        model.eval()
        total, count = 0.0, 0
        for batch in self._loader(self.bundle.val):
            x, y, valid, step, motion = split_batch(batch, self.bundle.t_in, self.device)
            total += float(self._model_loss(model, x, y, valid, step, motion)) * x.shape[0]
            count += x.shape[0]
        model.train()
        return total / max(count, 1)

    def _install_signal_handlers(self) -> dict:
        def handler(signum, _frame):
            self.stop_signal = signum

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not in the main thread
                pass
        return previous

    def fit(self) -> str:
        """Train until ``max_steps``/``max_epochs``, early stop or a signal; returns why it stopped."""
        sampler = StepSampler(self.tcfg.batch_size, self.state.step, self.total_steps, self.dist)
        loader = self._loader(self.bundle.train, sampler=sampler)
        previous = self._install_signal_handlers()
        self.model.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            desc="train",
            unit="step",
            disable=not (self.dist.is_main and sys.stderr.isatty()),
        )
        reason = "max_steps"
        deadline = time.monotonic() + 60.0 * self.tcfg.max_minutes if self.tcfg.max_minutes else math.inf
        if not self.state.unroll:  # timed inside the budget
            self.state.unroll, self.state.memory_format = self._choose_unroll()
        for model in [self.model] if self.averaged is None else [self.model, self.averaged.module]:
            apply_memory_format(model, self.state.memory_format)
            model.unroll = self.state.unroll
        window_loss, window_steps, window_samples, window_start = 0.0, 0, 0, time.perf_counter()
        try:
            for batch in loader:
                loss = self._train_step(batch)
                self.state.step += 1
                if self.averaged is not None and self.state.step >= self.tcfg.average_from:
                    self.averaged.update_parameters(self.model)
                    self.state.averaged_steps += 1
                window_loss += loss
                window_steps += 1
                window_samples += batch["frames"].shape[0] * self.dist.world_size
                bar.update(1)
                if self.state.step % self.tcfg.log_every == 0 or self.state.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "step": self.state.step,
                        "train_loss": window_loss / window_steps,
                        "samples_per_s": window_samples / max(elapsed, 1e-9),
                    }
                    bar.set_postfix(loss=f"{record['train_loss']:.4f}", sps=f"{record['samples_per_s']:.1f}")
                    self._log(record)
                    window_loss, window_steps, window_samples, window_start = 0.0, 0, 0, time.perf_counter()
                out_of_time = self._all_agree(time.monotonic() >= deadline)
                if self.state.step % self.tcfg.val_every == 0 or self.state.step == self.total_steps or out_of_time:
                    if self._validate_and_checkpoint():
                        reason = "early_stop"
                        break
                if out_of_time:
                    reason = "max_minutes"
                    log.info("trainer.max_minutes=%g reached at step %d", self.tcfg.max_minutes, self.state.step)
                    break
                if self.stop_signal is not None:
                    self.save("last")
                    reason = f"signal {signal.Signals(self.stop_signal).name}"
                    break
        finally:
            bar.close()
            for sig, old in previous.items():
                signal.signal(sig, old)
        if reason == "max_steps" and self.state.step and not (self.ckpt_dir / "last.pt").exists():
            self._validate_and_checkpoint()
        return reason

    def _all_agree(self, flag: bool) -> bool:
        """``flag`` of any rank, on every rank (under DDP the ranks' clocks differ; all must stop together)."""
        if self.dist.world_size == 1 or not self.tcfg.max_minutes:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _validate_and_checkpoint(self) -> bool:
        """Validate, save ``last`` (and ``best``); return True when early stopping triggers."""
        val = self.validate()
        record = {"step": self.state.step, "val_loss": val}
        self._log(record)
        improved = val < self.state.best_val
        if improved:
            self.state.best_val = val
            self.state.stale_validations = 0
        else:
            self.state.stale_validations += 1
        self.save("last")
        if improved:
            self.save("best")
        log.info("step %d val_loss %.5f%s", self.state.step, val, " (best)" if improved else "")
        patience = self.tcfg.early_stop_patience
        return patience > 0 and self.state.stale_validations >= patience

    def _log(self, record: dict[str, float]) -> None:
        self.state.history.append(record)
        if not self.dist.is_main:
            return
        path = self.run_dir / "metrics.csv"
        fields = ["step", "train_loss", "val_loss", "samples_per_s"]
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerow({k: record.get(k, "") for k in fields})

    # ------------------------------------------------------------------ test pass
    @torch.no_grad()
    def test(self) -> dict[str, Any]:
        """Score the best weights and persistence on the test set through ``evaluate``'s scoring path.

        The network forecasts through :class:`~nowcast.forecast.Forecaster` (rain floor, no-data mask)
        and persistence through :mod:`nowcast.methods`, scored by
        :func:`nowcast.evaluation.score_windows` on the test windows in physical units. Lagrangian
        test windows are already in the frame that moves with the rain, so the model runs there
        directly and persistence in that frame is LK extrapolation (reported under that name).
        """
        from nowcast.evaluation import DEFAULT_FSS_SCALES, WindowSpec, score_windows
        from nowcast.forecast import Forecaster
        from nowcast.methods import get_method, model_method

        best = self.ckpt_dir / "best.pt"
        if best.exists():
            self.model.load_state_dict(load_checkpoint(best)["model"])
        self.model.eval()
        forecaster = Forecaster(
            model=self.model,
            transform=self.bundle.transform,
            t_in=self.bundle.t_in,
            t_out=self.bundle.t_out,
            step_minutes=list(self.bundle.step_minutes),
            device=self.device,
            precision=self.precision.name,
        )
        baseline = "extrapolation" if self.bundle.frame == "lagrangian" else "persistence"
        methods = {"model": model_method(forecaster, members=1), baseline: get_method("persistence")}
        spec = WindowSpec(self.bundle.t_in, self.bundle.t_out, float(np.mean(self.bundle.step_minutes or [1.0])))
        result = score_windows(
            test_windows(self.bundle),
            spec,
            methods,
            thresholds=self.bundle.thresholds,
            fss_scales=DEFAULT_FSS_SCALES,
            probability_thresholds=(),
            radar=self.bundle.radar,
            keep=self.tcfg.gif_samples,
        )
        example = None  # trainer.gif_samples=0: no sample pictures
        if result.samples:
            inputs, observed, forecasts = zip(*result.samples, strict=True)
            example = (np.stack(inputs), np.stack(observed), np.stack([f["model"] for f in forecasts]))
        return {"scores": result.scores, "example": example}


def test_windows(bundle: DataBundle) -> Iterator[tuple]:
    """The test set as ``(inputs (t_in, H, W), observed (t_out, H, W), times, step_minutes, motion)`` windows.

    Physical units (mm/h for radar), NaN where a radar pixel has no data; ``motion`` ``(2, H, W)``
    the motion a Lagrangian window was brought into its frame with (None for other windows).
    """
    decode = bundle.transform.decode
    for k in range(len(bundle.test)):
        item = bundle.test[k]
        frames = decode(item["frames"][:, 0].numpy()).astype(np.float32)  # (T, H, W)
        if "valid" in item:
            frames[item["valid"][:, 0].numpy() < 0.5] = np.nan
        step = float(item["step_minutes"]) if "step_minutes" in item else None
        motion = item["motion"].numpy() if "motion" in item else None
        yield frames[: bundle.t_in], frames[bundle.t_in :], [], step, motion


def try_compile(model: torch.nn.Module, backend: Any = "inductor") -> torch.nn.Module:
    """``torch.compile(model)`` that runs eagerly wherever compiling fails (``trainer.compile``).

    Compiling happens on the first call, so a missing C++ compiler or an unsupported op shows up
    only then; with dynamo's ``suppress_errors`` such a failure logs a warning and that code runs
    eagerly instead of stopping the run.
    """
    try:
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
        return torch.compile(model, backend=backend)
    except Exception as err:  # noqa: BLE001 - compile is an optional speed-up
        log.warning("torch.compile unavailable (%s); running eagerly", err)
        return model


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, test and write every output into ``run_dir``; returns the metrics dict."""
    from nowcast import plots

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir)
    log.info(
        "model %s: %d parameters, %d steps, device %s, precision %s (%s)",
        trainer.model_config.cell,
        count_parameters(trainer.model),
        trainer.total_steps,
        trainer.device,
        trainer.precision.name,
        trainer.precision.reason,
    )
    try:
        reason = trainer.fit()
    finally:
        if dist.is_initialized():
            dist.barrier()
    if reason.startswith("signal"):
        log.warning(
            "stopped by %s at step %d; resume with trainer.resume=%s",
            reason,
            trainer.state.step,
            trainer.ckpt_dir / "last.pt",
        )
        return {"stopped": reason, "step": trainer.state.step}
    if not trainer.dist.is_main:
        dist.destroy_process_group()
        return {}
    result = trainer.test()
    metrics = {
        "step": trainer.state.step,
        "stopped": reason,
        "best_val_loss": trainer.state.best_val,
        "parameters": count_parameters(trainer.model),
        "thresholds": trainer.bundle.thresholds,
        "lead_times": list(range(1, trainer.bundle.t_out + 1)),
        "test": result["scores"],
    }
    atomic_write(run_dir / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2)))
    plots.scores_by_lead(result["scores"], run_dir / "scores_by_lead.png", trainer.bundle.thresholds)
    plots.loss_curve(trainer.state.history, run_dir / "loss_curve.png")
    if result["example"] is not None:
        inputs, truth, forecast = result["example"]
        kind = "radar" if trainer.bundle.radar else "gray"
        plots.animate(*plots.sample_panels(inputs, truth, forecast), run_dir / "forecast.gif", kind)
        plots.sample_grid(inputs, truth, forecast, run_dir / "samples.png", radar=trainer.bundle.radar)
    log.info("outputs in %s", run_dir)
    if dist.is_initialized():
        dist.destroy_process_group()
    return metrics
