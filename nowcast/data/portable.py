"""Cached Lagrangian windows packed small enough to move to a machine without pysteps (a GPU box).

The cache under ``data/`` (:mod:`nowcast.data.lagrangian`) holds float16 model-space crops, about
470 kB each; a training set of the shared radars is 0.6 GB. ``pack`` stores each crop's rain rate
as a one-byte code of 0.5 dB steps (10·log10 of mm/h, from −20 dB = 0.01 mm/h to +107 dB; code 0 is
below 0.01 mm/h, which the cache keeps as dry), its observed-pixel mask as bits, and compresses
both with LZMA: about 45 kB a crop. ``unpack`` writes the cache files back under their own names,
so a training run given the same settings and source paths finds them and never reads a radar file.
Each crop's motion (two float16 fields, pixels per step) is kept exactly, LZMA-compressed.

Packing is lossy by design: a rate comes back within ±0.25 dB (±5.9 %) of the cached one, finer
than the 1–2 dB of a radar's own rain-rate error; rates under 0.01 mm/h come back as 0.

    python -m nowcast.data.portable pack windows.npz data/cache/lagrangian_*.npz
    python -m nowcast.data.portable unpack windows.npz --cache-dir data/cache
"""

from __future__ import annotations

import argparse
import lzma
import sys
from pathlib import Path

import numpy as np

from nowcast.data.lagrangian import save_npz
from nowcast.errors import UserError
from nowcast.transforms import Transform

#: Codes per dB of rain rate, the lowest rate coded (mm/h) and its decibels.
STEPS_PER_DB = 2
FLOOR_MM_H = 0.01
FLOOR_DB = 10 * np.log10(FLOOR_MM_H)


def encode_rates(rates: np.ndarray) -> np.ndarray:
    """Rain rates (mm/h, any shape) to uint8 codes: 0 below ``FLOOR_MM_H``, else 0.5 dB steps from it.

    Steps start at whole and half decibels, so 1 and 10 mm/h (0 and 10 dB) are step edges and no
    rate crosses them; 0.5, 2 and 5 mm/h lie within 0.01 dB of an edge.
    """
    with np.errstate(divide="ignore"):
        decibels = 10 * np.log10(np.maximum(rates, 1e-30))
    codes = np.clip(np.floor((decibels - FLOOR_DB) * STEPS_PER_DB) + 1, 1, 255)
    return np.where(rates >= FLOOR_MM_H, codes, 0).astype(np.uint8)


def decode_rates(codes: np.ndarray) -> np.ndarray:
    """uint8 codes back to rain rates (mm/h, float32) at the centre of their step; code 0 is 0 mm/h."""
    decibels = (codes.astype(np.float32) - 0.5) / STEPS_PER_DB + FLOOR_DB
    return np.where(codes > 0, 10 ** (decibels / 10), 0).astype(np.float32)


def pack(cache_files: list[Path], out: Path, transform: Transform) -> None:
    """Pack cache files (``frames`` in ``transform``'s model space, ``valid``, ``step_minutes``, ``velocity``)."""
    arrays: dict[str, np.ndarray] = {"transform_scale_mm_h": np.float64(transform.scale_mm_h)}
    for index, path in enumerate(cache_files):
        with np.load(path) as cache:
            frames, valid, steps = cache["frames"], cache["valid"], cache["step_minutes"]
            if "velocity" not in cache.files:
                raise UserError(f"{path} holds no motion (written by an older nowcast): build the cache again")
            velocity = cache["velocity"].astype(np.float16)
        codes = encode_rates(transform.decode(frames.astype(np.float32)))
        arrays[f"{index}_name"] = np.array(path.name)
        arrays[f"{index}_shape"] = np.array(frames.shape)
        arrays[f"{index}_codes"] = np.frombuffer(lzma.compress(codes.tobytes()), np.uint8)
        arrays[f"{index}_valid"] = np.frombuffer(lzma.compress(np.packbits(valid).tobytes()), np.uint8)
        arrays[f"{index}_step_minutes"] = steps
        arrays[f"{index}_velocity_shape"] = np.array(velocity.shape)
        arrays[f"{index}_velocity"] = np.frombuffer(lzma.compress(velocity.tobytes()), np.uint8)
    save_npz(out, arrays)


def unpack(packed: Path, cache_dir: Path) -> list[Path]:
    """Write the cache files of ``packed`` into ``cache_dir`` (float16 model space); returns their paths."""
    with np.load(packed) as data:
        transform = Transform("log1p", float(data["transform_scale_mm_h"]))
        count = sum(1 for key in data.files if key.endswith("_name"))
        written = []
        for index in range(count):
            if f"{index}_velocity" not in data.files:
                raise UserError(f"{packed} holds no motion (packed by an older nowcast): pack the caches again")
            shape = tuple(int(n) for n in data[f"{index}_shape"])
            codes = np.frombuffer(lzma.decompress(data[f"{index}_codes"].tobytes()), np.uint8).reshape(shape)
            bits = np.frombuffer(lzma.decompress(data[f"{index}_valid"].tobytes()), np.uint8)
            valid = np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)
            frames = transform.encode(decode_rates(codes)).astype(np.float16)
            velocity_shape = tuple(int(n) for n in data[f"{index}_velocity_shape"])
            velocity = np.frombuffer(lzma.decompress(data[f"{index}_velocity"].tobytes()), np.float16)
            path = cache_dir / str(data[f"{index}_name"])
            arrays = {
                "frames": frames,
                "valid": valid,
                "step_minutes": data[f"{index}_step_minutes"],
                "velocity": velocity.reshape(velocity_shape),
            }
            save_npz(path, arrays)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``pack OUT CACHES...`` or ``unpack PACK``; returns the exit status (2 for a user error)."""
    parser = argparse.ArgumentParser(prog="python -m nowcast.data.portable", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_cmd = commands.add_parser("pack", help="pack Lagrangian cache files into one file")
    pack_cmd.add_argument("out", type=Path)
    pack_cmd.add_argument("caches", type=Path, nargs="+")
    pack_cmd.add_argument("--scale-mm-h", type=float, default=100.0, help="data.transform_scale_mm_h of the caches")
    unpack_cmd = commands.add_parser("unpack", help="write the cache files of a pack")
    unpack_cmd.add_argument("packed", type=Path)
    unpack_cmd.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            missing = [str(p) for p in args.caches if not p.is_file()]
            if missing:
                raise UserError(f"no such cache file: {missing[0]}")
            pack(args.caches, args.out, Transform("log1p", args.scale_mm_h))
            print(f"packed {len(args.caches)} cache file(s) into {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
        else:
            if not args.packed.is_file():
                raise UserError(f"no such pack: {args.packed}")
            for path in unpack(args.packed, args.cache_dir):
                print(path)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
