"""CUDA-graph training steps (:mod:`nowcast.graphs`): equal to eager steps; the helpers on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nowcast.graphs import GraphedStep, make_capturable, set_learning_rate
from nowcast.models import EncoderForecaster, ModelConfig

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_learning_rate_is_set_in_place_for_a_tensor_rate():
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([param], lr=0.1)
    set_learning_rate(optimizer, 0.5)
    assert optimizer.param_groups[0]["lr"] == 0.5
    make_capturable(optimizer)
    rate = optimizer.param_groups[0]["lr"]
    assert isinstance(rate, torch.Tensor) and optimizer.param_groups[0]["capturable"]
    set_learning_rate(optimizer, 0.25)
    assert optimizer.param_groups[0]["lr"] is rate and float(rate) == 0.25


def test_make_capturable_moves_resumed_step_counters_and_refuses_sgd():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param], lr=0.1)
    param.grad = torch.ones(3)
    optimizer.step()
    make_capturable(optimizer)
    assert optimizer.state[param]["step"].dtype == torch.float32
    with pytest.raises(ValueError, match="cannot be captured"):
        make_capturable(torch.optim.SGD([param], lr=0.1))


def _train(graphed: bool, precision: str, steps: int = 7) -> list[torch.Tensor]:
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = EncoderForecaster(ModelConfig(hidden=[16, 16], kernel_size=3, patch_size=4)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = torch.rand(steps, 4, 6, 1, 32, 32, device=device)

    def step(frames):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False):
            pred = model(frames[:, :3], 3).float()
        loss = F.mse_loss(pred, frames[:, 3:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach()

    if graphed:
        make_capturable(optimizer)
        runner = GraphedStep(step, optimizer)
    losses = []
    for k in range(steps):
        set_learning_rate(optimizer, 1e-3 * (1 - k / steps))  # a schedule, changed between replays
        if graphed:
            losses.append(runner(batches[k]).clone())
        else:
            optimizer.zero_grad(set_to_none=True)
            losses.append(step(batches[k]))
    if graphed:
        assert runner.captured
    return [*losses, *[p.detach().clone() for p in model.parameters()]]


@needs_cuda
@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_graphed_steps_equal_eager_steps(precision):
    torch.backends.cudnn.deterministic = True
    eager, graphed = _train(False, precision), _train(True, precision)
    tolerance = 1e-5 if precision == "32" else 1e-3
    for a, b in zip(eager, graphed, strict=True):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


@needs_cuda
def test_graphed_step_refuses_a_new_shape():
    model = torch.nn.Linear(4, 1).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    make_capturable(optimizer)

    def step(x):
        loss = model(x).square().mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    runner = GraphedStep(step, optimizer, warmup=1)
    runner(torch.ones(2, 4, device="cuda"))
    runner(torch.ones(2, 4, device="cuda"))
    with pytest.raises(ValueError, match="fixed shapes"):
        runner(torch.ones(3, 4, device="cuda"))


@needs_cuda
def test_trainer_replays_a_graph_and_resumes_exactly(compose_config, tmp_path):
    """Ten graphed steps in one run equal five, a resume from ``last.pt``, and five more."""
    from conftest import TINY_TRAIN

    from nowcast.checkpoint import load_checkpoint
    from nowcast.training import Trainer

    def run(name, steps, *extra):
        cfg = compose_config(
            *TINY_TRAIN, "trainer.device=cuda", f"trainer.max_steps={steps}", "trainer.val_every=5", *extra
        )
        (tmp_path / name).mkdir()
        trainer = Trainer(cfg, tmp_path / name)
        trainer.fit()
        assert trainer.graphed is not None and trainer.graphed.captured
        return load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"]

    straight = run("straight", 10)
    run("first", 5)
    resumed = run("second", 10, f"trainer.resume={tmp_path / 'first' / 'checkpoints' / 'last.pt'}")
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], rtol=1e-5, atol=1e-6)
