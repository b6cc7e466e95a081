"""Experiments: the pre-train and clean stages as library calls, sweeps over them, and the demo."""
