"""Training: overfitting, outputs, checkpoints, resume, interruption, safety."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_TRAIN

from nowcast.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nowcast.data.moving_mnist import MovingMNIST, load_digits
from nowcast.models import EncoderForecaster, ModelConfig
from nowcast.training import TrainingError, learning_rate, masked_loss, train, try_compile

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_overfits_one_batch():
    torch.manual_seed(0)
    batch = torch.stack(
        [MovingMNIST(load_digits("train"), 2, 0, n_frames=6, num_digits=1)[i]["frames"] for i in range(2)]
    )
    model = EncoderForecaster(ModelConfig(hidden=[16, 16], patch_size=4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(400):
        loss = masked_loss("mse", model(batch[:, :3], 3), batch[:, 3:], None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_masked_loss_ignores_invalid():
    pred, target = torch.zeros(1, 1, 1, 2, 2), torch.tensor([[[[[1.0, 1.0], [9.0, 9.0]]]]])
    valid = torch.tensor([[[[[1.0, 1.0], [0.0, 0.0]]]]])
    assert masked_loss("mse", pred, target, valid).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown loss"):
        masked_loss("huber9", pred, target, None)
    weights = torch.tensor([[[[[1.0, 30.0], [2.0, 2.0]]]]])
    assert masked_loss("bmse", pred, target, valid, weights).item() == pytest.approx((1 + 30) / 2)


def test_bmse_weights_follow_hko7():
    from types import SimpleNamespace

    from nowcast.training import loss_weights
    from nowcast.transforms import Transform

    bundle = SimpleNamespace(transform=Transform("log1p", 100.0))
    rates = torch.tensor([0.0, 1.0, 3.0, 7.0, 20.0, 50.0])
    got = loss_weights("bmse", bundle.transform.encode(rates), bundle)
    assert got.tolist() == [1.0, 1.0, 2.0, 5.0, 10.0, 30.0]
    assert loss_weights("mse", rates, bundle) is None


def test_train_writes_every_output(tmp_path, compose_config):
    cfg = compose_config(*TINY_TRAIN, "data.t_in=3", "data.t_out=2", "trainer.gif_samples=1")
    metrics = train(cfg, tmp_path)
    for name in (
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "metrics.json",
        "metrics.csv",
        "forecast.gif",
        "scores_by_lead.png",
        "loss_curve.png",
        "samples.png",
    ):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["test"]) == {"model", "persistence"}
    assert len(saved["test"]["model"]["mse_frame"]["by_lead"]) == 2
    assert {"csi", "pod", "far", "ssim", "mae"} <= set(saved["test"]["model"])
    ckpt = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert ckpt["step"] == 2 and ckpt["version"] and ckpt["model_config"]["hidden"] == [4, 4]
    from PIL import Image

    assert Image.open(tmp_path / "forecast.gif").n_frames == 5
    assert metrics["step"] == 2


def test_resume_matches_uninterrupted_run(tmp_path, compose_config):
    common = (*TINY_TRAIN, "data.t_in=2", "data.t_out=2", "trainer.val_every=2")
    full = compose_config(*common, "trainer.max_steps=4")
    train(full, tmp_path / "full")
    half = compose_config(*common, "trainer.max_steps=2")
    train(half, tmp_path / "half")
    resumed = compose_config(*common, "trainer.max_steps=4", f"trainer.resume={tmp_path / 'half/checkpoints/last.pt'}")
    train(resumed, tmp_path / "resumed")
    a = load_checkpoint(tmp_path / "full/checkpoints/last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_weight_average_is_the_mean_of_the_steps_weights_and_resumes_exactly(tmp_path, compose_config):
    common = (*TINY_TRAIN, "data.t_in=2", "data.t_out=2", "trainer.val_every=1", "trainer.gif_samples=0")
    runs = {
        "two": compose_config(*common, "trainer.max_steps=2"),
        "full": compose_config(*common, "trainer.max_steps=4", "trainer.average_from=2"),
        "half": compose_config(*common, "trainer.max_steps=3", "trainer.average_from=2"),
    }
    for name, cfg in runs.items():
        train(cfg, tmp_path / name)
    half_checkpoint = tmp_path / "half/checkpoints/last.pt"
    resumed = compose_config(
        *common, "trainer.max_steps=4", "trainer.average_from=2", f"trainer.resume={half_checkpoint}"
    )
    train(resumed, tmp_path / "resumed")
    after_two = load_checkpoint(tmp_path / "two/checkpoints/last.pt")["model"]
    half = load_checkpoint(tmp_path / "half/checkpoints/last.pt")
    full = load_checkpoint(tmp_path / "full/checkpoints/last.pt")
    assert half["averaged_steps"] == 2 and full["averaged_steps"] == 3  # the weights after steps 2, 3 (and 4)
    for key, value in full["model"].items():  # the mean of the weights after steps 2, 3 and 4
        after_three, after_four = half["trained_model"][key], full["trained_model"][key]
        torch.testing.assert_close(value, (after_two[key] + after_three + after_four) / 3, rtol=1e-5, atol=1e-7)
        assert not torch.equal(value, after_four)
    again = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    for name in ("model", "trained_model"):
        for key, value in full[name].items():
            torch.testing.assert_close(again[name][key], value, rtol=0, atol=0)


def test_resuming_a_run_without_a_weight_average_into_one_warns(tmp_path, compose_config, caplog):
    common = (*TINY_TRAIN, "data.t_in=2", "data.t_out=2", "trainer.val_every=1", "trainer.gif_samples=0")
    train(compose_config(*common, "trainer.max_steps=2"), tmp_path / "plain")
    resumed = compose_config(
        *common,
        "trainer.max_steps=3",
        "trainer.average_from=1",
        f"trainer.resume={tmp_path / 'plain/checkpoints/last.pt'}",
    )
    with caplog.at_level("WARNING", logger="nowcast.training"):
        train(resumed, tmp_path / "resumed")
    assert "holds no weight average" in caplog.text
    assert load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")["averaged_steps"] == 1  # step 3 only


def test_cosine_schedule_runs_from_the_base_rate_to_zero():
    assert learning_rate(1e-3, "constant", 700, 1000) == 1e-3
    rates = [learning_rate(1e-3, "cosine", step, 1000) for step in range(1001)]
    assert rates[0] == 1e-3 and rates[500] == pytest.approx(5e-4) and rates[1000] == pytest.approx(0, abs=1e-18)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))


def test_constant_cosine_schedule_holds_the_base_rate_then_decays_to_zero():
    rates = [learning_rate(1e-3, "constant_cosine", step, 1000, decay_fraction=0.25) for step in range(1001)]
    assert rates[:751] == [1e-3] * 751  # the constant part: a constant run's steps, so it can be resumed into
    assert rates[875] == pytest.approx(5e-4) and rates[1000] == pytest.approx(0, abs=1e-18)
    assert all(a > b for a, b in zip(rates[750:], rates[751:], strict=False))


def test_auto_unroll_is_chosen_once_and_kept_on_resume(tmp_path, compose_config):
    # one training run checks two things: the unroll choice, and that each optimiser step uses the
    # learning rate of its own step number
    first = compose_config(*TINY_TRAIN, "trainer.unroll=auto", "trainer.lr=0.01", "trainer.lr_schedule=cosine")
    train(first, tmp_path / "a")
    payload = load_checkpoint(tmp_path / "a/checkpoints/last.pt")
    assert payload["optimizer"]["param_groups"][0]["lr"] == pytest.approx(learning_rate(0.01, "cosine", 1, 2))
    chosen, layout = payload["unroll"], payload["memory_format"]
    assert chosen in ("split", "fused") and layout in ("channels_last", "contiguous")  # CPU, fp32: both timed
    other = "split" if chosen == "fused" else "fused"
    resumed = compose_config(
        *TINY_TRAIN,
        "trainer.max_steps=3",
        f"trainer.unroll={other}",
        f"trainer.resume={tmp_path / 'a/checkpoints/last.pt'}",
    )
    train(resumed, tmp_path / "b")
    resumed_payload = load_checkpoint(tmp_path / "b/checkpoints/last.pt")
    assert resumed_payload["unroll"] == chosen  # the run's own choice wins
    assert resumed_payload["memory_format"] == layout
    weight = resumed_payload["model"]["encoder.0.hidden_conv.weight"]
    assert weight.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


def test_resume_with_other_model_names_mismatch(tmp_path, compose_config):
    train(compose_config(*TINY_TRAIN, "data.t_in=2", "data.t_out=1"), tmp_path / "a")
    other = compose_config(
        *TINY_TRAIN,
        "data.t_in=2",
        "data.t_out=1",
        "model.hidden=[5,5]",
        f"trainer.resume={tmp_path / 'a/checkpoints/last.pt'}",
    )
    with pytest.raises(CheckpointError, match=r"hidden=\[4, 4\] in checkpoint, \[5, 5\] here"):
        train(other, tmp_path / "b")


def test_nan_loss_stops_with_clear_message(tmp_path, compose_config):
    cfg = compose_config(
        *TINY_TRAIN,
        "data.t_in=2",
        "data.t_out=1",
        "trainer.lr=1e30",
        "trainer.loss=mse",
        "trainer.max_steps=30",
        "trainer.val_every=1",
        "model.output_activation=identity",
        "trainer.grad_clip=0",
    )
    with pytest.raises(TrainingError, match="loss became") as info:
        train(cfg, tmp_path)
    assert "last good checkpoint" in str(info.value)
    load_checkpoint(tmp_path / "checkpoints/last.pt")  # still intact


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/nowcast_pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Exploit(), "model_config": {}, "transform": {}, "data": {}}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"a": torch.ones(2)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint({"a": lambda: 1}, path)  # a lambda cannot be pickled
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert list(tmp_path.iterdir()) == [path]


def _cli(run_dir, *overrides):
    return [
        sys.executable,
        "-m",
        "nowcast.train",
        *TINY_TRAIN,
        "data.t_in=2",
        "data.t_out=2",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def test_cli_end_to_end(tmp_path):
    done = subprocess.run(_cli(tmp_path / "run"), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run/metrics.json").is_file() and (tmp_path / "run/forecast.gif").is_file()
    bad = subprocess.run(
        _cli(tmp_path / "bad", "trainer.max_stepz=3"),
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "max_stepz" in bad.stderr


def test_sigterm_writes_checkpoint_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    cmd = _cli(run, "trainer.max_steps=100000", "trainer.val_every=100000", "trainer.log_every=1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.csv").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    step = load_checkpoint(run / "checkpoints/last.pt")["step"]
    assert step >= 1


def test_kill_9_leaves_last_checkpoint_intact(tmp_path):
    run = tmp_path / "run"
    cmd = _cli(run, "trainer.max_steps=100000", "trainer.val_every=1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints/last.pt").exists():
        time.sleep(0.1)
    time.sleep(1.5)
    proc.kill()
    proc.wait()
    payload = load_checkpoint(run / "checkpoints/last.pt")
    assert payload["step"] >= 1


def test_compile_falls_back_to_eager_when_compiling_fails(monkeypatch):
    """``trainer.compile``: a backend that fails (no C++ compiler, say) leaves an eager model that works."""
    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)  # restored afterwards

    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no C++ compiler")

    torch.manual_seed(0)
    model = EncoderForecaster(ModelConfig(hidden=[4], patch_size=2))
    x = torch.rand(2, 3, 1, 8, 8)
    net = try_compile(model, backend=broken_backend)
    torch.testing.assert_close(net(x, 2), model(x, 2))
    torch._dynamo.reset()


def test_training_test_scores_equal_evaluate_scoring_on_the_same_windows(tiny_radar_checkpoint):
    """One path: the run's metrics.json test scores are what evaluate's scoring gives with the checkpoint."""
    from omegaconf import OmegaConf

    from nowcast.data import build_data
    from nowcast.evaluation import DEFAULT_FSS_SCALES, WindowSpec, score_windows
    from nowcast.forecast import Forecaster
    from nowcast.methods import get_method
    from nowcast.training import test_windows

    metrics = json.loads((tiny_radar_checkpoint.parents[1] / "metrics.json").read_text())
    payload = load_checkpoint(tiny_radar_checkpoint)
    bundle = build_data(OmegaConf.create(payload["config"]).data)
    forecaster = Forecaster.from_checkpoint(tiny_radar_checkpoint, precision="32")
    methods = {"model": get_method("model", forecaster), "persistence": get_method("persistence")}
    result = score_windows(
        test_windows(bundle),
        WindowSpec(bundle.t_in, bundle.t_out, 5.0),
        methods,
        thresholds=bundle.thresholds,
        fss_scales=DEFAULT_FSS_SCALES,
        probability_thresholds=(),
    )
    assert result.count == len(bundle.test) == 2
    for method in ("model", "persistence"):
        ours, theirs = metrics["test"][method], json.loads(json.dumps(result.scores[method]))
        assert ours["mse"]["by_lead"] == pytest.approx(theirs["mse"]["by_lead"], rel=1e-6)
        assert ours["csi"] == theirs["csi"]
        assert ours["fss"]["1.0"]["5"]["by_lead"] == pytest.approx(theirs["fss"]["1.0"]["5"]["by_lead"], nan_ok=True)
