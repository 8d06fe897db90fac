"""Convolutional recurrent cells: each does one time step; the stack unrolls them.

Every cell splits its gate pre-activations into an *input-to-state* part, computed by
:meth:`ConvRNNCell.project_inputs` for all time steps in one batched convolution, and a
*state-to-state* part computed per step in :meth:`ConvRNNCell.forward`. The sum equals one
convolution over the concatenation ``[x, h]`` used in the papers, because convolution is linear.
A state of ``None`` stands for the all-zero initial state and skips the convolution over it.

Shapes: inputs ``(N, C_in, H, W)`` (N = time steps × batch); hidden and cell states
``(B, C_hid, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]


class ConvRNNCell(nn.Module):
    """Base class: owns the input and hidden convolutions and the gate bias.

    Parameters
    ----------
    in_channels
        Channels of the cell's input; 0 for a cell that receives no input (the paper's
        first forecaster layer), in which case only the state-to-state path exists.
    hidden_channels
        Channels of the hidden (and cell) state.
    kernel_size
        Odd kernel size of both convolutions; padding is ``kernel_size // 2``.
    frame_size
        ``(H, W)`` of the state, needed only by cells with per-pixel weights.

    """

    n_gates: int = 4
    n_states: int = 2
    #: Whether :meth:`fused_gates` + :meth:`step` can replace :meth:`forward` (one convolution over
    #: ``[x, h]`` per step, as the common code does).
    fusable: bool = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        padding = kernel_size // 2
        gate_channels = self.n_gates * hidden_channels
        self.input_conv = (
            nn.Conv2d(in_channels, gate_channels, kernel_size, padding=padding, bias=False) if in_channels > 0 else None
        )
        self.hidden_conv = nn.Conv2d(
            hidden_channels, self._hidden_gate_channels(), kernel_size, padding=padding, bias=False
        )
        self.bias = nn.Parameter(torch.zeros(gate_channels))

    def _hidden_gate_channels(self) -> int:
        return self.n_gates * self.hidden_channels

    def project_inputs(self, x: Tensor) -> Tensor | None:
        """Input-to-state pre-activations plus the gate bias, for many frames at once.

        ``(N, C_in, H, W) -> (N, G*C_hid, H, W)``; None for a cell without input.
        """
        if self.input_conv is None:
            return None
        y = self.input_conv(x)
        return y + self._bias_like(y)

    def _bias_like(self, t: Tensor) -> Tensor:
        """The gate bias as ``(1, G*C_hid, 1, 1)`` in ``t``'s dtype (under autocast it would promote to fp32)."""
        return self.bias.to(t.dtype)[None, :, None, None]

    def init_state(self, reference: Tensor, height: int, width: int) -> State:
        """Zero state shaped from ``reference``'s batch size, device and dtype."""
        shape = (reference.shape[0], self.hidden_channels, height, width)
        return tuple(torch.zeros(shape, device=reference.device, dtype=reference.dtype) for _ in range(self.n_states))

    def _gates(self, x_gates: Tensor | None, h: Tensor | None) -> Tensor:
        """Gate pre-activations ``(B, G*C_hid, H, W)``; ``h=None`` is the zero state (no convolution)."""
        if h is None:
            if x_gates is None:
                raise ValueError("a cell needs an input or a state")
            return x_gates
        gates = self.hidden_conv(h)
        return gates + (x_gates if x_gates is not None else self._bias_like(gates))

    def fused_weight(self) -> Tensor:
        """``[W_x, W_h]`` stacked on the input-channel axis, ``(G*C_hid, C_in + C_hid, k, k)``."""
        return torch.cat([self.input_conv.weight, self.hidden_conv.weight], dim=1)

    def fused_gates(self, x: Tensor, h: Tensor | None, weight: Tensor) -> Tensor:
        """Gate pre-activations from one convolution over ``cat([x, h])`` (``h=None``: zero state).

        ``x`` ``(B, C_in, H, W)`` is the raw input of one step, ``weight`` :meth:`fused_weight`.
        Equal to ``_gates(project_inputs(x), h)`` up to rounding.
        """
        padding = self.kernel_size // 2
        if h is None:
            gates = F.conv2d(x, self.input_conv.weight.to(x.dtype), padding=padding)
        else:
            gates = F.conv2d(torch.cat([x, h], dim=1), weight.to(x.dtype), padding=padding)
        return gates + self._bias_like(gates)

    def forward(self, x_gates: Tensor | None, state: State | None) -> State:
        """Advance one step; ``x_gates`` is one time slice of :meth:`project_inputs` (None: no input).

        ``state=None`` is the all-zero initial state.
        """
        h = state[0] if state is not None else None
        return self.step(self._gates(x_gates, h), state)

    def step(self, gates: Tensor, state: State | None) -> State:  # pragma: no cover
        """The cell's update from its gate pre-activations ``(B, G*C_hid, H, W)``."""
        raise NotImplementedError


