"""Moving-MNIST generator: determinism, bouncing, disjoint digit pools, file readers."""

import gzip
import struct

import numpy as np
import pytest

from nowcast.data.moving_mnist import (
    MovingMNIST,
    MovingMNISTFile,
    bounce,
    load_digits,
    make_sequence,
    read_idx_images,
)


def test_same_seed_same_sequence_and_shapes():
    digits = load_digits("val")
    a = MovingMNIST(digits, 4, seed=7)[3]["frames"]
    b = MovingMNIST(digits, 4, seed=7)[3]["frames"]
    c = MovingMNIST(digits, 4, seed=8)[3]["frames"]
    assert a.shape == (20, 1, 64, 64)
    assert np.array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_bounce_reflects_position_and_velocity():
    pos, vel = bounce(np.array([1.05, -0.02]), np.array([0.1, -0.1]))
    np.testing.assert_allclose(pos, [0.95, 0.02])
    np.testing.assert_allclose(vel, [-0.1, 0.1])


def test_digit_stays_inside_and_moves():
    digit = np.zeros((1, 28, 28), dtype=np.uint8)
    digit[0, 10:18, 10:18] = 255
    seq = make_sequence(digit, np.random.default_rng(0), n_frames=60, num_digits=1)
    mass = seq.reshape(60, -1).sum(axis=1)
    assert np.allclose(mass, mass[0])  # never clipped by the border
    ys, xs = zip(*[np.argwhere(f > 0).mean(axis=0) for f in seq], strict=True)
    steps = np.hypot(np.diff(ys), np.diff(xs))
    assert 3.0 < np.median(steps) < 4.5 and np.all(steps < 5.5)  # about 3.6 px per frame
    turns = np.sum(np.diff(np.sign(np.diff(xs))) != 0) + np.sum(np.diff(np.sign(np.diff(ys))) != 0)
    assert turns >= 1  # bounced off a wall in 60 frames


def test_splits_are_disjoint_and_cover_all_classes():
    pools = {s: load_digits(s) for s in ("train", "val", "test")}
    assert [len(p) for p in pools.values()] == [4000, 500, 500]
    keys = {s: {p.tobytes() for p in pool} for s, pool in pools.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"] and not keys["val"] & keys["test"]


def test_idx_reader(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype=np.uint8)
    raw = struct.pack(">IIII", 2051, 3, 28, 28) + images.tobytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx_images(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    np.testing.assert_array_equal(load_digits("test", tmp_path), images)
    (tmp_path / "bad").write_bytes(struct.pack(">IIII", 1, 0, 0, 0))
    with pytest.raises(ValueError, match="IDX3"):
        read_idx_images(tmp_path / "bad")


def test_standard_test_file(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (20, 5, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", array)
    ds = MovingMNISTFile(tmp_path / "mnist_test_seq.npy")
    assert len(ds) == 5
    np.testing.assert_allclose(ds[2]["frames"][:, 0].numpy(), array[:, 2] / 255.0, rtol=1e-6)
