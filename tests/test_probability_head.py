"""The network's probability head: its start, its loss, training it alone, and forecasting with it."""

import numpy as np
import pytest
import torch
from test_lagrangian import moving_blob

from nowcast.checkpoint import CheckpointError
from nowcast.errors import UserError
from nowcast.forecast import Forecaster
from nowcast.models import EncoderForecaster, ModelConfig
from nowcast.probability import HeadProbabilities, exceedance
from nowcast.training import probability_loss
from nowcast.transforms import Transform

THRESHOLDS = [1.0, 5.0]
TRANSFORM = Transform("log1p", 100.0)


def _model(**extra) -> EncoderForecaster:
    torch.manual_seed(0)
    config = ModelConfig(hidden=[4, 4], output_activation="identity", step_channel=True, head="residual", **extra)
    return EncoderForecaster(config).eval()


def _levels() -> list[float]:
    return [float(TRANSFORM.encode(torch.tensor(u))) for u in THRESHOLDS]


def test_untrained_head_is_a_softened_edge_of_the_last_frame():
    model = _model(probability_thresholds=THRESHOLDS)
    model.init_probability_head(_levels(), slope=20.0)
    frames = torch.rand(2, 3, 1, 16, 12)
    step = torch.full((2,), 5.0)
    with torch.no_grad():
        rain, logits = model(frames, 4, step, probabilities=True)
    assert rain.shape == (2, 4, 1, 16, 12) and logits.shape == (2, 4, 2, 16, 12)
    last = frames[:, -1, 0]  # (B, H, W)
    for k, level in enumerate(_levels()):
        expected = 20.0 * (last - level)
        for t in range(4):
            torch.testing.assert_close(logits[:, t, k], expected, rtol=1e-5, atol=1e-5)
    # the rain-rate output is the model without a head's: the head changes nothing else
    plain = _model()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("probability_conv.")})
    with torch.no_grad():
        torch.testing.assert_close(plain(frames, 4, step), rain)


def test_probability_loss_by_hand():
    logits = torch.zeros(1, 1, 2, 1, 2)  # P = 0.5 everywhere
    logits[0, 0, 0, 0, 1] = 2.0
    target = torch.tensor([0.0, 0.5]).view(1, 1, 1, 1, 2)
    levels = [0.25, 0.75]  # events: pixel 1 exceeds the first level only
    valid = torch.ones(1, 1, 1, 1, 2)
    expected = (np.log(2) + np.log(1 + np.exp(-2.0)) + 2 * np.log(2)) / 4
    assert float(probability_loss(logits, target, valid, levels)) == pytest.approx(expected, rel=1e-6)
    valid[..., 1] = 0  # only pixel 0 counts: both thresholds at P = 0.5, no event
    assert float(probability_loss(logits, target, valid, levels)) == pytest.approx(np.log(2), rel=1e-6)


def test_head_probabilities_select_thresholds_and_refuse_others():
    values = np.stack([np.full((3, 4, 4), 0.8), np.full((3, 4, 4), 0.2)]).astype(np.float32)
    values[:, :, 0, 0] = np.nan
    head = HeadProbabilities((1.0, 5.0), lambda indices: values[indices])
    out = exceedance(head, [5.0], [5, 10, 15])
    np.testing.assert_array_equal(out[0], values[1])
    with pytest.raises(UserError, match="1, 5 mm/h, not 10"):
        exceedance(head, [1.0, 10.0], [5, 10, 15])
    smoothed = exceedance(head, [1.0], [5, 10, 15], spacing_km=1.0, km_per_minute=0.2)
    assert np.isnan(smoothed[0, :, 0, 0]).all()
    np.testing.assert_allclose(smoothed[0, :, 1:, 1:], 0.8, rtol=1e-6)  # the mean of a constant


def test_forecaster_gives_the_head_probabilities_advected_like_the_forecast():
    model = _model(probability_thresholds=THRESHOLDS)
    model.init_probability_head(_levels())
    forecaster = Forecaster(model, TRANSFORM, 5, 6, frame="lagrangian", probability_source="head")
    rates = moving_blob(5)
    rates[:, :3, :] = np.nan  # a no-data strip
    out, head = forecaster.forecast_for_probabilities(rates, 4, 5.0)
    assert isinstance(head, HeadProbabilities)
    values = head.select(THRESHOLDS)
    assert values.shape == (2, 4, 64, 64)
    np.testing.assert_array_equal(head.select([5.0])[0], values[1])
    assert np.isnan(values[:, :, :3]).all() and np.isfinite(values[:, :, 3:]).all()
    assert (values[:, :, 3:] >= 0).all() and (values[:, :, 3:] <= 1).all()
    # the untrained head's P(R ≥ 1) is above one half where the unsmoothed extrapolation rains ≥ 1 mm/h
    plain = Forecaster(model, TRANSFORM, 5, 6, frame="lagrangian", probability_matching="none")
    wet = plain.forecast(rates, 4, 5.0)[:, 3:] >= 1.0
    likely = values[0, :, 3:] >= 0.5
    assert (wet == likely).mean() > 0.99
    # the P(R ≥ 5) field sits inside the P(R ≥ 1) one
    assert (values[1, :, 3:] <= values[0, :, 3:] + 1e-6).all()


