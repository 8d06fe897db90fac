"""Cells against hand computations of their equations."""

import math

import pytest
import torch
import torch.nn.functional as F

from nowcast.models.cells import CELLS, ConvGRUCell, ConvLSTMCell, ConvLSTMCoupledCell, get_cell


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _scalar_cell(cls, **kw):
    """A 1-channel, 1×1-kernel cell with chosen weights, so every gate is plain arithmetic."""
    torch.manual_seed(0)
    cell = cls(1, 1, kernel_size=1, **kw)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.arange(1, p.numel() + 1, dtype=p.dtype).reshape(p.shape) * 0.1)
    return cell


def test_convlstm_scalar_matches_equations():
    cell = _scalar_cell(ConvLSTMCell)
    x, h, c = 0.5, -0.3, 0.8
    wx = cell.input_conv.weight.flatten().tolist()  # i, f, o, g
    wh = cell.hidden_conv.weight.flatten().tolist()
    b = cell.bias.tolist()
    i = sigmoid(wx[0] * x + wh[0] * h + b[0])
    f = sigmoid(wx[1] * x + wh[1] * h + b[1])
    o = sigmoid(wx[2] * x + wh[2] * h + b[2])
    g = math.tanh(wx[3] * x + wh[3] * h + b[3])
    c_next = f * c + i * g
    h_next = o * math.tanh(c_next)
    xt = torch.full((1, 1, 1, 1), x)
    h1, c1 = cell(cell.project_inputs(xt), (torch.full((1, 1, 1, 1), h), torch.full((1, 1, 1, 1), c)))
    assert h1.item() == pytest.approx(h_next, rel=1e-6)
    assert c1.item() == pytest.approx(c_next, rel=1e-6)


def test_convlstm_peephole_scalar_matches_equations():
    cell = _scalar_cell(ConvLSTMCell, peephole=True)
    x, h, c = 0.5, -0.3, 0.8
    wx = cell.input_conv.weight.flatten().tolist()
    wh = cell.hidden_conv.weight.flatten().tolist()
    b = cell.bias.tolist()
    wci, wcf, wco = cell.w_ci.item(), cell.w_cf.item(), cell.w_co.item()
    i = sigmoid(wx[0] * x + wh[0] * h + wci * c + b[0])
    f = sigmoid(wx[1] * x + wh[1] * h + wcf * c + b[1])
    g = math.tanh(wx[3] * x + wh[3] * h + b[3])
    c_next = f * c + i * g
    o = sigmoid(wx[2] * x + wh[2] * h + wco * c_next + b[2])
    h_next = o * math.tanh(c_next)
    h1, c1 = cell(
        cell.project_inputs(torch.full((1, 1, 1, 1), x)),
        (torch.full((1, 1, 1, 1), h), torch.full((1, 1, 1, 1), c)),
    )
    assert h1.item() == pytest.approx(h_next, rel=1e-6)
    assert c1.item() == pytest.approx(c_next, rel=1e-6)


def test_convlstm_equals_convolution_over_concatenation():
    """Split input/hidden convolutions equal the paper's one convolution over [x, h]."""
    torch.manual_seed(1)
    cell = ConvLSTMCell(2, 3, kernel_size=3, frame_size=(5, 6), peephole=True)
    with torch.no_grad():
        for name in ("w_ci", "w_cf", "w_co"):
            getattr(cell, name).normal_()
    x = torch.randn(2, 2, 5, 6)
    h, c = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    weight = torch.cat([cell.input_conv.weight, cell.hidden_conv.weight], dim=1)
    gates = F.conv2d(torch.cat([x, h], dim=1), weight, cell.bias, padding=1)
    i, f, o, g = gates.chunk(4, dim=1)
    i = torch.sigmoid(i + cell.w_ci * c)
    f = torch.sigmoid(f + cell.w_cf * c)
    c_ref = f * c + i * torch.tanh(g)
    h_ref = torch.sigmoid(o + cell.w_co * c_ref) * torch.tanh(c_ref)
    h1, c1 = cell(cell.project_inputs(x), (h, c))
    torch.testing.assert_close(h1, h_ref)
    torch.testing.assert_close(c1, c_ref)
    assert cell.w_ci.shape == (3, 5, 6)  # per-pixel peephole weights
    assert {n for n, _ in cell.named_parameters()} >= {"w_ci", "w_cf", "w_co"}


def test_coupled_cell_scalar():
    cell = _scalar_cell(ConvLSTMCoupledCell)
    x, h, c = 0.5, -0.3, 0.8
    wx = cell.input_conv.weight.flatten().tolist()  # i, o, g
    wh = cell.hidden_conv.weight.flatten().tolist()
    b = cell.bias.tolist()
    i = sigmoid(wx[0] * x + wh[0] * h + b[0])
    o = sigmoid(wx[1] * x + wh[1] * h + b[1])
    g = math.tanh(wx[2] * x + wh[2] * h + b[2])
    c_next = (1 - i) * c + i * g
    h1, c1 = cell(
        cell.project_inputs(torch.full((1, 1, 1, 1), x)),
        (torch.full((1, 1, 1, 1), h), torch.full((1, 1, 1, 1), c)),
    )
    assert c1.item() == pytest.approx(c_next, rel=1e-6)
    assert h1.item() == pytest.approx(o * math.tanh(c_next), rel=1e-6)


def test_convgru_scalar():
    cell = _scalar_cell(ConvGRUCell)
    x, h = 0.5, -0.3
    wx = cell.input_conv.weight.flatten().tolist()  # z, r, h
    wh = cell.hidden_conv.weight.flatten().tolist()  # z, r
    u = cell.candidate_conv.weight.item()
    b = cell.bias.tolist()
    z = sigmoid(wx[0] * x + wh[0] * h + b[0])
    r = sigmoid(wx[1] * x + wh[1] * h + b[1])
    cand = math.tanh(wx[2] * x + u * (r * h) + b[2])
    expected = (1 - z) * h + z * cand
    (h1,) = cell(cell.project_inputs(torch.full((1, 1, 1, 1), x)), (torch.full((1, 1, 1, 1), h),))
    assert h1.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_cells_without_input_and_backward(name):
    cell = get_cell(name)(0, 4, kernel_size=3)
    ref = torch.zeros(2, 1, 1, 6, 6)
    state = cell.init_state(ref, 6, 6)
    assert all(s.shape == (2, 4, 6, 6) for s in state)
    out = cell(None, state)
    out[0].sum().backward()
    assert cell.bias.grad is not None


@pytest.mark.parametrize("name", sorted(CELLS))
def test_zero_state_shortcut_equals_explicit_zeros(name):
    """``state=None`` skips the convolution over the zero state and gives the same step."""
    torch.manual_seed(2)
    cell = get_cell(name)(2, 3, kernel_size=3)
    for p in cell.parameters():
        torch.nn.init.normal_(p)
    x_gates = cell.project_inputs(torch.randn(2, 2, 5, 6))
    explicit = cell(x_gates, cell.init_state(x_gates, 5, 6))
    shortcut = cell(x_gates, None)
    for a, b in zip(explicit, shortcut, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="input or a state"):
        cell(None, None)


def test_unknown_cell_lists_names():
    with pytest.raises(ValueError, match="convgru"):
        get_cell("lstm9000")


def test_even_kernel_rejected():
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(1, 2, kernel_size=4)
