"""One forecast interface and probabilistic nowcasts: probabilities, scores, methods, outputs."""

import json

import numpy as np
import pytest
from conftest import write_sequence
from PIL import Image

from nowcast import evaluate
from nowcast.errors import UserError
from nowcast.forecast import distribution_matcher, match_distribution, rank_order
from nowcast.methods import METHOD_NAMES, Window, deterministic, get_method
from nowcast.probability import exceedance, neighbourhood_fraction
from nowcast.probscores import ProbabilisticScorer


def test_ensemble_probability_is_the_member_fraction():
    members = np.zeros((4, 1, 2, 2), dtype=np.float32)
    members[:3, 0, 0, 0] = 2.0  # three of four members at 2 mm/h
    members[0, 0, 1, 1] = 6.0
    members[:, 0, 0, 1] = np.nan
    p = exceedance(members, [1.0, 5.0], [5.0])
    assert p.shape == (2, 1, 2, 2)
    assert p[0, 0, 0, 0] == pytest.approx(0.75)
    assert p[1, 0, 1, 1] == pytest.approx(0.25)
    assert p[0, 0, 1, 0] == 0.0
    assert np.isnan(p[:, 0, 0, 1]).all()


def test_neighbourhood_fraction_counts_valid_pixels_only():
    event = np.zeros((7, 7), dtype=bool)
    event[3, 3] = True
    valid = np.ones((7, 7), dtype=bool)
    assert np.array_equal(neighbourhood_fraction(event, valid, 0), event.astype(np.float32))
    p = neighbourhood_fraction(event, valid, 1)
    assert p[3, 3] == pytest.approx(1 / 9) and p[2, 4] == pytest.approx(1 / 9) and p[1, 3] == 0.0
    valid[2:5, 2] = False  # three neighbours without data: 1 of 6 valid pixels is wet
    assert neighbourhood_fraction(event, valid, 1)[3, 3] == pytest.approx(1 / 6)


def test_neighbourhood_grows_with_lead_time():
    forecast = np.zeros((1, 2, 41, 41), dtype=np.float32)
    forecast[0, :, 20, 20] = 3.0
    p = exceedance(forecast, [1.0], [10.0, 20.0], spacing_km=1.0, km_per_minute=0.1)  # radius 1 then 2 px
    assert p[0, 0, 20, 20] == pytest.approx(1 / 9)
    assert p[0, 1, 20, 20] == pytest.approx(1 / 25)
    assert p[0, 1, 18, 18] > 0 and p[0, 0, 18, 18] == 0


def test_brier_and_skill_by_hand():
    observed = np.array([[[0.0, 2.0], [3.0, 0.0]]])  # (T=1, 2, 2): events at 1 mm/h in 2 of 4 pixels
    valid = np.ones_like(observed, dtype=bool)
    prob = np.array([[[[0.2, 0.6], [1.0, 0.0]]]])  # (U=1, T=1, 2, 2)
    scorer = ProbabilisticScorer([1.0], 1)
    scorer.update(prob, observed, valid)
    scores = scorer.compute()
    brier = (0.2**2 + 0.4**2 + 0.0 + 0.0) / 4
    assert scores["brier"][1.0]["by_lead"][0] == pytest.approx(brier)
    assert scores["bss"][1.0]["mean"] == pytest.approx(1 - brier / 0.25)
    climatology = ProbabilisticScorer([1.0], 1)
    climatology.update(np.full_like(prob, 0.5), observed, valid)
    assert climatology.compute()["bss"][1.0]["mean"] == pytest.approx(0.0)
    # one bin holds all four pixels at p = 0.5 with two events observed: perfectly reliable
    assert climatology.compute()["reliability"][1.0]["term"] == pytest.approx(0.0)
    constant = ProbabilisticScorer([1.0], 1)
    constant.update(np.full_like(prob, 0.9), observed, valid)  # says 0.9, it rains half the time
    assert constant.compute()["reliability"][1.0]["term"] == pytest.approx((0.9 - 0.5) ** 2)


def test_perfect_probabilities_score_perfectly():
    rng = np.random.default_rng(0)
    observed = rng.gamma(0.5, 2.0, size=(3, 16, 16))
    valid = np.ones_like(observed, dtype=bool)
    valid[:, 0, 0] = False
    prob = (observed >= 1.0).astype(float)[None]
    scorer = ProbabilisticScorer([1.0], 3)
    scorer.update(prob, observed, valid)
    scores = scorer.compute()
    assert scores["bss"][1.0]["mean"] == pytest.approx(1.0)
    assert scores["roc_area"][1.0] == pytest.approx(1.0, abs=1e-6)
    rel = scores["reliability"][1.0]
    assert rel["forecast"] == pytest.approx(rel["observed"])
    assert sum(rel["count"]) == valid.sum()


