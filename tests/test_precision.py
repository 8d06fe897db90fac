"""``precision: auto`` follows the hardware; explicit bf16 on emulating hardware warns."""

import logging

import pytest
import torch

from nowcast import precision
from nowcast.precision import PrecisionChoice, resolve_precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    choice = resolve_precision("auto", torch.device("cpu"))
    assert choice.name == ("bf16" if native else "32")
    assert ("without native bf16: fp32" in choice.reason) == (not native)
    assert precision.cpu_capability() in choice.reason


def test_explicit_bf16_without_native_support_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="nowcast.precision"):
        choice = resolve_precision("bf16", torch.device("cpu"))
    assert choice == PrecisionChoice("bf16", choice.reason)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "several times slower" in warnings[0].getMessage()


def test_explicit_32_never_warns(monkeypatch, caplog):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="nowcast.precision"):
        assert resolve_precision("32", torch.device("cpu")).name == "32"
    assert not caplog.records


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="auto, 32, bf16"):
        resolve_precision("fp8", torch.device("cpu"))


def test_schema_and_yaml_agree_on_auto(compose_config):
    from nowcast.config import TrainerConfig

    assert TrainerConfig().precision == "auto"
    assert compose_config().trainer.precision == "auto"
