"""The encoder–forecaster network of Shi et al. (2015), Fig. 3.

A stack of recurrent cells encodes the input frames; a second stack, initialised from the
encoder's final states, unrolls the forecast; a 1×1 convolution over the hidden states of all
forecaster layers gives each output frame. Frames are folded into ``patch_size``×``patch_size``
space-to-depth patches before the network and unfolded after.

Unrolling is layer by layer: a layer runs over all time steps before the next layer starts, so
each layer's input-to-state convolution (and gate bias) runs once, batched over time. Inside,
tensors are time-major ``(T*B, C, H, W)``, so one step is a view, not a copy; the encoder starts
from the zero state without convolving it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from nowcast.models.cells import ConvRNNCell, State, get_cell

HEADS = ("frames", "residual")
#: How a layer is unrolled: ``split`` convolves the input once for all steps and the hidden state
#: per step; ``fused`` convolves ``cat([x_t, h])`` per step, as the common code does. Same result;
#: which is faster depends on the hardware and the shapes (see :func:`nowcast.unroll.choose_unroll`).
UNROLLS = ("split", "fused")

OUTPUT_ACTIVATIONS = {"sigmoid": torch.sigmoid, "identity": lambda x: x, "relu": F.relu}

#: Time steps are given to the network as ``step_minutes / STEP_SCALE_MINUTES``.
STEP_SCALE_MINUTES = 10.0
#: Motion is given to the network as pixels per time step divided by this (rain at 0.5 km/min
#: moves 2.5 pixels of 1 km per 5-minute step).
MOTION_SCALE_PIXELS = 4.0


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved in every checkpoint.

    Attributes
    ----------
    cell
        Recurrent cell name (see :data:`nowcast.models.cells.CELLS`).
    hidden
        Hidden channels per layer, bottom to top; the encoder and forecaster mirror it.
    kernel_size
        Kernel of the gate convolutions.
    patch_size
        Space-to-depth factor; frames are padded to a multiple of it.
    in_channels
        Channels of one frame (1 for radar rain rate or Moving-MNIST).
    output_activation
        ``sigmoid`` (values in [0, 1]), ``relu`` or ``identity``.
    step_channel
        Feed the time step (minutes) as a constant extra input channel, so one model serves
        radars on different cycles.
    motion_channels
        Feed the motion field (both components, pixels per time step, averaged over each patch)
        as two extra input channels of every step, encoder and forecaster alike. In the frame that
        moves with the rain the network otherwise cannot tell the upwind from the downwind side of
        a storm, nor a fast storm (whose extrapolation errs more) from a slow one.
    frame_size
        ``(H, W)`` of the frames when fixed (Moving-MNIST); enables per-pixel peephole weights.
    head
        ``frames``: the 1×1 convolution gives each output frame through depth-to-space (the
        paper). ``residual``: it gives, at patch resolution, a change ``Δ`` and one smoothing
        weight ``β_k`` per blur width, upsampled bilinearly (no patch blocks), and the forecast is
        ``x_last + Δ + Σ_k β_k·(blur_k(x_last) − x_last)`` with ``x_last`` the last input frame at
        full resolution. The convolution starts at zero, so an untrained residual model repeats
        ``x_last`` (in the Lagrangian frame: extrapolation).
    motion_correction
        The residual head also gives, per patch and lead, a displacement ``d`` (pixels, x then y,
        upsampled bilinearly) by which the smoothed last frame is moved before ``Δ`` is added:
        ``shift_d(x_last + Σ_k β_k·(blur_k(x_last) − x_last)) + Δ``. In the frame that moves with the
        rain a wrong motion shows as a drift of the advected inputs; a change ``Δ`` on coarse
        patches can only fade an edge there, a displacement can move it. Starts at zero (no shift).
    blur_sigmas
        Widths (σ, pixels of the full-resolution frame) of the Gaussians the residual head blends
        towards. Several widths let the network fade each scale of the rain at its own rate, where
        and when the inputs say it decays, as S-PROG's cascade does by a fixed rule.
    probability_thresholds
        Rain rates (mm/h) of a probability head beside the residual head (empty: none). For each
        threshold ``u`` and lead time it gives the logit of ``P(R ≥ u)`` as
        ``a + b_0·x_last + Σ_k b_k·blur_k(x_last)``, with ``a`` and the slopes ``b`` from a 1×1
        convolution over the forecaster's hidden states, upsampled bilinearly: the network sets,
        pixel by pixel and lead by lead, where the event is likely and how sharp its edge is. Trained
        with binary cross-entropy (``trainer.probability_weight``), also on its own on a trained
        model (``trainer.train_only=probability_head``); see :meth:`EncoderForecaster.init_probability_head`.

    """

    cell: str = "convlstm"
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    kernel_size: int = 3
    patch_size: int = 4
    in_channels: int = 1
    output_activation: str = "sigmoid"
    step_channel: bool = False
    motion_channels: bool = False
    frame_size: list[int] | None = None
    head: str = "frames"
    motion_correction: bool = False
    blur_sigmas: list[float] = field(default_factory=lambda: [2.0])
    probability_thresholds: list[float] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a (checkpoint or Hydra) mapping; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        values["hidden"] = [int(h) for h in values.get("hidden", [64, 64])]
        if values.get("frame_size") is not None:
            values["frame_size"] = [int(s) for s in values["frame_size"]]
        values["blur_sigmas"] = [float(s) for s in values.get("blur_sigmas", [2.0])]
        values["probability_thresholds"] = [float(u) for u in values.get("probability_thresholds") or []]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict, safe for ``torch.load(weights_only=True)``."""
        return asdict(self)


class EncoderForecaster(nn.Module):
    """ConvLSTM-family encoder–forecaster.

    ``forward(frames, n_out)`` maps ``(B, T_in, C, H, W)`` to ``(B, n_out, C, H, W)``.
    Any ``H, W`` works (the net is fully convolutional) unless ``frame_size`` fixes it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"unknown output_activation {config.output_activation!r}; choose one of {sorted(OUTPUT_ACTIVATIONS)}"
            )
        self.config = config
        cell_cls = get_cell(config.cell)
        p = config.patch_size
        extra = (1 if config.step_channel else 0) + (2 if config.motion_channels else 0)
        frame_channels = config.in_channels * p * p
        grid = None
        if config.frame_size is not None:
            grid = (-(-config.frame_size[0] // p), -(-config.frame_size[1] // p))
        k = config.kernel_size
        below = [frame_channels + extra, *config.hidden[:-1]]
        self.encoder = nn.ModuleList(
            cell_cls(c_in, c_hid, k, grid) for c_in, c_hid in zip(below, config.hidden, strict=True)
        )
        below_fc = [extra, *config.hidden[:-1]]
        self.forecaster = nn.ModuleList(
            cell_cls(c_in, c_hid, k, grid) for c_in, c_hid in zip(below_fc, config.hidden, strict=True)
        )
        if config.head not in HEADS:
            raise ValueError(f"unknown head {config.head!r}; choose one of {HEADS}")
        if config.head == "residual":
            if config.in_channels != 1:
                raise ValueError("head residual needs in_channels=1")
            if not config.blur_sigmas or min(config.blur_sigmas) <= 0:
                raise ValueError(f"blur_sigmas must be positive widths in pixels, got {config.blur_sigmas}")
            shift_channels = 2 if config.motion_correction else 0
            self.output_conv = nn.Conv2d(
                sum(config.hidden), 1 + len(config.blur_sigmas) + shift_channels, kernel_size=1
            )
            nn.init.zeros_(self.output_conv.weight)
            nn.init.zeros_(self.output_conv.bias)
            for k, sigma in enumerate(config.blur_sigmas):
                self.register_buffer(f"blur_kernel_{k}", _gaussian_kernel_1d(sigma), persistent=False)
        else:
            if config.motion_correction:
                raise ValueError("motion_correction needs head residual")
            self.output_conv = nn.Conv2d(sum(config.hidden), frame_channels, kernel_size=1)
        self.probability_conv: nn.Conv2d | None = None
        if config.probability_thresholds:
            if config.head != "residual":
                raise ValueError("probability_thresholds need head residual")
            per_threshold = 2 + len(config.blur_sigmas)  # a, b_0, b_k
            self.probability_conv = nn.Conv2d(
                sum(config.hidden), per_threshold * len(config.probability_thresholds), kernel_size=1
            )
        self.activation = OUTPUT_ACTIVATIONS[config.output_activation]
        #: Recompute each step in the backward pass to save memory (``trainer.checkpoint_steps``).
        self.gradient_checkpointing = False
        #: One of :data:`UNROLLS`; an execution detail, not saved in checkpoints.
        self.unroll = "split"

    def init_probability_head(self, levels: list[float], slope: float = 20.0) -> None:
        """Start the probability head at ``logit = slope·(x_last − level_u)``: extrapolation's edge, softened.

        ``levels`` are the thresholds in model space (the data transform of
        ``probability_thresholds``); ``slope`` is per unit of model space (20: ``P`` goes from 0.27
        to 0.73 across 0.1 of it, about a factor 1.6 in rain rate near 1 mm/h).
        """
        if self.probability_conv is None:
            raise ValueError("this model has no probability head (model.probability_thresholds is empty)")
        per_threshold = 2 + len(self.config.blur_sigmas)
        with torch.no_grad():
            self.probability_conv.weight.zero_()
            bias = torch.zeros(per_threshold, len(levels))
            bias[0] = -slope * torch.tensor(levels, dtype=torch.float32)
            bias[1] = slope
            self.probability_conv.bias.copy_(bias.T.flatten())

    @property
    def channels_last(self) -> bool:
        """Whether the weights are in the channels-last memory format (``model.to(memory_format=…)``).

        Read from a gate convolution's weight, where the two formats differ; a 1×1 weight, such as
        the output convolution's, is contiguous in both and would always say yes.
        """
        weight = self.encoder[0].hidden_conv.weight
        return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    def forward(
        self,
        frames: Tensor,
        n_out: int,
        step_minutes: Tensor | None = None,
        probabilities: bool = False,
        motion: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Forecast ``n_out`` frames.

        Parameters
        ----------
        frames
            Input frames ``(B, T_in, C, H, W)`` in model space.
        n_out
            Number of frames to forecast.
        step_minutes
            Time step of the sequence in minutes, ``(B,)``; required when the model was built
            with ``step_channel=True``.
        probabilities
            Also return the probability head's logits (see ``probability_thresholds``).
        motion
            Motion ``(B, 2, H, W)`` in pixels per time step (x then y component, as pysteps),
            required when the model was built with ``motion_channels=True``.

        Returns
        -------
        Tensor or tuple of Tensor
            Forecast ``(B, n_out, C, H, W)``; with ``probabilities`` also the logits of
            ``P(R ≥ u)``, ``(B, n_out, U, H, W)``, one channel per threshold.

        """
        b, t_in, c, h, w = frames.shape
        p = self.config.patch_size
        # Time-major inside: (T*B, C, H, W) with the B frames of one step adjacent in memory, so
        # per-step slices are views and the batched convolutions see one contiguous batch.
        x = frames.transpose(0, 1).flatten(0, 1)  # (T_in*B, C, H, W)
        pad_h, pad_w = (-h) % p, (-w) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = F.pixel_unshuffle(x, p)  # (T_in*B, C*p*p, h', w')
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        step_field = self._conditions(step_minutes, motion, x[:b])  # (B, E, h', w') or None
        if step_field is not None:
            x = torch.cat([x, step_field.repeat(t_in, 1, 1, 1)], dim=1)

        states: list[State] = []
        layer_input = x
        for cell in self.encoder:
            if self._fused(cell):
                layer_input, state = self._unroll_fused(cell, layer_input, None, t_in, b)
            else:
                layer_input, state = self._unroll(cell, cell.project_inputs(layer_input), None, t_in, b)
            states.append(state)  # layer_input: (T_in*B, C_hid, h', w')

        hidden_all: list[Tensor] = []
        layer_input = step_field
        for cell, state in zip(self.forecaster, states, strict=True):
            if layer_input is not None and self._fused(cell):
                layer_input, _ = self._unroll_fused(cell, layer_input, state, n_out, b)
            else:
                projected = cell.project_inputs(layer_input) if layer_input is not None else None
                layer_input, _ = self._unroll(cell, projected, state, n_out, b)
            hidden_all.append(layer_input)  # (n_out*B, C_hid, h', w')

        features = torch.cat(hidden_all, dim=1)  # (n_out*B, sum(hidden), h', w')
        basis = self._blur_basis(frames[:, -1]) if self.config.head == "residual" else None  # (B, 1 + K, H, W)
        if basis is not None:
            y = self._residual(self.output_conv(features), basis, n_out, h, w)
        else:
            y = F.pixel_shuffle(self.output_conv(features), p)  # (n_out*B, C, H+pad, W+pad)
            y = y[..., :h, :w]
        y = self.activation(y).unflatten(0, (n_out, b)).transpose(0, 1)  # (B, n_out, C, H, W)
        if not probabilities:
            return y
        if self.probability_conv is None:
            raise ValueError("this model has no probability head (model.probability_thresholds is empty)")
        logits = self._probability_logits(self.probability_conv(features), basis, n_out, h, w)
        return y, logits.unflatten(0, (n_out, b)).transpose(0, 1)  # (B, n_out, U, H, W)

    def _residual(self, change: Tensor, basis: Tensor, n_out: int, h: int, w: int) -> Tensor:
        """Forecast ``x_last + Δ + Σ_k β_k·(blur_k(x_last) − x_last)``, ``(n_out*B, 1, H, W)`` (shifted: see below).

        ``change`` holds ``Δ``, the ``β_k`` and, with ``motion_correction``, the displacement ``d``
        at patch resolution, ``(n_out*B, 1 + K [+ 2], h', w')``; ``basis`` is :meth:`_blur_basis` of
        the last input frame, ``(B, 1 + K, H, W)``. With a displacement the smoothed last frame is
        moved by ``d`` before ``Δ`` is added.
        """
        change = self._upsample(change, h, w).unflatten(0, (n_out, -1))  # (n_out, B, 1 + K [+ 2], H, W)
        widths = len(self.config.blur_sigmas)
        last = basis[:, :1]
        smoothed = last.expand(n_out, *last.shape)
        for k in range(widths):
            smoothed = smoothed + change[:, :, k + 1 : k + 2] * (basis[:, k + 1 : k + 2] - last)
        smoothed = smoothed.flatten(0, 1)  # (n_out*B, 1, H, W)
        if self.config.motion_correction:
            displacement = change[:, :, widths + 1 : widths + 3].flatten(0, 1) * MOTION_SCALE_PIXELS
            smoothed = shift(smoothed, displacement)
        return smoothed + change[:, :, :1].flatten(0, 1)

    def _probability_logits(self, coefficients: Tensor, basis: Tensor, n_out: int, h: int, w: int) -> Tensor:
        """Logits ``a + b_0·x_last + Σ_k b_k·blur_k(x_last)`` per threshold, ``(n_out*B, U, H, W)``.

        ``coefficients`` ``(n_out*B, U·(2 + K), h', w')`` at patch resolution, grouped by threshold;
        ``basis`` is :meth:`_blur_basis` of the last input frame, ``(B, 1 + K, H, W)``.
        """
        coefficients = self._upsample(coefficients, h, w).unflatten(0, (n_out, -1))  # (n_out, B, U*(2+K), H, W)
        coefficients = coefficients.unflatten(2, (len(self.config.probability_thresholds), -1))  # (.., U, 2+K, ..)
        logits = coefficients[:, :, :, 0] + (coefficients[:, :, :, 1:] * basis[:, None]).sum(dim=3)
        return logits.flatten(0, 1)

    def _blur_basis(self, last: Tensor) -> Tensor:
        """``[x_last, blur_1(x_last), …]``, ``(B, 1 + K, H, W)`` float32."""
        last = last.float()
        blurs = [_separable_blur(last, getattr(self, f"blur_kernel_{k}")) for k in range(len(self.config.blur_sigmas))]
        return torch.cat([last, *blurs], dim=1)

    def _upsample(self, coarse: Tensor, h: int, w: int) -> Tensor:
        """Bilinear from patch resolution to ``(H, W)``, ``(N, C, h', w') -> (N, C, H, W)`` float32."""
        p = self.config.patch_size
        # a 1×1 convolution's output can come channels-last, where this interpolation ran 3× slower
        fine = F.interpolate(
            coarse.float().contiguous(), size=(h + (-h) % p, w + (-w) % p), mode="bilinear", align_corners=False
        )
        return fine[..., :h, :w]

    def _conditions(self, step_minutes: Tensor | None, motion: Tensor | None, like: Tensor) -> Tensor | None:
        """The extra input channels ``(B, E, h', w')`` shaped like ``like`` ``(B, C, h', w')``, or None.

        The time step as a constant channel (``step_channel``), then the motion averaged over each
        patch (``motion_channels``), both scaled to about 1.
        """
        channels = []
        if self.config.step_channel:
            if step_minutes is None:
                raise ValueError("this model needs step_minutes (it was trained on several time steps)")
            scaled = step_minutes.to(like.dtype).reshape(-1, 1, 1, 1) / STEP_SCALE_MINUTES
            channels.append(scaled.expand(-1, 1, *like.shape[-2:]))
        if self.config.motion_channels:
            if motion is None:
                raise ValueError("this model needs the motion field (it was trained with motion_channels)")
            channels.append(self._patch_motion(motion, like.shape[-2:]).to(like.dtype))
        if not channels:
            return None
        return torch.cat(channels, dim=1).contiguous(memory_format=torch.channels_last)

    def _patch_motion(self, motion: Tensor, grid: torch.Size) -> Tensor:
        """Motion ``(B, 2, H, W)`` px/step → its mean over each patch, ``(B, 2, h', w')``, scaled."""
        p = self.config.patch_size
        h, w = motion.shape[-2:]
        motion = motion.float()
        if (-h) % p or (-w) % p:  # the frames are zero-padded; the motion is carried on to the padding
            motion = F.pad(motion, (0, (-w) % p, 0, (-h) % p), mode="replicate")
        pooled = F.avg_pool2d(motion, p) / MOTION_SCALE_PIXELS
        if pooled.shape[-2:] != grid:
            raise ValueError(f"motion {tuple(motion.shape[-2:])} does not match the frames' grid")
        return pooled

    def _unroll(
        self, cell: ConvRNNCell, projected: Tensor | None, state: State | None, steps: int, batch: int
    ) -> tuple[Tensor, State]:
        """Run ``cell`` for ``steps`` from ``state`` (None: zero state).

        ``projected`` holds the input-to-state pre-activations, ``(steps*B, G*C_hid, h', w')``, or
        ``(B, ...)`` for an input that is the same at every step. Returns the hidden states of all
        steps ``(steps*B, C_hid, h', w')`` and the final state.
        """
        inputs = projected.split(batch) if projected is not None else None  # views, one per step
        outputs = []
        for t in range(steps):
            x_t = inputs[min(t, len(inputs) - 1)] if inputs is not None else None
            if self.gradient_checkpointing and torch.is_grad_enabled():
                state = checkpoint(cell, x_t, state, use_reentrant=False)
            else:
                state = cell(x_t, state)
            outputs.append(state[0])
        return torch.cat(outputs), state

    def _fused(self, cell: ConvRNNCell) -> bool:
        """Whether ``cell`` runs the fused unroll (not with gradient checkpointing)."""
        if self.unroll not in UNROLLS:
            raise ValueError(f"unknown unroll {self.unroll!r}; choose one of {UNROLLS}")
        checkpointing = self.gradient_checkpointing and torch.is_grad_enabled()
        return self.unroll == "fused" and cell.fusable and cell.input_conv is not None and not checkpointing

    def _unroll_fused(
        self, cell: ConvRNNCell, inputs: Tensor, state: State | None, steps: int, batch: int
    ) -> tuple[Tensor, State]:
        """Like :meth:`_unroll`, with one convolution over ``cat([x_t, h])`` per step.

        ``inputs`` are the raw inputs ``(steps*B or B, C_in, h', w')``, not their projection.
        """
        # the inputs' memory format, once here, not in every step's forward and backward convolution
        # (3 copies of W per step); a no-op where the formats already agree
        channels_last = inputs.is_contiguous(memory_format=torch.channels_last)
        weight = cell.fused_weight().contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        per_step = inputs.split(batch)  # views, one per step (or one for a constant input)
        outputs = []
        for t in range(steps):
            h = state[0] if state is not None else None
            state = cell.step(cell.fused_gates(per_step[min(t, len(per_step) - 1)], h, weight), state)
            outputs.append(state[0])
        return torch.cat(outputs), state


def shift(frames: Tensor, displacement: Tensor) -> Tensor:
    """Move ``frames`` ``(N, C, H, W)`` by ``displacement`` ``(N, 2, H, W)`` (pixels, x then y).

    ``out(p) = frames(p − d(p))``, bilinear; points from beyond the edge take the edge's value.
    A zero displacement gives ``frames`` back (to float rounding).
    """
    _, _, h, w = frames.shape
    with torch.autocast(frames.device.type, enabled=False):  # bf16 coordinates would be off by pixels
        frames, displacement = frames.float(), displacement.float()
        rows = torch.arange(h, dtype=torch.float32, device=frames.device)
        cols = torch.arange(w, dtype=torch.float32, device=frames.device)
        x = cols.view(1, 1, w) - displacement[:, 0]  # (N, H, W) departure points, pixels
        y = rows.view(1, h, 1) - displacement[:, 1]
        grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)  # (N, H, W, 2)
        return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _gaussian_kernel_1d(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian of ``sigma`` pixels, ``(K,)`` with K = 2·ceil(3σ) + 1."""
    radius = int(math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _separable_blur(frames: Tensor, kernel: Tensor) -> Tensor:
    """Gaussian blur of ``(N, 1, H, W)`` along columns then rows, edges replicated (any kernel size)."""
    radius = kernel.numel() // 2
    for dim, shape in ((-1, (1, 1, 1, -1)), (-2, (1, 1, -1, 1))):
        first, last = frames.narrow(dim, 0, 1), frames.narrow(dim, frames.shape[dim] - 1, 1)
        sizes = list(frames.shape)
        sizes[dim] = radius
        padded = torch.cat([first.expand(sizes), frames, last.expand(sizes)], dim=dim)
        frames = F.conv2d(padded, kernel.view(shape))
    return frames


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
