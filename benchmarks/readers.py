"""``nowcast-predict`` on every shared radar source: what was read, and seconds per forecast.

    python benchmarks/readers.py --shared ../shared/radar [--checkpoint CKPT] > table.md

For each source the last 8 files are forecast 60 minutes ahead (MRMS: a 512 × 512 box, given
with ``--region`` in degrees); the wall time of the whole command (reading, motion, network,
writing the netCDF) and the peak memory of the process are reported.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import xarray as xr

from nowcast.io.formats import sniff_format

#: folder → region (``--region``) or None for the whole grid
SOURCES = {
    "bom-melbourne-2018-06-16": None,
    "knmi-2010-08-26": None,
    "mch-2015-05-15": None,
    "mch-2017-01-31": None,
    "fmi-2017-05-09": None,
    "opera-2018-08-24": None,
    "rmi-2021-07-04": None,
    "mrms-2019-06-10": "-87.36,-82.24,42.92,48.04",  # 512 × 512 pixels of 0.01°, where it rains
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/radar"))
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    print("| source | format | grid read | step | seconds per forecast (60 min) | peak memory |")
    print("|---|---|---|---|---|---|")
    for folder, region in SOURCES.items():
        files = sorted((args.shared / folder).iterdir())[-8:]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "fc.nc"
            cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "nowcast.predict", "--input", *map(str, files)]
            cmd += ["--output", str(out), "--minutes", "60", "-q"]
            if region:
                cmd += [f"--region={region}"]  # '=' so that a leading minus is not read as a flag
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            start = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if run.returncode != 0:
                print(f"| {folder} | failed: {run.stderr.strip().splitlines()[-2]} | | | | |", flush=True)
                continue
            peak_mb = int(run.stderr.strip().splitlines()[-1]) / 1024
            ds = xr.open_dataset(out)
            step = float(ds.attrs["nowcast_time_step_minutes"])
            grid = f"{ds.sizes['y']}×{ds.sizes['x']}"
            print(
                f"| {folder} | {sniff_format(files[0])} | {grid} | {step:g} min | {seconds:.1f} | {peak_mb:.0f} MB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
