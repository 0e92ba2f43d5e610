"""Gradient rules, one module per op family; each fills its own GRADIENTS table (see ../registry.py)."""
