"""nowcast: precipitation nowcasting with ConvLSTM encoder–forecaster networks."""

__version__ = "0.1.0"
