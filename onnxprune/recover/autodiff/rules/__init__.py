"""Gradient rules, one module per op family; importing this package registers all of them."""

from onnxprune.recover.autodiff.rules import activation, conv, elementwise, linear, norm, pool, reduce, resize, select, shape  # noqa: F401
