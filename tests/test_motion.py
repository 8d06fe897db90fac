"""Motion on a coarse grid: pysteps exactly at stride 1, close to it at the default stride."""

import numpy as np
import pytest

from nowcast import lagrangian, motion
from nowcast._quiet import import_pysteps
from nowcast.baselines import extrapolation, motion_field, to_dbr


def rain_cells(n: int = 4, size: int = 96, seed: int = 0) -> np.ndarray:
    """``(n, size, size)`` mm/h: smooth random rain turning (3° a step) and drifting (1.5, -1) px a step."""
    from scipy.ndimage import gaussian_filter, rotate, shift

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.gamma(0.3, 4.0, (size, size)), 3.0) * 8.0
    frames = [shift(rotate(field, 3.0 * t, reshape=False, order=1), (-1.0 * t, 1.5 * t), order=1) for t in range(n)]
    return np.stack(frames).astype(np.float32)


def rotation(size: int) -> np.ndarray:
    """A solid-body rotation ``(2, size, size)`` in pixels per step, 0.04 rad/step about the centre."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float) - (size - 1) / 2
    return 0.04 * np.stack([-yy, xx])


def test_stride_one_is_pysteps_dense_lucas_kanade():
    rates = rain_cells()
    expected = import_pysteps().motion.get_method("LK")(to_dbr(rates[-3:]))
    np.testing.assert_array_equal(motion_field(rates, stride=1), expected)


def test_coarse_motion_is_close_to_pysteps_dense_field():
    rates = rain_cells()
    dense = motion_field(rates, stride=1)
    coarse = motion_field(rates)
    assert coarse.shape == dense.shape == (2, 96, 96)
    assert np.abs(coarse).mean() > 0.5  # it does move
    error = np.abs(coarse - dense)
    assert error.mean() < 0.03 and np.percentile(error, 99) < 0.3  # pixels per step


def test_nodes_cover_the_field_and_refine_returns_them():
    assert motion.nodes_of(9, 4).tolist() == [0, 4, 8]
    assert motion.nodes_of(10, 4).tolist() == [0, 4, 8, 12]
    field = np.random.default_rng(0).random((2, 10, 13))
    nodes = motion.coarsen(field, 4)
    assert nodes.shape == (2, 4, 4)
    np.testing.assert_allclose(motion.refine(nodes, (10, 13), 4)[:, ::4, ::4], field[:, ::4, ::4], rtol=1e-6)
    ramp = np.broadcast_to(np.arange(13.0), (2, 13, 13))  # linear fields are refined exactly
    np.testing.assert_allclose(motion.refine(motion.coarsen(ramp, 4), (13, 13), 4), ramp, atol=1e-4)


@pytest.mark.parametrize("backward", [False, True])
def test_coarse_displacements_follow_pysteps_on_a_rotation(backward):
    velocity = rotation(96)
    exact = lagrangian.displacements(velocity, 8, backward=backward, stride=1)
    coarse = lagrangian.displacements(velocity, 8, backward=backward)
    assert np.abs(exact[-1]).max() > 10  # the edge moves more than 10 px in 8 steps
    error = np.abs(coarse - exact)
    assert error[..., 20:-20, 20:-20].max() < 1e-3  # where no path leaves the grid: exact up to float32
    assert np.percentile(error, 99) < 0.2  # at the edge pysteps takes the nearest pixel's motion


def test_extrapolation_at_stride_one_is_pysteps():
    rates = rain_cells()
    velocity = motion_field(rates, stride=1)
    ours = lagrangian.from_lagrangian(np.repeat(rates[-1:], 3, axis=0), lagrangian.displacements(velocity, 3, stride=1))
    theirs = import_pysteps().extrapolation.get_method("semilagrangian")(rates[-1], velocity, 3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, equal_nan=True)
    baseline = extrapolation(rates, 3)  # the baseline: coarse displacements, NaN from outside set to 0
    assert np.abs(baseline - np.nan_to_num(theirs)).mean() < 0.05 * np.nanmean(theirs)


@pytest.mark.parametrize("count", [1, 5, 31, 400])
def test_local_outliers_equal_pysteps(count):
    from pysteps.utils.cleansing import detect_outliers

    rng = np.random.default_rng(count)
    coords = rng.uniform(0, 300, (count, 2))
    vectors = rng.normal(2.0, 0.5, (count, 2))
    vectors[::13] += 4.0  # a few wild ones
    expected = detect_outliers(vectors, 3.0, coords, 30) if count > 1 else np.zeros(1, bool)
    np.testing.assert_array_equal(motion.local_outliers(vectors, coords), expected)
    assert count < 100 or expected.sum() > 10


@pytest.mark.parametrize("count", [1, 2, 7, 500])
def test_decluster_equals_pysteps(count):
    from pysteps.utils.cleansing import decluster

    rng = np.random.default_rng(count)
    coords = rng.uniform(0, 200, (count, 2))
    coords[: count // 3] = np.round(coords[: count // 3] / 20) * 20  # points on the cells' edges too
    vectors = rng.normal(2.0, 0.5, (count, 2))
    expected_coords, expected_vectors = decluster(coords, vectors, 20, 1)
    ours_coords, ours_vectors = motion.decluster(coords, vectors, 20)
    np.testing.assert_array_equal(ours_coords, expected_coords)
    np.testing.assert_array_equal(ours_vectors, expected_vectors)
    assert count < 100 or len(ours_coords) < count / 2  # it does merge


@pytest.mark.parametrize("count", [1, 3, 300])
def test_idw_interpolation_equals_pysteps(count):
    from pysteps.utils.interpolate import idwinterp2d

    rng = np.random.default_rng(count)
    coords = rng.uniform(0, 120, (count, 2))
    vectors = rng.normal(1.0, 2.0, (count, 2))
    xgrid, ygrid = motion.nodes_of(130, 4), motion.nodes_of(97, 4)
    expected = idwinterp2d(coords, vectors, xgrid, ygrid, dist_offset=0.125)
    ours = motion.idw_interpolation(coords, vectors, xgrid, ygrid, 0.125)
    assert ours.shape == (2, len(ygrid), len(xgrid))
    np.testing.assert_allclose(ours, expected.reshape(ours.shape), rtol=1e-12, atol=1e-12)
