"""Bundled sample data (see README.txt for sources and licences)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

__all__ = ["sharp", "data_path"]


def data_path(name: str) -> Path:
    """Path of a bundled file (e.g. ``'sharp.png'``)."""
    p = Path(str(importlib.resources.files(__name__).joinpath(name)))
    if not p.is_file():
        raise FileNotFoundError(f"no bundled data file {name!r} in {p.parent}")
    return p


def sharp() -> np.ndarray:
    """A sharp natural RGB image: (384, 384, 3) float32 in ``[0, 1]``.

    NASA's portrait of astronaut Eileen Collins (public domain), from
    scikit-image's sample data, resized from 512x512.
    """
    from ..io import read_image  # noqa: PLC0415

    img, _ = read_image(data_path("sharp.png"))
    return img
