"""Every bad setting, flag and output path: exit 2, one line on stderr, no traceback, no file left."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from nowcast import evaluate, predict
from nowcast.config import CHOICES, RANGES, allowed_values, check_config
from nowcast.errors import UserError

# ---------------------------------------------------------------- training settings (checked at start-up)
BAD_TRAIN = [
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.lr=-1", "trainer.lr"),
    ("trainer.lr=nan", "trainer.lr"),
    ("model.hidden=[]", "model.hidden"),
    ("model.hidden=[8,-1]", "model.hidden"),
    ("model.kernel_size=4", "must be odd"),
    ("model.patch_size=0", "model.patch_size"),
    ("trainer.val_every=0", "trainer.val_every"),
    ("trainer.precision=fp8", "auto, 32, bf16"),
    ("model.cell=lstm", "convlstm"),
    ("trainer.optimizer=sgd", "adam, rmsprop"),
    ("trainer.loss=huber", "logcsi"),
    ("trainer.max_minutes=-5", "trainer.max_minutes"),
    ("data.t_out=0", "data.t_out"),
    ("trainer.csi_weights=[1.0]", "differ in length"),
    ("trainer.csi_matched=true", "needs trainer.loss=logcsi and data=lagrangian_radar"),
]


@pytest.mark.parametrize(("override", "message"), BAD_TRAIN)
def test_bad_training_setting_is_one_line(compose_config, override, message):
    with pytest.raises(UserError, match=message) as info:
        check_config(compose_config(override))
    assert "\n" not in str(info.value) and override.split("=")[0] in str(info.value) or message in str(info.value)


def test_cuda_without_gpu_is_refused(compose_config):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="no CUDA device"):
        check_config(compose_config("trainer.device=cuda"))


def test_default_config_passes(compose_config):
    check_config(compose_config())
    check_config(compose_config("data=lagrangian_radar", "model=lagrangian", "trainer.loss=logcsi"))


def test_train_cli_bad_setting_exits_2_with_one_line_and_no_metrics(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "nowcast.train", "trainer.batch_size=0", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == ["error: trainer.batch_size=0 is out of range; it must be ≥ 1 and ≤ 65536"]
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_train_help_lists_what_the_start_up_check_allows(compose_config):
    """``--help`` and the error come from one table: every checked key shows the words its error uses."""
    run = subprocess.run(
        [sys.executable, "-m", "nowcast.train", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    keys = [*CHOICES, "model.cell", *(name for name, *_ in RANGES)]
    for key in keys:
        assert f"{key}" in run.stdout and allowed_values(key) in run.stdout, key
    for override in ("trainer.loss=huber", "trainer.batch_size=0", "model.cell=lstm"):
        with pytest.raises(UserError) as info:
            check_config(compose_config(override))
        assert allowed_values(override.split("=")[0]) in str(info.value)


# ---------------------------------------------------------------- predict / evaluate flags and paths
def _predict(radar_dir, out, *extra):
    return ["--input", str(radar_dir), "--output", str(out), *extra]


BAD_PREDICT = [
    (("--minutes", "1e9"), "out of range"),
    (("--minutes", "nan"), "out of range"),
    (("--minutes", "inf"), "out of range"),
    (("--minutes", "-5"), "out of range"),
    (("--steps", "100000"), "out of range"),
    (("--zr-b", "0"), "--zr-b 0 is not a positive number"),
    (("--zr-a", "-200"), "--zr-a -200 is not a positive number"),
    (("--format", "nexrad"), "known formats"),
    (("--probabilities", "1,5", "--members", "0"), "--members"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_PREDICT)
def test_predict_bad_numbers_exit_2_one_line(tmp_path, radar_dir, tiny_radar_checkpoint, capsys, extra, message):
    out = tmp_path / "fc.nc"
    code = predict.main(_predict(radar_dir, out, "--checkpoint", str(tiny_radar_checkpoint), *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not out.exists() and not list(tmp_path.glob(".fc.nc.*"))


def test_output_that_is_a_directory(tmp_path, radar_dir, tiny_radar_checkpoint, capsys):
    target = tmp_path / "dir.nc"
    target.mkdir()
    code = predict.main(_predict(radar_dir, target, "--checkpoint", str(tiny_radar_checkpoint), "--overwrite"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {target}: is a directory; give a file name ending in .nc"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_in_unwritable_folder(tmp_path, radar_dir, tiny_radar_checkpoint, capsys):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    code = predict.main(_predict(radar_dir, folder / "fc.nc", "--checkpoint", str(tiny_radar_checkpoint)))
    assert code == 2 and "not writable" in capsys.readouterr().err


def test_device_cuda_without_gpu_names_the_flag(tmp_path, radar_dir, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as info:
        predict.main(_predict(radar_dir, tmp_path / "fc.nc", "--device", "cuda"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--device" in err and "trainer.device" not in err


BAD_EVALUATE = [
    (("--fss-scales", "0"), "--fss-scales"),
    (("--thresholds", "nan"), "--thresholds"),
    (("--minutes", "inf"), "out of range"),
    (("--input-minutes", "0"), "out of range"),
    (("--every", "0"), "--every"),
    (("--model-members", "0"), "--model-members"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_EVALUATE)
def test_evaluate_bad_numbers_exit_2_one_line(tmp_path, radar_dir, capsys, extra, message):
    out = tmp_path / "eval"
    code = evaluate.main(["--input", str(radar_dir), "--output", str(out), "--methods", "persistence", "-q", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_controls_still_succeed(tmp_path, radar_dir, tiny_radar_checkpoint):
    assert predict.main(_predict(radar_dir, tmp_path / "fc.nc", "--checkpoint", str(tiny_radar_checkpoint), "-q")) == 0
    assert (
        evaluate.main(
            [
                "--input",
                str(radar_dir),
                "--output",
                str(tmp_path / "e"),
                "--methods",
                "persistence",
                "--minutes",
                "15",
                "-q",
            ]
        )
        == 0
    )
