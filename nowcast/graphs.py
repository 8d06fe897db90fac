"""CUDA graphs for training: one optimiser step captured once and replayed (``trainer.cuda_graphs``).

A ConvLSTM step launches a few small kernels per layer and time step; at the batch sizes of
nowcasting (8–64 sequences) a GPU finishes each of them faster than Python can launch the next,
so eager training is bound by launch latency, not by FLOPs. A CUDA graph records the whole step
(forward, loss, backward, gradient clipping, Adam) once and replays it with one launch.

This follows PyTorch's "whole network capture" recipe: a few eager steps on a side stream first
(cuDNN autotuning, lazy state of the optimiser), gradients set to None before capture so the
backward pass allocates them from the graph's private pool, an optimiser built with
``capturable=True`` and a tensor learning rate (so a schedule can change it between replays), and
autocast without its weight cache. Every call is one real optimiser step on its own batch: the
warm-up steps train too, and the capture call replays once after recording.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: Eager steps before capture; PyTorch's recipe uses 3 (11 under DistributedDataParallel).
WARMUP_STEPS = 3


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set every group's learning rate; a tensor rate (captured in a graph) is filled in place."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Turn an Adam-style optimiser (fresh or just resumed) into one a CUDA graph can capture.

    Sets ``capturable=True``, makes each group's learning rate a float32 tensor on the parameters' device,
    and moves the per-parameter ``step`` counters there (a resumed checkpoint may hold them on the
    CPU or come from a run without graphs).
    """
    for group in optimizer.param_groups:
        device = group["params"][0].device
        if "capturable" not in group:
            raise ValueError(f"{type(optimizer).__name__} cannot be captured in a CUDA graph; use adam")
        group["capturable"] = True
        # a resumed rate is a tensor on the CPU (checkpoints load there); a graph needs it on the GPU
        group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32).to(device)
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


class GraphedStep:
    """One optimiser step ``step(*inputs) -> loss`` run eagerly ``warmup`` times, then as a CUDA graph.

    ``step`` does forward, loss, backward and ``optimizer.step()`` (not ``zero_grad``: this class
    sets the gradients to None before each eager step and before capture). ``inputs`` are tensors
    of the same shapes on every call, or None where a batch has no such entry (the same on every
    call). Returns the loss as a 0-d tensor on the GPU; reading it synchronises.
    """

    def __init__(
        self,
        step: Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer,
        warmup: int = WARMUP_STEPS,
    ) -> None:
        self.step = step
        self.optimizer = optimizer
        self.warmup = warmup
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[torch.Tensor | None, ...] = ()
        self.static_loss: torch.Tensor | None = None
        self.side_stream = torch.cuda.Stream()

    @property
    def captured(self) -> bool:
        """Whether the step is recorded and calls now replay it."""
        return self.graph is not None

    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        """One optimiser step on ``inputs``; the loss as a 0-d tensor."""
        if self.graph is None:
            if self.eager_steps < self.warmup:
                return self._eager(inputs)
            self._capture(inputs)
        self._check_shapes(inputs)
        for static, new in zip(self.static_inputs, inputs, strict=True):
            if static is not None:
                static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.static_loss

    def _eager(self, inputs: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.step(*inputs)
        torch.cuda.current_stream().wait_stream(self.side_stream)
        self.eager_steps += 1
        return loss

    def _capture(self, inputs: tuple[torch.Tensor | None, ...]) -> None:
        self.static_inputs = tuple(None if x is None else x.clone() for x in inputs)
        torch.cuda.synchronize()
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the DataLoader's pin-memory thread may allocate pinned memory meanwhile,
        # which the default "global" mode counts as an error of this capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.static_loss = self.step(*self.static_inputs)
        self.graph = graph

    def _check_shapes(self, inputs: tuple[torch.Tensor | None, ...]) -> None:
        for static, new in zip(self.static_inputs, inputs, strict=True):
            if (static is None) != (new is None) or (static is not None and static.shape != new.shape):
                raise ValueError(
                    "a CUDA graph replays fixed shapes: captured "
                    f"{[None if s is None else tuple(s.shape) for s in self.static_inputs]}, got "
                    f"{[None if s is None else tuple(s.shape) for s in inputs]} (use trainer.cuda_graphs=false)"
                )