class ConvLSTMCell(ConvRNNCell):
    r"""Convolutional LSTM cell of Shi et al. (2015), eqs. (3).

    .. math::
        i_t &= \sigma(W_{xi} * X_t + W_{hi} * H_{t-1} + W_{ci} \circ C_{t-1} + b_i) \\
        f_t &= \sigma(W_{xf} * X_t + W_{hf} * H_{t-1} + W_{cf} \circ C_{t-1} + b_f) \\
        g_t &= \tanh(W_{xc} * X_t + W_{hc} * H_{t-1} + b_c) \\
        C_t &= f_t \circ C_{t-1} + i_t \circ g_t \\
        o_t &= \sigma(W_{xo} * X_t + W_{ho} * H_{t-1} + W_{co} \circ C_t + b_o) \\
        H_t &= o_t \circ \tanh(C_t)

    ``*`` is convolution and ``\circ`` the Hadamard product. The peephole terms
    ``W_c\cdot \circ C`` are present only with ``peephole=True``; their weights are learned per
    pixel, shape ``(C_hid, H, W)``, when ``frame_size`` is given, else per channel
    ``(C_hid, 1, 1)`` so the cell stays fully convolutional. Gate order in the stacked
    convolution output: i, f, o, g. The forget-gate bias starts at 1.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        frame_size: tuple[int, int] | None = None,
        peephole: bool = False,
    ) -> None:
        super().__init__(in_channels, hidden_channels, kernel_size, frame_size)
        with torch.no_grad():
            self.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)
        self.peephole = peephole
        if peephole:
            shape = (hidden_channels, *frame_size) if frame_size else (hidden_channels, 1, 1)
            self.w_ci = nn.Parameter(torch.zeros(shape))
            self.w_cf = nn.Parameter(torch.zeros(shape))
            self.w_co = nn.Parameter(torch.zeros(shape))

    def step(self, gates: Tensor, state: State | None) -> State:
        """One step from the gate pre-activations: returns ``(H_t, C_t)``, each ``(B, C_hid, H, W)``."""
        c = state[1] if state is not None else None
        i, f, o, g = gates.chunk(4, dim=1)
        if c is None:  # zero state: the forget and peephole terms vanish
            c_next = torch.sigmoid(i) * torch.tanh(g)
        else:
            if self.peephole:
                i = i + self.w_ci * c
                f = f + self.w_cf * c
            c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.peephole:
            o = o + self.w_co * c_next
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        return h_next, c_next


class ConvLSTMPeepholeCell(ConvLSTMCell):
    """:class:`ConvLSTMCell` with the paper's peephole terms switched on (Gers & Schmidhuber 2000)."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(in_channels, hidden_channels, kernel_size, frame_size, peephole=True)


class ConvLSTMCoupledCell(ConvRNNCell):
    r"""ConvLSTM with coupled input and forget gates (Greff et al. 2017, "CIFG").

    .. math::
        i_t &= \sigma(W_{xi} * X_t + W_{hi} * H_{t-1} + b_i), \quad f_t = 1 - i_t \\
        g_t &= \tanh(W_{xc} * X_t + W_{hc} * H_{t-1} + b_c) \\
        C_t &= f_t \circ C_{t-1} + i_t \circ g_t \\
        o_t &= \sigma(W_{xo} * X_t + W_{ho} * H_{t-1} + b_o), \quad H_t = o_t \circ \tanh(C_t)

    Gate order: i, o, g. Three gate convolutions instead of four.
    """

    n_gates = 3

    def step(self, gates: Tensor, state: State | None) -> State:
        """One step from the gate pre-activations: returns ``(H_t, C_t)``."""
        c = state[1] if state is not None else None
        i, o, g = gates.chunk(3, dim=1)
        i = torch.sigmoid(i)
        c_next = i * torch.tanh(g) if c is None else (1 - i) * c + i * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        return h_next, c_next


class ConvGRUCell(ConvRNNCell):
    r"""Convolutional GRU (Cho et al. 2014; Ballas et al. 2016), no separate cell state.

    .. math::
        z_t &= \sigma(W_{xz} * X_t + W_{hz} * H_{t-1} + b_z) \\
        r_t &= \sigma(W_{xr} * X_t + W_{hr} * H_{t-1} + b_r) \\
        \tilde H_t &= \tanh(W_{xh} * X_t + W_{hh} * (r_t \circ H_{t-1}) + b_h) \\
        H_t &= (1 - z_t) \circ H_{t-1} + z_t \circ \tilde H_t

    Input-gate order: z, r, h. ``hidden_conv`` gives the z and r terms; ``candidate_conv``
    convolves ``r_t \circ H_{t-1}``.
    """

    n_gates = 3
    n_states = 1
    fusable = False  # the candidate convolves r∘h, which needs the gates first

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(in_channels, hidden_channels, kernel_size, frame_size)
        self.candidate_conv = nn.Conv2d(
            hidden_channels, hidden_channels, kernel_size, padding=kernel_size // 2, bias=False
        )

    def _hidden_gate_channels(self) -> int:
        return 2 * self.hidden_channels

    def forward(self, x_gates: Tensor | None, state: State | None) -> State:
        """One step: returns ``(H_t,)``."""
        if state is None:  # zero state: r∘h and (1 - z)∘h vanish
            z, _, h_cand = self._gates(x_gates, None).chunk(3, dim=1)
            return (torch.sigmoid(z) * torch.tanh(h_cand),)
        (h,) = state
        hid = self.hidden_channels
        zr = self.hidden_conv(h)
        x_gates = x_gates if x_gates is not None else self._bias_like(zr)  # input terms + bias
        z, r = torch.sigmoid(zr + x_gates[:, : 2 * hid]).chunk(2, dim=1)
        h_cand = self.candidate_conv(r * h) + x_gates[:, 2 * hid :]
        h_next = (1 - z) * h + z * torch.tanh(h_cand)
        return (h_next,)


CELLS: dict[str, type[ConvRNNCell]] = {
    "convlstm": ConvLSTMCell,
    "convlstm_peephole": ConvLSTMPeepholeCell,
    "convlstm_coupled": ConvLSTMCoupledCell,
    "convgru": ConvGRUCell,
}


def get_cell(name: str) -> type[ConvRNNCell]:
    """Look up a cell class by its config name; the error lists the valid names."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; choose one of {sorted(CELLS)}") from None
