"""Rakuten France multimodal product classification pipeline."""

# Before numpy, OpenBLAS, OpenCV, MKL and torch's kernel dispatch load: the same bits on any machine.
from rakuten.core.numerics import pin_environment as _pin_environment

_pin_environment()