def test_train_only_the_head_keeps_the_network_and_forecast(tmp_path, compose_config):
    from conftest import tiny_lagrangian_run

    from nowcast.training import train

    common = tiny_lagrangian_run(tmp_path)
    train(compose_config(*common, "trainer.max_steps=3"), tmp_path / "net")
    base = tmp_path / "net" / "checkpoints" / "best.pt"
    head_run = [
        *common,
        "trainer.max_steps=6",
        "trainer.lr=0.01",
        "model.probability_thresholds=[1,5]",
        f"trainer.init_from={base}",
        "trainer.train_only=probability_head",
    ]
    train(compose_config(*head_run), tmp_path / "head")
    before = torch.load(base, weights_only=True)["model"]
    after = torch.load(tmp_path / "head" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=0)  # the network is untouched
    start = _model(probability_thresholds=THRESHOLDS)
    assert not torch.equal(after["probability_conv.bias"], start.probability_conv.bias)  # the head learned
    rates = moving_blob(3, size=40)
    with_head = Forecaster.from_checkpoint(tmp_path / "head" / "checkpoints" / "last.pt")
    without = Forecaster.from_checkpoint(base)
    assert with_head.probability_source == "head" and without.probability_source == "members"
    np.testing.assert_array_equal(with_head.forecast(rates, 4, 5.0), without.forecast(rates, 4, 5.0))
    with pytest.raises(CheckpointError, match="no probability head"):
        Forecaster.from_checkpoint(base, probability_source="head")
    # a network of another shape is refused by name
    with pytest.raises(CheckpointError, match="hidden"):
        train(compose_config(*head_run, "model.hidden=[6]"), tmp_path / "wrong")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.probability_thresholds=[1,1]"], "distinct positive"),
        (["model.probability_thresholds=[-1]"], "distinct positive"),
        (["trainer.train_only=probability_head"], "needs model.probability_thresholds"),
        (["trainer.train_only=probability_head", "model.probability_thresholds=[1]"], "trainer.init_from"),
        (["model=radar", "model.probability_thresholds=[1]"], "head=residual"),
    ],
)
def test_bad_probability_head_settings_are_one_line_errors(compose_config, overrides, message):
    from nowcast.config import check_config

    with pytest.raises(UserError, match=message):
        check_config(compose_config("data=lagrangian_radar", "model=lagrangian", *overrides))


def test_evaluation_scores_the_head_probabilities_with_their_neighbourhood():
    from nowcast.evaluation import WindowSpec, score_windows
    from nowcast.methods import Window, model_method
    from nowcast.probability import HEAD_NEIGHBOURHOOD_KM_PER_MINUTE

    model = _model(probability_thresholds=THRESHOLDS)
    model.init_probability_head(_levels())
    forecaster = Forecaster(model, TRANSFORM, 5, 6, frame="lagrangian", probability_source="head")
    frames = moving_blob(9)
    window = Window(frames[:5], 4, 5.0)
    model_method(forecaster)(window)
    assert window.probability_growth["model"] == HEAD_NEIGHBOURHOOD_KM_PER_MINUTE
    expected = exceedance(window.probability_fields["model"], [5.0], window.lead_minutes, 1.0, 0.0)
    direct = forecaster.forecast_for_probabilities(frames[:5], 4, 5.0)[1].select([5.0])
    np.testing.assert_array_equal(expected, direct)
    spec = WindowSpec(n_in=5, n_out=4, step_minutes=5.0)
    result = score_windows([(frames[:5], frames[5:], [])], spec, {"model": model_method(forecaster)}, (1.0, 1.0))
    assert set(result.probabilistic["model"]["bss"]) == {1.0, 5.0}
    assert np.isfinite(result.probabilistic["model"]["bss"][1.0]["mean"])


@pytest.fixture
def head_checkpoint(tmp_path):
    """An untrained Lagrangian model with a probability head at 1 and 5 mm/h, saved as a checkpoint."""
    from nowcast.checkpoint import save_checkpoint

    model = _model(probability_thresholds=THRESHOLDS, patch_size=4)
    model.init_probability_head(_levels())
    data = {"t_in": 3, "t_out": 3, "step_minutes": [5.0], "thresholds": [1.0], "radar": True}
    data |= {"frame": "lagrangian", "grid_km": 1.0}
    payload = {"model": model.state_dict(), "model_config": model.config.to_dict(), "data": data}
    payload["transform"] = TRANSFORM.to_dict()
    path = tmp_path / "head.pt"
    save_checkpoint(payload, path)
    return path


def test_predict_writes_head_probabilities_and_refuses_others(tmp_path, radar_dir, head_checkpoint, capsys):
    import xarray as xr

    from nowcast import predict

    out = tmp_path / "fc.nc"
    argv = ["--input", str(radar_dir), "--output", str(out), "--steps", "3", "--checkpoint", str(head_checkpoint)]
    assert predict.main([*argv, "--probabilities", "1,5", "-q"]) == 0
    prob = xr.open_dataset(out)["probability"]
    assert prob.shape == (2, 3, 32, 32) and list(prob["threshold"].values) == [1.0, 5.0]
    assert np.nanmax(prob.values) <= 1 and np.nanmin(prob.values) >= 0
    assert predict.main([*argv[:3], str(tmp_path / "other.nc"), *argv[4:], "--probabilities", "3", "-q"]) == 2
    assert "gives P(R ≥ u) for u = 1, 5 mm/h only" in capsys.readouterr().err
    assert not list(tmp_path.glob("other.nc*"))
