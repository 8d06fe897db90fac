"""Reading radar files and writing forecasts: the only code that touches files on disk."""
