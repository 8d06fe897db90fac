"""Scores against hand-computed cases and against pysteps."""

import numpy as np
import pytest

from nowcast._quiet import import_pysteps
from nowcast.metrics import ContingencyTable, ErrorSums, FractionsSkill, Scorer, hko7_weights


def _fields(values):
    return np.asarray(values, dtype=float).reshape(1, 1, 1, -1)


def test_contingency_textbook_case():
    # 4 hits, 2 misses, 1 false alarm, 3 correct negatives at threshold 1
    fc = _fields([2, 2, 2, 2, 0, 0, 2, 0, 0, 0])
    ob = _fields([2, 2, 2, 2, 2, 2, 0, 0, 0, 0])
    table = ContingencyTable([1.0], 1)
    table.update(fc, ob)
    assert (
        table.hits[0, 0],
        table.misses[0, 0],
        table.false_alarms[0, 0],
        table.correct_negatives[0, 0],
    ) == (4, 2, 1, 3)
    s = {k: v[0, 0] for k, v in table.compute().items()}
    a, b, c, d, n = 4, 1, 2, 3, 10
    assert s["csi"] == pytest.approx(4 / 7)
    assert s["pod"] == pytest.approx(4 / 6)
    assert s["far"] == pytest.approx(1 / 5)
    assert s["bias"] == pytest.approx(5 / 6)
    assert s["hss"] == pytest.approx(2 * (a * d - b * c) / ((a + c) * (c + d) + (a + b) * (b + d)))
    ar = (a + b) * (a + c) / n
    assert s["ets"] == pytest.approx((a - ar) / (a + b + c - ar))


def test_threshold_is_inclusive_and_mask_excludes():
    table = ContingencyTable([1.0], 1)
    table.update(_fields([1.0, 5.0]), _fields([1.0, np.nan]))
    assert table.hits.sum() == 1 and table.false_alarms.sum() == 0


def test_merge_equals_one_pass():
    rng = np.random.default_rng(0)
    fc, ob = rng.gamma(1, 2, (6, 3, 8, 8)), rng.gamma(1, 2, (6, 3, 8, 8))
    one = Scorer([0.5, 2.0], 3, fss_scales=[3], balanced=True)
    one.update(fc, ob)
    parts = Scorer([0.5, 2.0], 3, fss_scales=[3], balanced=True)
    other = Scorer([0.5, 2.0], 3, fss_scales=[3], balanced=True)
    parts.update(fc[:2], ob[:2])
    other.update(fc[2:], ob[2:])
    parts.merge(other)
    a, b = one.compute(), parts.compute()
    assert a["csi"][2.0]["by_lead"] == pytest.approx(b["csi"][2.0]["by_lead"])
    assert a["mse"]["by_lead"] == pytest.approx(b["mse"]["by_lead"])
    assert a["fss"][0.5][3]["by_lead"] == pytest.approx(b["fss"][0.5][3]["by_lead"])


def test_csi_from_summed_counts_not_mean_of_ratios():
    scorer = Scorer([1.0], 1)
    scorer.update(_fields([2, 0, 0, 0]), _fields([2, 2, 2, 2]))  # sample 1: CSI 1/4
    scorer.update(_fields([2, 2, 2, 2]), _fields([2, 2, 2, 2]))  # sample 2: CSI 1
    assert scorer.compute()["csi"][1.0]["mean"] == pytest.approx(5 / 8)


def test_cross_check_with_pysteps():
    pysteps = import_pysteps()
    from pysteps.verification.detcatscores import det_cat_fct
    from pysteps.verification.spatialscores import fss

    rng = np.random.default_rng(3)
    fc, ob = rng.gamma(0.8, 2, (64, 64)), rng.gamma(0.8, 2, (64, 64))
    ours = Scorer([1.0], 1, fss_scales=[5])
    ours.update(fc[None, None], ob[None, None])
    got = ours.compute()
    ref = det_cat_fct(fc, ob, 1.0, ["CSI", "POD", "FAR", "HSS", "ETS"])
    for key in ("csi", "pod", "far", "hss", "ets"):
        assert got[key][1.0]["mean"] == pytest.approx(ref[key.upper()], rel=1e-9)
    assert got["fss"][1.0][5]["mean"] == pytest.approx(fss(fc, ob, 1.0, 5), rel=1e-6)
    assert pysteps is not None


def test_errors_per_pixel_and_per_frame():
    errors = ErrorSums(1)
    errors.update(_fields([1, 2, 3, 4]), _fields([1, 1, 1, 1]))
    scores = errors.compute()
    assert scores["mse"][0] == pytest.approx((0 + 1 + 4 + 9) / 4)
    assert scores["mae"][0] == pytest.approx(6 / 4)
    assert scores["mse_frame"][0] == pytest.approx(14)


def test_hko7_weights_and_balanced_mse():
    np.testing.assert_array_equal(hko7_weights(np.array([0, 1.99, 2, 5, 10, 30, 80])), [1, 1, 2, 5, 10, 30, 30])
    errors = ErrorSums(1, balanced=True)
    errors.update(_fields([0, 0]), _fields([1, 6]))
    assert errors.compute()["b_mse"][0] == pytest.approx((1 * 1 + 5 * 36) / 2)


def test_fss_perfect_and_disjoint():
    f = FractionsSkill([1.0], [1, 3], 1)
    field = np.zeros((1, 1, 9, 9))
    field[0, 0, 4, 4] = 2
    f.update(field, field)
    assert np.allclose(f.compute(), 1.0)
    g = FractionsSkill([1.0], [1], 1)
    other = np.zeros_like(field)
    other[0, 0, 0, 0] = 2
    g.update(field, other)
    assert g.compute()[0, 0, 0] == pytest.approx(0.0)


def test_persistence_csi_on_moving_blob_is_exact():
    """A w×w square moving 1 px/frame: persistence at lead k overlaps w−k columns.

    hits = w(w−k), misses = false alarms = wk, so CSI = (w−k)/(w+k).
    """
    w, n = 6, 4
    frames = np.zeros((n + 1, 20, 20))
    for t in range(n + 1):
        frames[t, 5 : 5 + w, 2 + t : 2 + t + w] = 3.0
    persistence = np.repeat(frames[:1], n, axis=0)
    scorer = Scorer([1.0], n)
    scorer.update(persistence[None], frames[1:][None])
    got = scorer.compute()["csi"][1.0]["by_lead"]
    assert got == pytest.approx([(w - k) / (w + k) for k in range(1, n + 1)])


def test_ssim_identical_is_one():
    scorer = Scorer([0.5], 2, ssim_range=1.0)
    x = np.random.default_rng(0).random((1, 2, 16, 16))
    scorer.update(x, x)
    assert scorer.compute()["ssim"]["mean"] == pytest.approx(1.0)
