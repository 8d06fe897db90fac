"""Hydra configs, packaged as nowcast.conf so an installed nowcast finds them."""
