"""Defocus blur map from a single image (Zhu, Cohen, Schiller, Milanfar, TIP 2013)."""