def test_crps_and_rank_histogram_through_pysteps():
    from pysteps.verification.probscores import CRPS

    rng = np.random.default_rng(1)
    members = rng.gamma(1.0, 2.0, size=(5, 2, 8, 8))
    observed = rng.gamma(1.0, 2.0, size=(2, 8, 8))
    valid = np.ones_like(observed, dtype=bool)
    scorer = ProbabilisticScorer([1.0], 2, members=5)
    scorer.update(exceedance(members, [1.0], [5.0, 10.0]), observed, valid, members)
    scores = scorer.compute()
    assert scores["crps"]["by_lead"][0] == pytest.approx(CRPS(members[:, 0], observed[0]))
    assert len(scores["rank_histogram"]) == 6 and sum(scores["rank_histogram"]) == pytest.approx(1.0)


def moving_rain(n: int = 6, size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    frames = [6.0 * np.exp(-((xx - 14 - 1.5 * t) ** 2 + (yy - 24) ** 2) / 40.0) for t in range(n)]
    rates = np.stack(frames).astype(np.float32)
    rates[:, :3, :3] = np.nan  # a corner without data
    return rates


@pytest.mark.parametrize("name", ["persistence", "extrapolation", "sprog", "steps"])
def test_every_method_answers_members_times_leads(name):
    window = Window(moving_rain(), n_out=3, step_minutes=5.0)
    out = get_method(name, members=3)(window)
    assert out.shape == ((3 if name == "steps" else 1), 3, 48, 48)
    assert np.isnan(out[:, :, 0, 0]).all()
    assert np.all(np.nan_to_num(out) >= 0) and np.nanmax(out) > 1.0
    assert deterministic(out).shape == (3, 48, 48)


@pytest.mark.parametrize("name", ["sprog", "steps"])
def test_pysteps_methods_are_the_same_on_one_core_and_on_two(name, monkeypatch):
    """STEPS and S-PROG get the network's cores (pysteps' ``num_workers``), which must not change them."""
    import pysteps.nowcasts

    import nowcast.parallel

    pysteps_method, workers_asked = pysteps.nowcasts.get_method, []

    def spy(method_name):
        method = pysteps_method(method_name)
        return lambda *args, **kwargs: workers_asked.append(kwargs["num_workers"]) or method(*args, **kwargs)

    monkeypatch.setattr(pysteps.nowcasts, "get_method", spy)
    window = Window(moving_rain(), n_out=3, step_minutes=5.0)
    by_cores = {}
    for cores in (1, 2):
        monkeypatch.setattr(nowcast.parallel.torch, "get_num_threads", lambda cores=cores: cores)
        by_cores[cores] = get_method(name, members=3)(window)
    assert workers_asked == [1, 2]
    np.testing.assert_array_equal(by_cores[1], by_cores[2])


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UserError, match="steps"):
        get_method("optical")
    with pytest.raises(UserError, match="checkpoint"):
        get_method("model")
    assert "steps" in METHOD_NAMES


def test_probability_matching_keeps_ranks_and_takes_the_reference_distribution():
    rng = np.random.default_rng(2)
    reference = rng.gamma(0.6, 3.0, size=(20, 20))
    reference[reference < 0.5] = 0.0
    reference[0, :4] = np.nan
    forecast = (np.abs(rng.normal(size=(2, 20, 20))) * 0.5).astype(np.float32)  # smooth, weak, all wet
    matched = match_distribution(forecast, reference)
    target = np.sort(np.nan_to_num(reference).ravel())
    assert np.allclose(np.sort(matched[0].ravel()), target)
    wet = matched[1] > 0
    assert forecast[1][wet].min() >= forecast[1][~wet].max()  # the wettest pixels stay the wettest
    assert not match_distribution(forecast, np.zeros((20, 20))).any()


