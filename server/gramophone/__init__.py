"""Gramophone: live neural style transfer for audio over OSC."""

__version__ = "0.1.0"
