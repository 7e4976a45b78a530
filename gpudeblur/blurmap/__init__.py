"""Defocus blur map from a single image (Zhu, Cohen, Schiller, Milanfar, TIP 2013).

:func:`estimate_blur_map` / :class:`BlurMapEstimator` run the whole method;
:mod:`.gabor` (local frequency analysis, eqs. 3-4), :mod:`.spectra` (blur
and noise spectra, fit and LUTs, eqs. 6, 7, 12) and :mod:`.likelihood`
(per-pixel search, eqs. 5, 11, 13) are usable on their own.
"""

from .estimator import BlurMapEstimator, BlurMapResult, estimate_blur_map, measure_noise
from .labeling import (
    coherent_labeling,
    data_cost_from_candidates,
    edge_weights,
    labeling_energy,
    segment_in_focus,
    solve_binary,
    solve_multilabel,
)
from .gabor import GaborBank, gabor_bank
from .likelihood import SearchSettings
from .spectra import BlurSpectrumLUT, PSFCalibration, build_lut

__all__ = [
    "BlurMapEstimator",
    "BlurMapResult",
    "BlurSpectrumLUT",
    "GaborBank",
    "PSFCalibration",
    "SearchSettings",
    "build_lut",
    "coherent_labeling",
    "data_cost_from_candidates",
    "edge_weights",
    "labeling_energy",
    "segment_in_focus",
    "solve_binary",
    "solve_multilabel",
    "estimate_blur_map",
    "gabor_bank",
    "measure_noise",
]
