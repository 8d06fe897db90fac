"""Neural network modules: recurrent cells and the encoder–forecaster (torch only, no I/O)."""

from nowcast.models.cells import CELLS, ConvGRUCell, ConvLSTMCell, ConvLSTMCoupledCell, get_cell
from nowcast.models.encoder_forecaster import EncoderForecaster, ModelConfig, count_parameters

__all__ = [
    "CELLS",
    "ConvGRUCell",
    "ConvLSTMCell",
    "ConvLSTMCoupledCell",
    "EncoderForecaster",
    "ModelConfig",
    "count_parameters",
    "get_cell",
]
