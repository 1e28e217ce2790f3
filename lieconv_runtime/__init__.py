"""LieConv runtime: loads generated groups by name; layers, models, data, training, CLI."""

from lieconv_runtime.loader import load_group, available_groups

__all__ = ["load_group", "available_groups"]
