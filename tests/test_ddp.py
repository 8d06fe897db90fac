"""Data-parallel training under torchrun (gloo, two CPU processes) equals one process on the joint batch."""

import os
import shutil
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


@pytest.mark.skipif(shutil.which("torchrun") is None and sys.platform != "linux", reason="needs torchrun")
def test_torchrun_two_processes_match_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29517",
            "-m",
            "nowcast.train",
            *COMMON,
            "trainer.batch_size=2",
            f"hydra.run.dir={tmp_path / 'ddp'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "nowcast.train", *COMMON, "trainer.batch_size=4", f"hydra.run.dir={tmp_path / 'one'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_checkpoint(tmp_path / "ddp/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "one/checkpoints/last.pt")
    assert a["step"] == b["step"] == 3
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-6)
    assert (tmp_path / "ddp/metrics.json").is_file()
