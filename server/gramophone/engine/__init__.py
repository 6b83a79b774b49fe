"""The style-transfer engine: networks, objective, optimiser, style targets, presets, offline and streaming paths.

Never imports the network code (``osc``, ``live``, ``cli``).
"""
