"""Pretrained weights shipped with the package (see README for the command that made them)."""
