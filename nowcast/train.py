"""``python -m nowcast.train``: Hydra entry point for training.

Examples
--------
``python -m nowcast.train`` trains the default ConvLSTM on Moving-MNIST;
``python -m nowcast.train trainer.max_steps=200 model.hidden=[32,32]`` overrides settings;
``python -m nowcast.train data=radar model=radar data.paths=[path/to/radar]`` trains on radar.

"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nowcast import __version__
from nowcast.checkpoint import CheckpointError
from nowcast.config import check_config, constraints_help, register_configs
from nowcast.errors import UserError
from nowcast.training import TrainingError, train

log = logging.getLogger("nowcast.train")


@hydra.main(version_base=None, config_path="pkg://nowcast.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Train with the composed config; returns the best validation loss (for sweepers)."""
    try:
        check_config(cfg)
        metrics = train(cfg, HydraConfig.get().runtime.output_dir)
    except (UserError, CheckpointError, TrainingError, ValueError) as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2 if not isinstance(err, TrainingError) else 1)
    if "stopped" in metrics and str(metrics["stopped"]).startswith("signal"):
        sys.exit(130)
    return metrics.get("best_val_loss")


def cli() -> None:
    """Console-script entry point ``nowcast-train`` (``--help`` lists config groups, ``--version``)."""
    if "--version" in sys.argv[1:]:
        print(f"nowcast {__version__}")
        return
    register_configs()
    try:
        main()
    except SystemExit as done:
        if done.code in (0, None) and {"--help", "-h"} & set(sys.argv[1:]):
            print(constraints_help())
        raise


if __name__ == "__main__":
    cli()
