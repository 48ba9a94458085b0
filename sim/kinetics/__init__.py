"""Reaction kinetics used by the digital twin and the optimizer benchmark."""
