"""Data-parallel training under torchrun (gloo, two CPU processes) equals one process on the joint batch."""

import os
import subprocess
import sys

import pytest
import torch

from nowcast.checkpoint import load_checkpoint

COMMON = [
    "model.hidden=[4,4]",
    "trainer.max_steps=3",
    "trainer.val_every=3",
    "trainer.precision=32",
    "trainer.device=cpu",
    "data.val_size=2",
    "data.test_size=2",
    "data.t_in=2",
    "data.t_out=2",
    "trainer.grad_clip=0",
]


def _start(launcher: list[str], batch_size: int, run_dir, cwd) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", *launcher, "nowcast.train", *COMMON, f"trainer.batch_size={batch_size}",
         f"hydra.run.dir={run_dir}"],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(run: subprocess.Popen) -> None:
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed (gloo)")
def test_torchrun_two_processes_match_single_process(tmp_path):
    torchrun = ["torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m"]
    runs = [  # started together: the suite waits for the slower one only
        _start(torchrun, 2, tmp_path / "ddp", tmp_path),  # 2 ranks × 2 samples
        _start([], 4, tmp_path / "one", tmp_path),  # 1 process × 4 samples: the same joint batch
    ]
    for run in runs:
        _finish(run)
    a = load_checkpoint(tmp_path / "ddp/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "one/checkpoints/last.pt")
    assert a["step"] == b["step"] == 3
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-6)
    assert (tmp_path / "ddp/metrics.json").is_file()