def test_evaluate_scores_probabilities_against_steps(tmp_path, tiny_radar_checkpoint):
    write_sequence(tmp_path / "r", n=8, size=40, speed=2.0)
    out = tmp_path / "eval"
    argv = ["--input", str(tmp_path / "r"), "--output", str(out), "--checkpoint", str(tiny_radar_checkpoint)]
    argv += ["--minutes", "10", "--methods", "model", "extrapolation", "steps", "--members", "3", "-q"]
    assert evaluate.main([*argv, "--probability-thresholds", "1", "4"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    steps = doc["probabilistic"]["steps"]
    assert set(doc["probabilistic"]) == {"model", "extrapolation", "steps"}
    assert len(steps["bss"]["4.0"]["by_lead"]) == 2 and 0 <= steps["roc_area"]["1.0"] <= 1
    assert "crps" in steps and "crps" not in doc["probabilistic"]["model"]
    assert set(doc["seconds_per_window"]) >= {"model", "extrapolation", "steps", "motion"}
    rows = (out / "metrics.csv").read_text()
    assert "steps,bss,4.0" in rows and "model,roc_area,1.0" in rows
    for name in ("reliability.png", "roc.png"):
        assert Image.open(out / name).size[0] > 400
    assert evaluate.main([*argv, "--overwrite", "--members", "1"]) == 2
    assert evaluate.main([*argv, "--overwrite", "--probability-thresholds", "0"]) == 2


def test_predict_writes_probabilities_into_the_netcdf_and_a_gif(tmp_path, radar_dir, tiny_radar_checkpoint):
    import xarray as xr

    from nowcast import predict

    out, gif = tmp_path / "fc.nc", tmp_path / "fc.gif"
    argv = ["--input", str(radar_dir), "--output", str(out), "--gif", str(gif), "--steps", "3"]
    argv += ["--checkpoint", str(tiny_radar_checkpoint), "--probabilities", "5,1", "-q"]
    assert predict.main(argv) == 0
    ds = xr.open_dataset(out)
    prob = ds["probability"]
    assert prob.dims == ("threshold", "time", "y", "x") and prob.shape == (2, 3, 32, 32)
    assert list(ds["threshold"].values) == [1.0, 5.0] and ds["threshold"].attrs["units"] == "mm h-1"
    assert prob.attrs["units"] == "1"
    values = prob.values[np.isfinite(prob.values)]
    assert values.min() >= 0 and values.max() <= 1
    assert np.all(prob.values[0] >= prob.values[1] - 1e-6)  # P(R ≥ 1) ≥ P(R ≥ 5)
    wet = ds["rainfall_rate"].values >= 1.0
    assert np.all(prob.values[0][wet & np.isfinite(prob.values[0])] > 0)
    assert Image.open(tmp_path / "fc_probability.gif").n_frames == 3


@pytest.mark.parametrize("value", ["0", "abc", "1,nan", "-1", "1e9"])
def test_predict_refuses_bad_probability_thresholds(tmp_path, radar_dir, value, capsys):
    from nowcast import predict

    with pytest.raises(SystemExit) as stop:
        predict.main(["--input", str(radar_dir), "--output", str(tmp_path / "x.nc"), "--probabilities", value])
    assert stop.value.code == 2
    assert "--probabilities" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.nc*"))


def test_distribution_matcher_equals_pysteps():
    from pysteps.postprocessing.probmatching import nonparam_match_empirical_cdf

    rng = np.random.default_rng(3)
    for _ in range(10):
        reference = rng.gamma(0.4, 3.0, (30, 25))
        reference[reference < rng.uniform(0, 2)] = 0.0
        reference[:3] = np.nan
        forecast = rng.gamma(0.4, 3.0, (30, 25))
        forecast[forecast < rng.uniform(0, 3)] = 0.0
        forecast[10:12] = 1.5  # ties
        expected = nonparam_match_empirical_cdf(forecast, np.nan_to_num(reference))
        ours = distribution_matcher(reference)(forecast)
        tied = forecast == 1.5  # the order in which tied pixels get their levels is arbitrary in pysteps
        np.testing.assert_allclose(ours[~tied], expected[~tied], rtol=1e-6)
        np.testing.assert_allclose(np.sort(ours[tied]), np.sort(expected[tied]), rtol=1e-6)


def test_rank_order_is_a_stable_argsort():
    rng = np.random.default_rng(5)
    values = rng.gamma(0.3, 2.0, 5000).astype(np.float32)
    values[values < 0.5] = 0.0  # many ties
    values[:3] = -0.0
    np.testing.assert_array_equal(rank_order(values), np.argsort(values, kind="stable"))


def test_ensemble_neighbourhood_is_the_mean_of_each_members():
    rng = np.random.default_rng(4)
    members = rng.gamma(0.5, 2.0, (5, 2, 30, 30)).astype(np.float32)
    members[:, :, :3] = np.nan  # no data, shared by every member
    p = exceedance(members, [1.0], [10.0, 20.0], spacing_km=1.0, km_per_minute=0.2)
    for t, radius in enumerate((2, 4)):
        each = [neighbourhood_fraction(m[t] >= 1.0, np.isfinite(m[t]), radius) for m in members]
        np.testing.assert_allclose(p[0, t, 3:], np.mean(each, axis=0)[3:], atol=1e-6)
    assert np.isnan(p[:, :, :3]).all()


class _Lazy:
    """Members made only when iterated, as :class:`nowcast.forecast.PerturbedMembers` makes them."""

    def __init__(self, members):
        self.members, self.reads = members, 0

    def __len__(self):
        return len(self.members)

    def __iter__(self):
        for member in self.members:
            self.reads += 1
            yield member.copy()


def test_exceedance_of_members_read_one_at_a_time_equals_the_stacked_ensemble():
    rng = np.random.default_rng(3)
    members = rng.gamma(0.5, 4.0, (7, 3, 20, 24)).astype(np.float32)
    members[2, 1, 5:9, 3:6] = np.nan  # one member without data somewhere: no data there for all
    lazy = _Lazy(members)
    for growth in (0.2, 0.0):
        got = exceedance(lazy, [1.0, 5.0], [5.0, 10.0, 15.0], spacing_km=1.0, km_per_minute=growth)
        want = exceedance(members, [1.0, 5.0], [5.0, 10.0, 15.0], spacing_km=1.0, km_per_minute=growth)
        np.testing.assert_array_equal(got, want)
    assert lazy.reads == 2 * 7 and np.isnan(got[:, 1, 5:9, 3:6]).all()
    fraction = (np.nan_to_num(members[:, 0]) >= 5.0).mean(axis=0)  # no neighbourhood: the member fraction
    np.testing.assert_allclose(got[1, 0][np.isfinite(got[1, 0])], fraction[np.isfinite(got[1, 0])], atol=1e-6)
