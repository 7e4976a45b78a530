"""All-in-focus recovery: the main job.

One photo with out-of-focus regions in, an all-in-focus image out, plus the
blur map and the layers. The pipeline is thin; each step is a function that
also works on its own:

1. blur map: given (``radius_map=``) or estimated by
   :func:`gpudeblur.blurmap.estimate_blur_map` (Zhu et al. 2013);
2. deblurring, by ``mode`` (default ``'auto'``: ``sv-admm``, or ``fast``
   on the CPU for an image above :data:`AUTO_SV_ADMM_MAX_PIXELS` or a map
   estimated at a coarse scale, :data:`AUTO_SV_ADMM_MAX_MAP_SCALE`):

   ``'sv-admm'``
       spatially varying deconvolution, eq. 19 of Zhu et al.
       (:func:`gpudeblur.spatially_varying.deconvolve_spatially_varying`);
   ``'fast'``
       per-radius closed-form deconvolution blended by the map;
   ``'blind'``
       the map is cut into an in-focus layer and ``L`` out-of-focus layers;
       each out-of-focus layer is deblurred blindly with a symmetric
       low-rank kernel (:func:`gpudeblur.blind.blind_deblur_layer`,
       Alg. 1–2 of the low-rank symmetric paper), initialised from the
       layer's median radius; the in-focus layer is kept;
   with an estimated map, ``sv-admm`` and ``fast`` first lower radii that
   a sharp edge nearby rules out (:func:`edge_cap`) and shrink radii
   whose trial deconvolutions ring (:func:`radius_check`), and ``sv-admm``
   follows its solve with the map's radius spread by one with a narrower
   spread, keeping that where it rings no more (:data:`SPREAD_SELECT`,
   :func:`spread_choice`), while ``fast`` deconvolves the pixels the map
   knows nothing about (no texture above the noise) with the radius whose
   filter passes the least noise (:data:`UNINFORMED_CONFIDENCE`,
   :func:`quietest_radii`);
3. composition ``f = Σ α_i ⊙ u_i`` with feathered masks (seams blended);
   with an estimated map, ``sv-admm`` and ``fast`` keep the input where the
   map says in focus (:data:`KEEP_IN_FOCUS`, :func:`in_focus_weight`), as
   ``blind`` keeps its in-focus layer (r < ``in_focus_radius``).

One PSF family (``psf_family``: the disc by default, a Gaussian, any
``r -> psf`` callable or a lens calibration,
:class:`gpudeblur.blurmap.PSFCalibration`) serves both the estimate and the
deblurring, so the map's ``r`` means the same thing to both. The default
radius thresholds (:data:`KEEP_IN_FOCUS`, ``in_focus_radius``) are disc
radii; for another family they become the scales whose PSFs have the same
second moment (:func:`disc_equivalent`; a Gaussian's σ ≈ r/2 from 2 px up).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._backend import BACKEND_NAMES, Backend, array_module, as_backend_array, get_backend, is_cupy_array, to_output
from ._resample import block_mean, upsample_linear
from ._validate import (check_choice, check_compression_noise, check_image, check_positive, check_positive_int,
                        check_weight, join_alpha, split_alpha)
from .restoration import _LAM_PER_SIGMA, TV_CHANNELS
from .spatially_varying import (MAX_RADIUS_SIGMA, _check_family_psfs, _family, check_radius_map, check_saturated, check_uncertainty,
                                deconvolve_fast_scaled, deconvolve_spatially_varying, deconvolve_spread_sequence, default_lam,
                                noise_lam)

__all__ = ["AllInFocus", "AllInFocusResult", "split_layers", "merge_small_layers", "compose_layers", "in_focus_weight", "uninformed_weight", "quietest_radii",
           "disc_equivalent",
           "family_function", "radius_check", "edge_cap", "saturation_mask"]

MODES = ("auto", "sv-admm", "fast", "blind")
#: ``'auto'``: ``sv-admm`` (the quality benchmark's winner) where its speed is
#: acceptable, ``fast`` where it is not (:data:`AUTO_SV_ADMM_MAX_PIXELS`).
DEFAULT_MODE = "auto"
#: ``mode='auto'`` takes ``sv-admm`` on the CPU up to this many pixels and
#: ``fast`` above; on a GPU always ``sv-admm``. Measured on 2 CPU cores
#: (docs/STATUS.md, session 15): ``sv-admm`` deblurs a 1 MP photo in
#: ~80 s, but a 4 MP one with its map read at scale 4 (spread (2, 12), a
#: 33-entry bank) at 57 s per ADMM iteration, ~29 min for the 30; ``fast``
#: runs the whole 4 MP job in 30–37 s and 12 MP in 100–115 s.
AUTO_SV_ADMM_MAX_PIXELS = 2_000_000
#: ... and, on the CPU, only on a map it estimated at this scale or finer: a map read at a coarser
#: scale (as ``map_scale='auto'`` reads strong defocus, radii beyond the full-resolution search,
#: or as ``map_scale=`` sets) gets ``fast``. Measured on 2 CPU
#: cores, the six 1 MP scenes of ``bench/bench_large.py`` (session 34, ``docs/STATUS.md``): with
#: radii to 15–24 px (maps read at scale 2–4) ``sv-admm`` gains 0.11–1.10 dB over ``fast`` (mean
#: 0.44) but takes 147–199 s against 8–26 s for the whole job (its bank and spread are wide: its
#: deblurring alone 145–196 s against 2–3.5 s); with radii to 8 px (scale 1) it gains 0.21–0.86 dB
#: (mean 0.46) for 2.4× the job's time (91–127 s against 39–53 s), and keeps ``sv-admm``.
AUTO_SV_ADMM_MAX_MAP_SCALE = 1
#: Default TV weight of ``sv-admm`` on an *estimated* map. An estimated map
#: is off by about a pixel in places (blur-map MSE 0.2–1.7 px² on the bench)
#: and deconvolving with a wrong disc radius rings, so this used to be 3e-3
#: (session 4–9: bench 6 scenes +2.18 dB over the input, 8 more +0.99).
#: The synthetic scenes prefer 3e-4 (+3.03 / +1.72), but on real photos
#: (CUHK 0223) the estimated radii were ~1.5–2x too large (a constant 3 px
#: map deblurs the walkers cleanly, the estimate reads 4–8) and 3e-4 rang
#: there. :func:`radius_check` now finds such regions from the ringing
#: itself and shrinks their radii, so the low weight is the default (with
#: the check off, the pipeline falls back to 3e-3: see
#: :data:`UNCHECKED_MAP_LAM`). A weight scaled with the measured noise
#: (∝ σ̂², 3e-4 on the bench, ~2–3e-3 on the CUHK JPEGs) was rejected: at
#: σ_n = 3.2e-3 the bench's best weight is still 3e-4.
ESTIMATED_MAP_LAM = 3e-4
#: TV weight of ``sv-admm`` on an estimated map when :func:`radius_check` is
#: off (``AllInFocus(radius_check=False)``): robust to over-estimated radii,
#: 0.85 dB below :data:`ESTIMATED_MAP_LAM` on the synthetic bench.
UNCHECKED_MAP_LAM = 3e-3
#: :func:`radius_check` settings: trial scales of the map (the last must be
#: 1), the relative drop of the ℓ1/ℓ2 gradient ratio a smaller scale must
#: show before it is taken, the Gaussian window (px) over which the ratio is
#: measured, and the Gaussian smoothing (px) of the chosen scale. Measured
#: (192² scenes, σ_n² = 1e-6, ``fast`` trials at λ 0.015, region ratios
#: relative to scale 1): on the 14 synthetic scenes with estimated maps the
#: best smaller scale lowers the ratio by at most 5.7 % (camera), on CUHK
#: 0223's walkers by 25 % (right, read 6 px) and 14 % (left, 5.2 px); with a
#: 10 % margin and a 40 px window the check leaves 12 of the 14 scenes
#: untouched, shrinks 27 % / 6 % of camera/layered / camera/ramp (their
#: PSNR +0.02 / −0.01 dB) and halves the walkers' radii.
#: Edge-sharpness cap of an estimated map (:func:`edge_cap`): slack on the
#: bound, window (px, square) of the local contrast, and the edge threshold
#: in units of the noise σ. See :func:`edge_cap` for the measurements.
EDGE_CAP_SLACK = 1.5
EDGE_CAP_WINDOW = 17
EDGE_CAP_NOISE_FACTOR = 8.0
#: Edges within this many px (square) of a clipped value are not used by the edge cap.
EDGE_CAP_CLIP_REACH = 2
#: Side (px) of the tiles the edge cap's disc minima run on, per backend (None:
#: the whole image; :func:`_capped_in_tiles`). A tile gets only the reach its
#: own largest radius needs, and no work when no edge within that reach can
#: lower a radius of it. On the CPU (2 cores) the disc pass of a 45 MP photo
#: read at scale 8 (radii to 64 px) took 44 s on the whole image, 2.2 s on 64
#: px tiles (same bits); with nothing to skip (radii 64 px and a low bound in
#: reach everywhere) 24.6 s whole, 22.4 s tiled at 24 MP, 4.1 / 2.7 s at 12 MP
#: (radii 32 px). On a GPU the whole image is one tile: there each array pass
#: is one kernel launch, and thousands of small tiles would cost more in
#: launches than they save.
EDGE_CAP_TILE = {"cpu": 64}
#: The check needs the full grid: run on 2×2 means (radii, windows, noise
#: and the trials' λ scaled; 6x faster) it leaves the bench's 6 scenes
#: alone and CUHK 0223 nearly so (mean radius change 0.03 px), but it
#: misses the over-read radii of the sharp photos (ringing of a 2.5–5 px
#: disc is near the coarse grid's Nyquist): astronaut / coffee / rocket
#: 42.74 / 57.05 / 44.65 → 41.31 / 53.89 / 40.91 dB; margins 0.03–0.07
#: there trade the sharp photos against the camera scenes, none matches
#: the full grid on both (session 12).
RADIUS_CHECK_SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RADIUS_CHECK_MARGIN = 0.1
#: Gaussian σ (px) of :func:`radius_check`'s windows, each judged on its
#: own, the smallest factor kept. One 40 px window missed a small smooth
#: region read as blurred inside a sharp photo (chelsea's iris, ~5 px:
#: ``fast`` rang there in concentric bands), and a 20 px window alone leaves
#: regions at 1 that only the large one judges (astronaut −1.8 dB). On the
#: estimated maps (session 32; 40 → 40 and 20 px), ``fast``: bench 6 26.72 →
#: 26.72 dB, eight held-out scenes 25.37 → 25.37, five sharp 256² photos
#: 43.33 → 44.20 (chelsea 32.38 → 36.02, none lower); ``sv-admm``: 27.72 →
#: 27.72 (each scene equal), 25.78 → 25.78, 46.77 → 47.27 (chelsea 35.52 →
#: 37.58). A third, 10 px window shrank 4 % of a half blurred by 3 px whose
#: map was right (to 0.79) and cost ``sv-admm`` 0.02 dB on the bench.
RADIUS_CHECK_WINDOW = (40.0, 20.0)
RADIUS_CHECK_SMOOTH = 8.0
#: Radius range (px) over which the result on an *estimated* map fades from
#: the input (below) to the deconvolution (above), for ``sv-admm`` and
#: ``fast``. The estimator cannot tell radii below ~1.5 px from a sharp image
#: (in-focus content reads 0.5–1.4 px), and deconvolving a sharp region with
#: a 1–1.5 px disc over-sharpens it: on sharp 256² crops with σ_n = 1e-3
#: (input 60 dB) the pipeline returned 31.0 / 38.6 / 35.3 dB (astronaut,
#: coffee, camera) and smoothed the raindrops on CUHK 0223's in-focus
#: umbrella; keeping the input below this range gives 40.2 / 54.9 / 51.6 dB.
#: On the 14 simulated scenes it changes the mean gain by −0.01 / +0.03 dB
#: (bench 6 / 8 more; (1.0, 1.5): +0.01 / +0.01, (2.0, 3.0): −0.17 / −0.10),
#: so little is lost where the blur is real. Centred on the paper's in-focus
#: threshold τ = 2 (eq. 17). (``blind`` keeps its in-focus layer, r < 1 px,
#: as it is.) Sharp-photo rows: ``bench/bench_allinfocus.py`` (section "No blur").
KEEP_IN_FOCUS = (1.5, 2.5)
#: Gaussian feather (px) of the in-focus weight, as the layer masks in blind mode.
KEEP_FEATHER = 2.0
#: Lowest noise variance handed to the blur-map estimator (the paper's
#: simulations use 1e-6; = ``blurmap.estimator.NOISE_FLOOR``, the default
#: floor of its ``noise='auto'``, not imported so that this module loads
#: the blur-map package only when a map is estimated).
NOISE_FLOOR = 1e-6
#: Share of ``AllInFocus(compression_noise=v)`` the blur-map estimator's
#: measured noise is raised to (its ``compression_noise``). 0.25 / 0.5 / 1
#: gave the demo scene at JPEG quality 75 27.94 / 28.01 / 28.06 dB and a
#: sharp photo 31.61 / 31.55 / 31.06 (without: 27.63 / 31.57); see
#: docs/allinfocus.md ("JPEG input").
COMPRESSION_NOISE_SHARE = 0.5


def estimator_compression_noise(compression_noise: float | None) -> float:
    """The blur-map estimator's ``compression_noise`` for a JPEG's
    compression error ``compression_noise`` (:data:`COMPRESSION_NOISE_SHARE`
    of it; 0 for None), as ``AllInFocus`` and the ``blurmap`` command pass it."""
    return COMPRESSION_NOISE_SHARE * (compression_noise or 0.0)


#: ``sv-admm``'s TV weight on an estimated map of a compressed input is at
#: least this times ``sqrt(compression_noise)`` (the JPEG's error, which
#: the ringing of a low weight amplifies; :data:`ESTIMATED_MAP_LAM` is
#: tuned on clean inputs). JPEG bench (the demo scene and three photos on
#: the layered map, three sharp photos; 256²; against the floor alone):
#: 0.05 gives +0.16 / +0.16 dB mean at quality 75 (blurred / sharp; each
#: +0.02 … +0.38), +0.01 / +0.02 at 90 (each −0.02 … +0.07), 0.00 at 95;
#: fixed weights 1e-3 / 3e-3 gave +0.17 / +0.04 on the blurred scenes at
#: 75 but −0.08 / −0.39 at 90. See docs/allinfocus.md ("JPEG input").
COMPRESSION_LAM_PER_SIGMA = 0.05
#: ``sv-admm``'s TV weight on an estimated map is at least this times the
#: input's measured noise σ̂ (:func:`gpudeblur.estimate_noise`), as its
#: default on a given map is (``restoration._LAM_PER_SIGMA``, the same
#: 0.1). :data:`ESTIMATED_MAP_LAM` is tuned at σ = 1e-3 and, on noisy
#: photos, lets the noise ring: the bench's six scenes and three sharp
#: photos (192², noise σ = 0.01 / 0.02 / 0.05) went from 30.73 / 27.88 /
#: 20.95 dB mean (inputs 29.45 / 27.22 / 23.39: every scene below its
#: input at 0.05) to 30.90 / 28.76 / 25.72 (0.03σ̂: 30.77 / 28.47 / 24.95,
#: 0.05σ̂: 30.89 / 28.67 / 25.42, 0.2σ̂: 30.81 / 28.72 / 25.82). Below
#: σ̂ = 3e-3 nothing changes. docs/allinfocus.md ("Noisy input").
NOISE_LAM_PER_SIGMA = _LAM_PER_SIGMA
#: Lowest noise σ the edge cap and the radius check assume (√NOISE_FLOOR;
#: 8-bit quantization alone is 1/(255·√12) ≈ 1.1e-3). A mostly flat 8-bit
#: image measures σ̂ = 0, and one-level banding would then count as edges.
NOISE_SIGMA_FLOOR = 1e-3
#: Small-radius preference in the coherent labeling of the estimated map
#: (see ``radius_prior`` in :func:`gpudeblur.blurmap.coherent_labeling`).
#: Without it, smooth regions of in-focus subjects read as large radii and
#: ring (astronaut/layered, window 41: 20.8 dB against 24.3 dB at 2). It is
#: a constant pull of ``RADIUS_PRIOR`` nats per pixel of radius, so a large
#: value also pulls genuinely large, low-contrast blur down: at 3, a 0→8
#: ramp on the grass texture was read as 4 px at its 8 px end (map MSE
#: 2.95 against 0.09 at 1). 2 was the best deblurred PSNR over the 14 scenes of the
#: window sweep below (25.57 dB; 25.54 at 1, 25.56 at 3).
RADIUS_PRIOR = 2.0
#: Analysis window of the blur-map estimate in the pipeline (the estimator's
#: own default is the paper's 41). A larger window gives the Gabor bank lower
#: frequencies (2/N cycles/px) and finer spacing, which separates large
#: radii, and averages more pixels per local spectrum. Measured
#: (192² scenes, σ_n² = 1e-6, sv-admm on the estimated map; 6 bench scenes
#: plus 8 more from camera/grass/gravel/rocket): window 31/41/51/61/71/81 →
#: bench map MSE 2.30/1.59/0.83/0.90/1.03/1.14 px², deblurred 25.26/25.63/
#: 26.40/26.32/26.27/26.22 dB; over all 14 scenes 25.06 dB at 41 and
#: 25.57 dB at 51. The price is a coarser map at blur boundaries (the
#: layered scenes gain least) and ~1.4x the filters (84 instead of 60).
MAP_WINDOW = 51
#: ``(radius_sigma, spatial_sigma)`` of an *estimated* map: the deblurring
#: treats each pixel's radius as the map's value spread by a Gaussian of
#: 0.5 px in ``r`` and pooled over a Gaussian neighbourhood of 3 px, and
#: minimizes the expected misfit over it (see
#: :mod:`gpudeblur.spatially_varying`). Measured (192² scenes, σ_n² = 1e-6,
#: sv-admm, TV 3e-3; bench 6 scenes / 8 more from camera, grass, gravel,
#: rocket): exact map 26.38 / 24.97 dB, uncertain 26.42 / 25.10 dB (the rocket
#: scene whose in-focus rocket reads 2 px: 31.40 → 32.19); the gain grows as
#: the TV weight falls (at 3e-4: 27.28 / 25.77). radius_sigma 0.3/0.4/0.45/0.5
#: and spatial_sigma 2/3/4/8 were tried at 3e-4: flat within ±0.2 dB, 0.5 and 3
#: never fell below the input on any of the 14 scenes. ``fast`` blends its
#: per-radius results by the same weights (26.39 → 26.57 dB). Re-measured
#: with the edge cap, the radius check and ``keep_in_focus`` (session 12,
#: ``sv-admm``, mean dB over the input, bench 6 / 8 more / the 5 sharp
#: 256² photos of the "No blur" bench, whose input is 60 dB): (0.5, 3)
#: +3.02 / +1.46 / −13.5; (0.4, 3) +3.24 / +1.59 / −14.9; (0.3, 3) +3.43 /
#: +1.73 / −16.6; (0.25, 2) +3.51 / +1.75 / −16.9. A split spread, σ
#: below / above the map's value (spatial 3), moves along the same line:
#: 0.1 / 0.5 +3.54 / +1.83 / −18.7, 0.25 / 0.75 +3.27 / +1.67 / −16.5;
#: 0.5 / 0.25 and 0.5 / 0.1 lost 0.07–0.6 dB against (0.5, 3) on the
#: first three bench scenes (not run further). The spread below the
#: map's value protects the sharp photos (their radii are over-read) and
#: costs the blurred scenes, so it stays at 0.5.
MAP_UNCERTAINTY = (0.5, 3.0)
#: ``(factor, margin)`` of ``AllInFocus(spread_select=...)`` (on by default
#: for ``sv-admm`` on an estimated map): ``sv-admm`` is solved with the
#: spread's ``radius_sigma`` for the first half of its iterations, then
#: with ``radius_sigma`` times ``factor`` (0.1 px at scale 1) for the second
#: half, warm-started from the first
#: (:func:`gpudeblur.spatially_varying.deconvolve_spread_sequence`), and per
#: pixel the narrow result is taken where it does not ring: where the
#: normalized sparsity of its luminance gradient magnitude, ``G(|∇f|) /
#: sqrt(G(|∇f|²))`` over a Gaussian window of :data:`SPREAD_SELECT_WINDOW`
#: px (as in :func:`radius_check`), is below ``1 − margin`` times the wide
#: result's; the choice is smoothed by a Gaussian of
#: :data:`SPREAD_SELECT_SMOOTH` px. A narrow spread sharpens truly blurred
#: regions but rings where a sharp photo's smooth regions beside edges read
#: as blurred, and neither the map nor the texture tells them apart (session
#: 20); the two results' ringing does. Measured (192² scenes, σ_n² = 1e-6,
#: estimated map): session 20, two full 30-iteration solves: bench 6 scenes
#: 27.26 → 27.74 dB at margin 0.03 (narrow alone 27.94), the five sharp
#: 256² photos −0.13 dB mean (narrow alone −2.2 … −8.4 dB), eight held-out
#: scenes (camera, grass, gravel, rocket × layered/ramp) 25.65 → 25.86 dB.
#: Session 21: the wide solve at 15 iterations is as good as at 30 (bench
#: 27.24 / sharp photos +0.06 dB), and the narrow one warm-started from it
#: needs 15 (cold 30: 27.74, warm 5 / 10 / 15: 27.43 / 27.62 / 27.71; a
#: cold 15: 27.58), so 15 + 15 iterations, as many as one solve: bench
#: 27.26 → 27.72 dB, sharp photos −0.13 dB mean (chelsea −0.46), held-out
#: 25.65 → 25.80 dB, at or above the default on each (15 + 10: 27.63 /
#: −0.05 / 25.76). The deconvolution takes 40–46 % longer on the CPU (each
#: solve's first iterations need full CG solves).
SPREAD_SELECT = (0.2, 0.03)
#: ``(lo, hi)`` confidence of ``AllInFocus(shrink_uninformed=True)``:
#: where the map's confidence (the signal fraction of a pixel's Gabor
#: response power, :class:`gpudeblur.blurmap.BlurMapResult`) is ``≤ lo``,
#: ``fast`` on a map it estimated deconvolves with the *quietest* radius up
#: to the map's, the one whose filter passes the least white noise at the
#: prior's weight (:func:`quietest_radii`), with the map's radius where it is
#: ``≥ hi``, and a linear fade between (:func:`uninformed_weight`). Where a
#: photo has no texture above the noise (a clear sky) its radius is a guess
#: filled in from the neighbours and there is nothing to sharpen, so the
#: least noise is the best result: at a low weight (a clean photo) that is
#: radius 0, where a large guessed radius would amplify the noise into
#: coloured blotches a few pixels wide; at a high weight (a noisy photo) a
#: large radius's filter smooths more than radius 0's. ``sv-admm`` does not
#: get it (its TV weight smooths such regions already). Measurements:
#: docs/allinfocus.md, "Flat noisy regions in ``fast``".
UNINFORMED_CONFIDENCE = (0.05, 0.15)
#: Gaussian σ (px) of the sparsity window of ``spread_select``.
SPREAD_SELECT_WINDOW = 8.0
#: Gaussian σ (px) smoothing ``spread_select``'s per-pixel choice.
SPREAD_SELECT_SMOOTH = 2.0
#: ADMM iterations of ``sv-admm`` (``AllInFocus(num_iter=None)``); with
#: ``spread_select`` the wide solve takes ``n − n // 2`` and the narrow one ``n // 2``.
SV_ADMM_ITERATIONS = 30
#: A pixel counts as clipped (:func:`saturation_mask`) where one of its
#: colour channels reaches this fraction of the white point (1 for images
#: in [0, 1]): 254/255 for 8-bit. At 0.98 (250/255, to catch JPEG ripple)
#: the bench's coffee/layered scene with the true map lost 0.37 dB (0.1 % of
#: its values are ≥ 0.98 after the noise), at 0.995 0.10 dB. Clipped highlights (bokeh, specular glints, sky) break
#: the linear blur model: their sharp values are unknown and larger, and
#: fitting the clipped plateau rings around it.
SATURATION_LEVEL = 0.995


@dataclass
class AllInFocusResult:
    """What :meth:`AllInFocus.run` found besides the image.

    Attributes
    ----------
    radius_map : (M, N) ndarray (NumPy, float32)
    mode : str
    layer_labels : (M, N) int ndarray or None
        0 = in focus, 1..L out-of-focus layers (``blind`` mode).
    layer_radii : list of float
        Representative radius of each layer (NaN: no pixels).
    merged_layers : dict
        ``blind``: out-of-focus layers smaller than their PSF's support,
        joined to another layer (:func:`merge_small_layers`; index → index).
    kernels : list of ndarray
        Kernel per out-of-focus layer (``blind`` mode).
    layers : list of ndarray
        Deblurred image of each layer before composition (``blind``).
    timings : dict
        Seconds per stage (device-synchronized).
    map_uncertainty : (float, float) or None
        ``(radius_sigma, spatial_sigma)`` the deblurring used (``sv-admm``/``fast``).
    keep_in_focus : (float, float) or None
        The radius range over which the input was faded in (estimated map,
        ``sv-admm``/``fast``; see :data:`KEEP_IN_FOCUS`); None: not applied.
    map_noise : float or None
        Noise variance the blur-map estimator used (None for a given map).
    compression_noise : float or None
        ``AllInFocus(compression_noise=...)`` when the blur-map estimate used
        it (a measured noise; not with a given ``noise`` or map).
    radius_scale : (M, N) ndarray (NumPy, float32) or None
        Factor :func:`radius_check` applied to the map's radii before the
        deconvolution (estimated map, ``sv-admm``/``fast``); None: not applied.
    edge_capped : float or None
        Fraction of the pixels whose radius :func:`edge_cap` lowered; None:
        not applied.
    deblur_map : (M, N) ndarray (NumPy, float32) or None
        The radii ``sv-admm``/``fast`` deconvolved with (``radius_map``
        after the edge cap and the radius check).
    saturated : float or None
        Fraction of the pixel values (pixels × channels) ``sv-admm`` fitted
        one-sided as clipped (:func:`saturation_mask`); None: not applied.
    map_scale : int or None
        Scale the map was estimated at (``AllInFocus(map_scale=)``; the one
        chosen for ``'auto'``); None: the map was given.
    in_focus_radius : float or None
        ``blind``: the radius below which pixels formed the in-focus layer
        (the default grows with ``map_scale``: :func:`scaled_in_focus_radius`).
    spread_selected : float or None
        ``sv-admm`` with ``spread_select``: mean weight of the narrow-spread
        solve in the blend (:func:`spread_choice`); None: not applied.
    spread_select : dict or None
        Its settings as applied: the two solves' ``radius_sigma`` and
        iterations, and the margin; None: not applied.
    noise_sigma : float or None
        Noise σ̂ of the input (:func:`gpudeblur.estimate_noise`, at least
        :data:`NOISE_SIGMA_FLOOR`) the edge cap, the radius check and the
        default weight used (``sv-admm``/``fast``); None: not measured.
    lam : float or None
        The deblurring's weight: ``sv-admm``'s TV weight or ``fast``'s
        gradient prior (``AllInFocus(lam=)`` or its default); None: ``blind``.
    uninformed_shrunk : float or None
        ``fast`` with ``shrink_uninformed``: the mean of
        :func:`uninformed_weight` (the share of the way from the map's
        radius to the quietest one); None: not applied.
    tv_channels : str or None
        ``sv-admm``'s TV of the channels (``'separate'`` or ``'joint'``);
        None: another mode ran.
    """

    radius_map: np.ndarray
    mode: str
    layer_labels: np.ndarray | None = None
    layer_radii: list = field(default_factory=list)
    kernels: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    map_uncertainty: tuple | None = None
    keep_in_focus: tuple | None = None
    map_noise: float | None = None
    compression_noise: float | None = None
    psf_family: str = "disc"
    radius_scale: np.ndarray | None = None
    edge_capped: float | None = None
    deblur_map: np.ndarray | None = None
    saturated: float | None = None
    map_scale: int | None = None
    in_focus_radius: float | None = None
    merged_layers: dict = field(default_factory=dict)
    spread_selected: float | None = None
    spread_select: dict | None = None
    noise_sigma: float | None = None
    lam: float | None = None
    uninformed_shrunk: float | None = None
    tv_channels: str | None = None

    def report(self) -> dict:
        """JSON-serializable summary."""
        r = self.radius_map
        sc = self.radius_scale
        return {
            "mode": self.mode,
            "radius_map": {"min": float(r.min()), "max": float(r.max()), "mean": float(r.mean())},
            "layers": len(self.layer_radii),
            "layer_radii": [None if not np.isfinite(x) else float(x) for x in self.layer_radii],  # None: empty layer
            "merged_layers": {str(k): v for k, v in self.merged_layers.items()},
            "kernel_sizes": [list(k.shape) for k in self.kernels],
            "map_uncertainty": None if self.map_uncertainty is None else [float(v) for v in self.map_uncertainty],
            "keep_in_focus": None if self.keep_in_focus is None else [float(v) for v in self.keep_in_focus],
            "map_noise": self.map_noise,
            "compression_noise": self.compression_noise,
            "map_scale": self.map_scale,
            "in_focus_radius": self.in_focus_radius,
            "psf_family": self.psf_family,
            "radius_check": None if sc is None else {"scaled_fraction": float(np.mean(sc < 0.99)),
                                                     "min_scale": float(sc.min()), "mean_scale": float(sc.mean())},
            "edge_capped_fraction": self.edge_capped,
            "saturated_fraction": self.saturated,
            "spread_selected_fraction": self.spread_selected,
            "spread_select": self.spread_select,
            "noise_sigma": self.noise_sigma,
            "lam": self.lam,
            "uninformed_shrunk": self.uninformed_shrunk,
            "tv_channels": self.tv_channels,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


#: Side of the blind mode's kernels (the paper's 31 × 31), grown for wider layers (:func:`blind_kernel_size`).
BLIND_KERNEL_SIZE = 31


def blind_kernel_size(init_kernel, image_shape=None) -> int:
    """Kernel side for a blind layer whose initial PSF is ``init_kernel``.

    The paper's 31 when the PSF leaves the estimate room to grow (at least
    4 px, or an eighth of its side, on each side: discs up to 11 px);
    otherwise the PSF's side plus that margin, so a layer blurred by more
    than the paper's images (a 21 px disc is 43 px wide) is estimated
    instead of refused. With ``image_shape`` the margin shrinks to fit the
    image (never below the PSF's side). Always odd.
    """
    side = int(max(np.shape(init_kernel)))
    side += 1 - side % 2  # odd
    ks = max(BLIND_KERNEL_SIZE, side + 2 * max(4, side // 8))
    if image_shape is not None:
        fit = int(min(image_shape)) - 1 + int(min(image_shape)) % 2  # largest odd side within the image
        ks = max(min(ks, fit), side)  # side <= ks
    return ks


def _scale_widening(scale: int) -> float:
    """``max(1, scale²/4)``: how much a map read at ``scale`` widens its per-scale settings."""
    return max(1.0, scale * scale / 4.0)


#: ``blind``'s default in-focus radius (disc px; the paper's in-focus
#: threshold τ = 2, the middle of the other modes' keep-in-focus fade
#: :data:`KEEP_IN_FOCUS`): pixels whose map reads below it form the in-focus
#: layer, returned as they are. The estimator reads in-focus content at
#: 0.5–1.5 px, so at the old 1 px most of a sharp photo went into an
#: out-of-focus layer and was deblurred blind. Measured (session 38; the
#: pipeline's estimated maps, ``blind`` at its defaults; 1 → 2 px): the five
#: sharp 256² photos of the quality bench's "No blur" rows (input 60 dB)
#: 32.21 → **43.55 dB** mean (astronaut 26.39 → 37.41, coffee 35.67 →
#: 54.77; ``bench/results/allinfocus-vm-20261206-s38-blind-{before,after}.md``);
#: the bench's six scenes 25.89 → 26.16 dB with the estimated map,
#: 26.58 → 26.64 with the true map; eight held-out scenes (camera, grass,
#: gravel, rocket × layered / ramp) 24.50 → 24.79, none lower. 1.5 px: 33.84
#: / 26.10; 2.5 px: 43.44 / 25.98.
BLIND_IN_FOCUS = 2.0


def scaled_in_focus_radius(scale: int, radius: float = BLIND_IN_FOCUS) -> float:
    """Blind mode's in-focus radius for a map estimated at ``scale``: ``radius``
    up to scale 2, from scale 4 on ``radius · 0.75 · scale²/4`` (6 px at 4 for
    the default 2 px), what :func:`scaled_keep_in_focus` keeps whole in the
    other modes (its range's low end, 1.5 px · scale²/4).

    A map read at scale 4 reads in-focus content at ~5 px. Measured on a
    256×512 photo, left half sharp (60 dB), right half a 20 px disc (18.1
    dB), map read at 4, ``blind`` (docs/STATUS.md, session 17): in-focus
    radius 1 or 4 px keeps 0 % of the sharp half in focus (it comes out at
    13.2 dB), 6 px keeps 92 % (33.0 dB), the blurred half 21.7 dB either
    way (the map read at scale 1: 30.0 / 18.2 dB).
    """
    return float(radius) * (1.0 if scale <= 2 else KEEP_IN_FOCUS[0] / BLIND_IN_FOCUS * _scale_widening(scale))


def scaled_map_uncertainty(scale: int) -> tuple:
    """``(radius_sigma, spatial_sigma)`` the pipeline gives a map estimated at
    ``scale``: :data:`MAP_UNCERTAINTY` times ``max(1, scale²/4)`` (radius σ
    capped at :data:`~gpudeblur.spatially_varying.MAX_RADIUS_SIGMA`).

    Fitted to two measurements (docs/STATUS.md, session 13), not derived:
    at scale 2 (512² scenes, radii to 8-12 px) the unwidened spread beat
    twice it by 0.6 dB; at scale 4 (4 MP, radii to 24 px) ``fast`` gave
    22.7 / 25.1 / 28.5 dB with the spread times 1 / 2 / 4 (input 25.6).
    The errors grow with the radii read, which grow with the scale.
    """
    f = _scale_widening(scale)
    return (min(MAP_UNCERTAINTY[0] * f, MAX_RADIUS_SIGMA), MAP_UNCERTAINTY[1] * f)


def scaled_keep_in_focus(scale: int, keep=KEEP_IN_FOCUS) -> tuple:
    """The keep-in-focus range ``(lo, hi)`` the pipeline gives a map estimated at
    ``scale``: ``keep`` (:data:`KEEP_IN_FOCUS`, disc radii) times ``max(1,
    scale²/4)``, the factor of :func:`scaled_map_uncertainty`; unchanged up
    to scale 2, (6, 10) px at scale 4.

    A map read at scale ``s`` does not resolve radii below about ``1.5·s``
    px: at scale 4 in-focus content reads 2.4–5.2 px (median over the r = 0
    regions of ``bench/bench_large.py``'s scenes), which the full-resolution
    range (1.5, 2.5) then deconvolves as blur. Measured on the five
    scale-4 scenes of that bench (`fast`, the pipeline's own maps; mean
    PSNR, docs/STATUS.md session 15): (1.5, 2.5) 32.42 dB, (3, 5) 32.49,
    (4.5, 7.5) 32.80, (6, 10) **32.85**.
    """
    f = _scale_widening(scale)
    return (float(keep[0]) * f, float(keep[1]) * f)


def _check_uncertainty(value):
    """``map_uncertainty`` as a validated pair (:func:`~gpudeblur.spatially_varying.check_uncertainty`)."""
    try:
        rs, ss = value
    except (TypeError, ValueError):
        raise ValueError(f"map_uncertainty must be a pair (radius_sigma, spatial_sigma), got {value!r}") from None
    try:
        return check_uncertainty(rs, ss)
    except ValueError as exc:
        raise ValueError(f"map_uncertainty: {exc}") from None


#: Bin width (px) of the radius histogram that :func:`split_layers` clusters.
LAYER_BIN = 0.05


def split_layers(radius_map, n_layers=None, in_focus_radius=1.0, xp=None):
    """Cut a blur map into an in-focus layer and ``L`` out-of-focus layers.

    Pixels with ``r < in_focus_radius`` form layer 0. The rest is split by
    cuts in its radius histogram (bins of :data:`LAYER_BIN` px from the
    smallest radius): the ``L`` contiguous radius ranges with the least
    within-layer squared deviation (optimal 1-D k-means, by dynamic
    programming over the bins), so a map with a few distinct blur levels is
    cut between them whatever their pixel counts. ``L`` defaults to
    ``clip(round((r_99 − in_focus_radius)/2), 1, 4)`` (one layer per ~2 px of
    radius spread, which keeps each layer's radius range within the
    tolerance a single disc kernel absorbs), and no more than the map has
    distinct out-of-focus radii (histogram bins): a uniform map is one layer.
    A given ``n_layers`` above that leaves the surplus layers empty.

    Returns ``(labels (M, N) int32, radii list)`` with each layer's median
    radius; ``labels`` is an array of ``xp`` (default: the map's own module).
    """
    if xp is None:
        xp = array_module(radius_map)
    elif is_cupy_array(radius_map) and xp is np:
        radius_map = radius_map.get()
    r = xp.asarray(radius_map)
    out = r >= in_focus_radius
    labels = xp.zeros(r.shape, dtype=xp.int32)
    if not bool(out.any()):
        return labels, [0.0]
    vals = r[out]
    if n_layers is not None:
        n_layers = check_positive_int(n_layers, "layers")
    lo, hi = float(vals.min()), float(vals.max())
    # bin index per pixel (+1e-6: radii on multiples of the bin, e.g. 2.0 and 2.05,
    # land in their own bins despite rounding); the cuts are bin indices, so a
    # pixel and its bin always agree
    nb = max(1, int(np.floor((hi - lo) / LAYER_BIN + 1e-6)) + 1)
    b = xp.clip(xp.floor((vals - lo) / LAYER_BIN + 1e-6).astype(xp.int64), 0, nb - 1)
    counts = xp.bincount(b, minlength=nb)
    counts = np.asarray(counts.get() if hasattr(counts, "get") else counts, dtype=np.float64)
    if n_layers is None:
        spread = float(xp.percentile(vals, 99)) - in_focus_radius
        # no more layers than distinct radius levels (a uniform 8 px map is one layer, not 4)
        n_layers = int(min(np.clip(round(spread / 2.0), 1, 4), np.count_nonzero(counts)))
    centers = lo + (np.arange(nb) + 0.5) * LAYER_BIN
    lab = xp.ones(vals.shape, dtype=xp.int32)
    for c in _histogram_breaks(counts, centers, n_layers):
        lab += (b >= c).astype(xp.int32)
    labels[out] = lab
    radii = [float(xp.median(r[labels == 0])) if bool((labels == 0).any()) else 0.0]
    for i in range(1, n_layers + 1):
        sel = labels == i
        radii.append(float(xp.median(r[sel])) if bool(sel.any()) else float("nan"))
    return labels, radii


def merge_small_layers(labels, radii, psf_family=None):
    """Join each out-of-focus layer that has fewer pixels than its own PSF's
    support (``psf_family(radius)``'s area; default the disc) to the
    out-of-focus layer, not itself small, whose radius is nearest (``blind``
    mode).

    A blind kernel cannot be estimated from fewer pixels than it covers:
    with the layer's own ``c`` term and kernel such a layer came out worse
    than its input. Measured (a 128² photo, half at 3 px, a square patch at
    6 px with its own layer, RMSE over the patch and 4 px around it, input
    / own layer / joined to the 3 px layer): 8² 0.046 / 0.050 / 0.039, 11²
    0.064 / 0.055 / 0.049, 13² (= the 6 px disc's support) 0.082 / 0.060 /
    0.068, 16² 0.099 / 0.067 / 0.085. A small layer stays when no other
    out-of-focus layer is large enough.

    Returns ``(labels, radii, merged)``: the joined layers keep their index
    with no pixels (radius NaN, as an empty layer); ``merged`` maps each
    joined layer to the layer that took its pixels.
    """
    if psf_family is None:
        from .psf import disc as psf_family
    n = len(radii)
    counts = [int((labels == i).sum()) for i in range(n)]
    small = [i for i in range(1, n) if 0 < counts[i] < _psf_area(psf_family, radii[i])]
    keep = [i for i in range(1, n) if counts[i] > 0 and i not in small]
    merged = {}
    if not small or not keep:
        return labels, radii, merged
    labels = labels.copy()
    radii = list(radii)
    for i in small:
        j = min(keep, key=lambda k: (abs(radii[k] - radii[i]), k))
        labels[labels == i] = j
        merged[i] = j
        radii[i] = float("nan")
    return labels, radii, merged


def _psf_area(psf_family, radius) -> int:
    h, w = np.shape(psf_family(float(radius)))
    return int(h * w)


def _histogram_breaks(counts, centers, n_layers):
    """Cuts between ``n_layers`` contiguous groups of histogram bins that
    minimize the total within-group weighted squared deviation (exact DP).

    Returns the bin index that starts each group after the first (a bin
    ``j`` belongs to group ``1 + #{cuts ≤ j}``). Empty bins are skipped; with
    fewer occupied bins than layers every occupied bin is a group (the
    surplus layers stay empty).
    """
    occ = np.flatnonzero(counts > 0)
    w, x = counts[occ], centers[occ]
    n = len(occ)
    L = min(n_layers, n)
    if L <= 1:
        return []
    # prefix sums for the SSE of any run of bins [i, j)
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cx = np.concatenate([[0.0], np.cumsum(w * x)])
    cxx = np.concatenate([[0.0], np.cumsum(w * x * x)])

    def sse(i, j):  # vectorized over i (array), j scalar
        sw = cw[j] - cw[i]
        sx = cx[j] - cx[i]
        return (cxx[j] - cxx[i]) - sx * sx / np.maximum(sw, 1e-300)

    cost = np.full((L + 1, n + 1), np.inf)
    arg = np.zeros((L + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for g in range(1, L + 1):
        for j in range(g, n + 1):
            i = np.arange(g - 1, j)
            c = cost[g - 1, i] + sse(i, j)
            k = int(np.argmin(c))
            cost[g, j], arg[g, j] = c[k], i[k]
    cuts, j = [], n
    for g in range(L, 0, -1):
        i = int(arg[g, j])
        cuts.append(i)
        j = i
    cuts = sorted(cuts)[1:]  # start (among occupied bins) of groups 2..L
    return [int(occ[c]) for c in cuts]


def in_focus_weight(radius_map, lo, hi, feather=KEEP_FEATHER, backend=None):
    """Weight of the input in the result: 1 where ``r ≤ lo``, 0 where ``r ≥ hi``, linear between.

    Smoothed by a Gaussian of ``feather`` px (0: none) so a jump in the map
    does not leave a seam. ``lo < hi``, both ≥ 0.
    """
    lo, hi = _check_keep((lo, hi))
    feather = check_positive(feather, "feather", allow_zero=True)
    be = get_backend(backend, like=radius_map)
    r, kind = as_backend_array(radius_map, be, name="radius map")
    t = r.dtype.type
    a = _feathered(be.xp.clip((t(hi) - r) / t(hi - lo), t(0), t(1)), feather, be)
    return to_output(be.xp.clip(a, t(0), t(1)), kind)


def uninformed_weight(confidence, lo=UNINFORMED_CONFIDENCE[0], hi=UNINFORMED_CONFIDENCE[1], backend=None):
    """How uninformed the blur map is: 1 where its ``confidence`` is ``≤ lo``, 0 where it is ``≥ hi``,
    linear between (:data:`UNINFORMED_CONFIDENCE`; ``0 ≤ lo < hi ≤ 1``); ``fast`` moves the radius
    that far towards :func:`quietest_radii`'s (``AllInFocus(shrink_uninformed=True)``).

    ``confidence`` is the estimator's (``BlurMapEstimator.estimate(return_confidence=True)``): the
    signal fraction of each pixel's response power, windowed by the analysis window, so the weight
    needs no smoothing of its own. NaN confidence counts as uninformed.
    """
    lo, hi = (check_positive(v, n, allow_zero=True) for v, n in ((lo, "lo"), (hi, "hi")))
    if not lo < hi <= 1:
        raise ValueError(f"uninformed_weight needs 0 <= lo < hi <= 1, got lo={lo!r}, hi={hi!r}")
    be = get_backend(backend, like=confidence)
    c, kind = as_backend_array(confidence, be, name="confidence")
    t = c.dtype.type
    w = be.xp.clip((t(hi) - c) / t(hi - lo), t(0), t(1))
    return to_output(be.xp.where(be.xp.isnan(c), t(1), w), kind)


def quietest_radii(lam, family="disc", max_radius=8.0, step=0.25, size=None):
    """For radii ``0, step, …`` up to ``max_radius``: the radius up to each whose ``fast`` filter
    passes the least white noise.

    ``fast`` deconvolves radius ``r`` by ``conj(H_r) / (|H_r|² + λ|D|²)`` (``D`` the gradient), so
    white noise leaves it with ``mean_ω |H_r|² / (|H_r|² + λ|D|²)²`` times its variance. Returns
    ``(grid, quietest)``: ``quietest[i]`` is the ``r ≤ grid[i]`` (on the grid) with the least such
    gain (:data:`UNINFORMED_CONFIDENCE`'s rule; the first of equal gains). Computed on the host on
    a ``size``² grid (default: at least 128 and 4× the largest PSF's side; 0.01 s up to 8 px, 0.2 s
    up to 32 px, ~1 s up to 64 px on one core); ``family`` as ``AllInFocus``'s (for a calibrated
    family the quietest radius need not be 0 at any weight). ``lam > 0``.
    """
    from .convolution import psf2otf  # noqa: PLC0415
    from .operators import laplacian_otf_abs2, rfft_column_weights  # noqa: PLC0415

    lam = check_positive(lam, "lam")
    step = check_positive(step, "step")
    max_radius = check_positive(max_radius, "max_radius", allow_zero=True)
    fam = family_function(family)
    grid = np.arange(0.0, float(max_radius) + step / 2, step)
    psfs = [np.asarray(fam(float(r)), np.float64) for r in grid]
    side = max(max(k.shape) for k in psfs)
    n = check_positive_int(size, "size") if size is not None else max(128, 4 * side)
    if n < side:
        raise ValueError(f"size {n} is smaller than the largest PSF ({side} px)")
    d2 = laplacian_otf_abs2((n, n), np, np.float64)
    wt = rfft_column_weights(n, np, np.float64)
    cpu = get_backend("cpu")
    gains = []
    for k in psfs:
        h2 = np.abs(psf2otf(k, (n, n), cpu, np.float64)) ** 2
        gains.append(float((h2 / (h2 + lam * d2) ** 2 * wt).sum() / (n * n)))
    gains = np.nan_to_num(np.asarray(gains), nan=np.inf)  # (a family's PSF of zero sum)
    best = [int(np.argmin(gains[: i + 1])) for i in range(len(grid))]
    return grid, grid[best]


def _quietest(r, lam, family, be, step=0.25):
    """Per pixel of the radius map ``r`` (on ``be``): :func:`quietest_radii`'s radius for the grid
    radius at or below it."""
    xp = be.xp
    grid, q = quietest_radii(lam, family, max(float(xp.max(r)), 0.0), step)
    idx = xp.clip(xp.floor(r / r.dtype.type(step)).astype(xp.int64), 0, len(grid) - 1)
    return xp.asarray(q.astype(r.dtype))[idx]


def _feathered(a, feather, be):
    """``a`` smoothed by a Gaussian of ``feather`` px (unchanged when 0 or when
    the image is smaller than the Gaussian's support)."""
    from .convolution import fftconvolve
    from .psf import gaussian

    if feather > 0 and min(a.shape) > 2 * int(np.ceil(3.5 * feather)) + 1:
        return fftconvolve(a, gaussian(feather), backend=be, dtype=a.dtype)
    return a


def edge_cap(image, radius_map, *, psf_family="disc", slack=EDGE_CAP_SLACK, noise_sigma=None,
             window=EDGE_CAP_WINDOW, noise_factor=EDGE_CAP_NOISE_FACTOR, step=0.5, saturated=None, backend=None):
    """Cap an estimated map's radii where an edge is sharper than that blur allows.

    A PSF of scale ``r`` blurs a step of contrast ``C`` to a largest slope
    of ``C · L(r)``, with ``L(r)`` the peak of its line-spread function
    (``2/(πr)`` for a disc of radius ``r``). So an edge of slope ``G`` and
    local contrast ``C`` (max − min of the luminance over ``window`` px)
    cannot lie in a region blurred by more than the largest ``r`` with
    ``G ≤ slack · C · L(r)``; deconvolving with more rings around it. For
    each grid radius ``ρ = step, 2·step, …``, a pixel keeps ``ρ`` only if
    no edge within ``ceil(ρ)`` px (a disc) forbids it, and its cap is the
    last grid radius it kept (so capped radii land on the grid; uncapped
    ones are returned as they were). Edges are pixels with
    ``G > noise_factor · σ̂``, ``σ̂`` = ``noise_sigma`` or the image's
    :func:`gpudeblur.estimate_noise` (per-channel, so conservative for the
    luminance's ``G``) but at least :data:`NOISE_SIGMA_FLOOR`: a mostly
    flat 8-bit image measures σ̂ = 0 and its one-level banding would
    otherwise count as edges. The contrast window grows to the largest
    PSF's side when that is wider (a blurred step must fit in it; with 17
    px, true 12–16 px discs were capped). For another family ``ρ`` is in
    its own units (σ for the Gaussian), the reach ``ceil(ρ)`` in pixels.

    This is what catches a *sharp* photo read as blurred, a smooth iris or
    sky at 4–6 px bounded by crisp edges, which :func:`radius_check`
    cannot see (few gradients inside). The bound is too tight inside
    blurred texture: the disc's line-spread function is steep at its rim,
    so thin features blurred by a disc keep steep flanks (``slack`` 1 caps
    10–58 % of the pixels of the bench's *true* maps). Measured with the
    pipeline's defaults otherwise (radius check, TV 3e-4; 14 synthetic
    192² scenes, mean gain over the input on bench 6 / 8 more; sharp 256²
    photos astronaut / coffee / chelsea / camera / rocket with σ_n = 1e-3):

    ============  ==================  ======================================
    slack         blurred scenes      sharp photos (dB; input 60)
    ============  ==================  ======================================
    none          +3.034 / +1.721     41.89 / 57.12 / 27.80 / 50.69 / 36.50
    1.0           +1.991 / +0.987     45.88 / 57.58 / 40.87 / 56.06 / 48.73
    1.5           +3.022 / +1.514     42.65 / 57.07 / 35.32 / 53.54 / 44.44
    1.75          +3.044 / +1.619     42.66 / 57.12 / 33.47 / 50.74 / 41.23
    2.0           +3.042 / +1.680     42.59 / 57.12 / 32.22 / 50.69 / 39.04
    ============  ==================  ======================================

    1.5 (the default) leaves every sharp photo above what it was before
    the low TV weight (40.22 / 54.94 / 31.29 / 51.55 / 39.79 dB at 3e-3
    without the cap) at a cost of 0.01 / 0.21 dB on the blurred scenes
    (the textured grass and gravel ones).

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
    radius_map : (M, N) array
    psf_family : as in :class:`AllInFocus`
    slack : float
        ≥ 1 loosens the bound.
    noise_sigma : float, optional
    window : int
        Odd side (≥ 3) of the contrast window (at least the largest PSF's side).
    noise_factor : float
    step : float
        Radius grid of the cap.
    saturated : bool array, (M, N) or like ``image``, optional
        Clipped values (:func:`saturation_mask`): edges within
        :data:`EDGE_CAP_CLIP_REACH` px of one do not count (a clipped
        plateau under-reads the contrast at its rim, so the true slope there
        would look too steep for the blur).

    Returns
    -------
    capped : (M, N) array, float32 (the map's kind): ``min(radius_map, cap)``.
    """
    t32 = np.float32
    slack = check_positive(slack, "slack")
    window = check_positive_int(window, "window")
    if window % 2 == 0 or window < 3:
        raise ValueError(f"window must be odd and at least 3, got {window}")
    noise_factor = check_positive(noise_factor, "noise_factor", allow_zero=True)
    step = check_positive(step, "step")
    be = get_backend(backend, like=radius_map)
    xp = be.xp
    x, _ = as_backend_array(image, be)
    check_image(x, xp)
    r, kind = as_backend_array(radius_map, be, name="radius map")
    check_radius_map(r, x.shape[:2], xp)
    r = r.astype(np.float32, copy=False)
    n = int(np.ceil(float(r.max()) / step))
    if n == 0:
        return to_output(r, kind)
    if noise_sigma is None:
        noise_sigma = max(_noise_sigma(x, be), NOISE_SIGMA_FLOOR)
    noise_sigma = check_positive(noise_sigma, "noise_sigma", allow_zero=True)
    family = family_function(psf_family)
    radii = step * np.arange(1, n + 1)
    psfs = [np.asarray(family(float(rho))) for rho in radii]
    lsf = np.array([_lsf_peak(k) for k in psfs])
    window = max(window, max(max(k.shape) for k in psfs) // 2 * 2 + 1)
    lum = _luminance(x.astype(np.float32, copy=False), xp)
    gy, gx = xp.gradient(lum)
    grad = xp.sqrt(gx * gx + gy * gy)
    contrast = _box_extreme(lum, window, xp, maximum=True) - _box_extreme(lum, window, xp, maximum=False)
    lsf = np.minimum.accumulate(lsf)  # a wider PSF never allows a steeper edge
    # largest allowed radius per edge pixel: count of grid radii whose L(r) still reaches G / (slack C)
    q = grad / xp.maximum(t32(slack) * contrast, t32(1e-12))
    # L is non-increasing in r, so the radii with L(r) >= q are the first `count` of the grid
    count = n - xp.searchsorted(xp.asarray(lsf[::-1].copy()), q, side="left")
    bound = t32(step) * count.astype(np.float32)
    edge = grad > t32(noise_factor * noise_sigma)
    clipped = _clipped_2d(saturated, x, be)
    if clipped is not None:  # a clipped plateau under-reads the contrast of the edges at its rim
        edge &= _box_extreme(clipped, 2 * EDGE_CAP_CLIP_REACH + 1, xp, maximum=True) == 0
    bound = xp.where(edge, bound, t32(np.inf))
    reaches = np.ceil(radii - 1e-9).astype(int)  # two grid radii share each integer reach
    return to_output(_capped_in_tiles(bound, r, radii, reaches, EDGE_CAP_TILE.get(be.name), xp,
                                      _disc_strip_bytes(be)), kind)


def _capped_in_tiles(bound, r, radii, reaches, tile, xp, strip_bytes=None):
    """``min(r, cap)`` with :func:`_edge_cap_of`'s cap of the whole ``bound`` array, on
    ``tile × tile`` tiles (None: the whole array is one).

    A tile needs only the grid radii its own largest ``r`` needs (a radius is lowered
    only by a failure at a grid radius below it plus one step), and no work at all
    when no bound within their reach is low enough to forbid any of them. In each row
    of tiles, a tile that needs work joins the run of such tiles on its left (the run
    then takes the larger of their radii: more radii than a value needs do not change
    its ``min(r, cap)``) where :func:`_disc_pass_cost` says that costs less than apart
    and the run's running minima stay within ``strip_bytes`` (one strip of the disc
    pass; default :data:`DISC_MIN_STRIP_BYTES`); each run's discs read ``bound``
    around it. Where the runs would cost more than the whole array in one pass (many
    small runs: a narrow image), the whole array is one run. Every choice gives the
    same bits."""
    t32 = np.float32
    step = float(radii[0])
    M, N = r.shape
    tile = tile or max(M, N)
    budget = DISC_MIN_STRIP_BYTES if strip_bytes is None else strip_bytes
    runs = []  # (rows, first column, last column, grid radii) of each run of tiles that need work
    for i0 in range(0, M, tile):
        rows = slice(i0, min(M, i0 + tile))
        h = rows.stop - i0
        row_runs = []
        for j0 in range(0, N, tile):
            cols = slice(j0, min(N, j0 + tile))
            nt = int(np.ceil(float(r[rows, cols].max()) / step))
            if nt == 0:
                continue
            k = int(reaches[nt - 1])
            near = bound[max(0, i0 - k):min(M, rows.stop + k), max(0, j0 - k):min(N, cols.stop + k)]
            if float(near.min()) >= t32(radii[nt - 1] - 1e-6):  # no edge in reach forbids any of them
                continue
            if row_runs and row_runs[-1][1] == j0:  # join the run on its left if that costs less than apart
                c0, n_run = row_runs[-1][0], max(row_runs[-1][2], nt)
                k_run, k_m = int(reaches[row_runs[-1][2] - 1]), int(reaches[n_run - 1])
                joined = _disc_pass_cost(k_m, h, cols.stop - c0)
                apart = _disc_pass_cost(k_run, h, j0 - c0) + _disc_pass_cost(k, h, cols.stop - j0)
                if joined <= apart and _strip_bytes(k_m, h, cols.stop - c0, bound.itemsize) <= budget:
                    row_runs[-1][1:] = [cols.stop, n_run]
                    continue
            row_runs.append([j0, cols.stop, nt])
        runs += [(rows, c0, c1, nt) for c0, c1, nt in row_runs]
    out = r.copy()
    if not runs:
        return out
    # the whole array in one pass where that costs less: where the runs are many and small (a narrow
    # image: one tile per row of tiles). Its strips' values cost 1.5x a run's (larger than the caches;
    # measured 1.1-1.5x on 12-24 MP maps with nothing to skip)
    n, K = len(radii), int(reaches[-1])
    height = min(M, _strip_height(K, N, bound.itemsize, budget))  # _disc_minima's strips
    if -(-M // height) * _disc_pass_cost(K, height, 1.5 * N) <= sum(
            _disc_pass_cost(int(reaches[nt - 1]), rows.stop - rows.start, c1 - c0) for rows, c0, c1, nt in runs):
        runs = [(slice(0, M), 0, N, n)]
    for rows, c0, c1, nt in runs:
        cols = slice(c0, c1)
        xp.minimum(r[rows, cols], _edge_cap_of(bound, radii[:nt], reaches[:nt], xp, rows, cols, budget),
                   out=out[rows, cols])
    return out


#: Fixed cost of one array operation of the disc pass, in values it could have
#: processed instead (NumPy's per-call cost of ~4 µs at ~0.05 ns per value on
#: this project's 2-core VM; it decides whether tiles join a run).
DISC_PASS_CALL_COST = 65536


def _disc_pass_cost(k: int, h: int, w: float) -> float:
    """Rough cost of the disc pass of reach ``k`` over ``h × w`` values (in values): its
    ``k² + 2k`` band minima and ``2k`` chord steps, and twice the grid radii's tests."""
    return (k * k + 8 * k) * (h * w + DISC_PASS_CALL_COST)


def _edge_cap_of(bound, radii, reaches, xp, rows=None, cols=None, strip_bytes=None):
    """The cap of :func:`edge_cap` from a 2-D ``bound`` array, for its part ``rows`` ×
    ``cols`` (default: all): per value, the last of the grid ``radii`` (increasing; disc
    reaches ``reaches``) kept before the first that a bound within its reach forbids
    (0 if the first is; inf if none is), the array's edge values repeated outside it;
    the disc pass in strips of ``strip_bytes`` (:func:`_disc_minima`)."""
    t32 = np.float32
    rows = slice(0, bound.shape[0]) if rows is None else rows
    cols = slice(0, bound.shape[1]) if cols is None else cols
    cap = xp.empty((rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
    for strip, minima in _disc_minima(bound, int(reaches[-1]), xp, strip_bytes, rows, cols):
        c = xp.full((strip.stop - strip.start, cap.shape[1]), t32(np.inf))
        ok = xp.ones(c.shape, dtype=bool)
        prev = 0.0
        for k, low in minima:
            for rho in radii[reaches == k]:
                fails = ok & (low < t32(rho - 1e-6))
                c = xp.where(fails, t32(prev), c)
                ok &= ~fails
                prev = float(rho)
        cap[strip.start - rows.start:strip.stop - rows.start] = c
    return cap


def _box_extreme(a, size: int, xp, maximum: bool):
    """Maximum (or minimum) of a 2-D array over ``size × size`` squares
    centred on each value (``size`` odd), edge values repeated outside:
    for NaN-free input, bit-identical to ``scipy.ndimage.maximum_filter(a,
    size=size, mode='nearest')`` (``minimum_filter``).

    Array code (shifted ``maximum``/``minimum`` of slices, and one gather
    per axis for the edge), so on CuPy it compiles nothing per ``size``:
    ``cupyx.scipy.ndimage``'s min/max filters bake the window's length into
    each kernel's source (CuPy 14.2, ``_filters_core._generate_nd_kernel``),
    so every new window size compiles two kernels per axis on first use,
    and :func:`edge_cap`'s window follows the map's largest PSF. Per axis,
    windows of 1, 2, 4, … values are doubled up to the largest power of two
    ``k ≤ size``, and the two such windows at each end of the ``size``
    window cover it: ``⌊log2 size⌋ + 1`` passes over the array.
    """
    if size % 2 == 0 or size < 1:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    op = xp.maximum if maximum else xp.minimum
    r = size // 2
    out = a
    for axis in (0, 1):
        n = out.shape[axis]
        idx = xp.clip(xp.arange(-r, n + r), 0, n - 1)
        m = xp.take(out, idx, axis=axis)  # the edge values repeated r times at each end
        k = 1
        while 2 * k <= size:  # m[i]: the extreme over padded values i … i + 2k − 1
            m = op(_axis_slice(m, axis, 0, -k), _axis_slice(m, axis, k, None))
            k *= 2
        # the window of padded values i … i + size − 1 = the two windows of k at its ends
        out = op(_axis_slice(m, axis, 0, n), _axis_slice(m, axis, size - k, size - k + n))
    return out


def _axis_slice(a, axis, start, stop):
    sl = [slice(None)] * a.ndim
    sl[axis] = slice(start, stop)
    return a[tuple(sl)]


#: Working memory (bytes) of :func:`_disc_minima`'s chord minima per strip of rows
#: (the CPU's; on a GPU see :data:`DISC_MIN_STRIP_BYTES_GPU`).
DISC_MIN_STRIP_BYTES = 256 << 20
#: On a GPU the strips take up to this much, and at most a quarter of the memory
#: available (:meth:`~gpudeblur._backend.Backend.available_memory`), at least
#: :data:`DISC_MIN_STRIP_BYTES`. There each array operation is a kernel launch and a
#: strip costs ~5000 of them at reach 64, whatever its height, while each strip
#: re-reads ``2 · reach`` halo rows: at 45 MP (8192 px wide, reach 64) 256 MiB gives
#: the 16-row minimum, 342 strips and ~1.7 M launches; 4 GiB gives ~2000 rows, 3
#: strips. (Counted, not timed: no GPU has run it.) Any height gives the same bits.
DISC_MIN_STRIP_BYTES_GPU = 4 << 30


def _disc_strip_bytes(be) -> int:
    """The disc pass's strip budget on ``be`` (:data:`DISC_MIN_STRIP_BYTES`,
    :data:`DISC_MIN_STRIP_BYTES_GPU`)."""
    avail = be.available_memory()
    if avail is None:
        return DISC_MIN_STRIP_BYTES
    return max(DISC_MIN_STRIP_BYTES, min(DISC_MIN_STRIP_BYTES_GPU, avail // 4))


def _disc_minima(a, reach, xp, strip_bytes=None, rows=None, cols=None):
    """Minima of a 2-D array over the discs ``dy² + dx² ≤ k²``, k = 1 … ``reach``.

    Yields ``(rows, minima)`` per strip of rows (``rows`` a slice), where
    ``minima`` yields ``(k, low)`` for k = 1 … ``reach`` in order, ``low``
    the minimum over the disc of reach ``k`` for those rows, with the
    array's edge values repeated outside: for NaN-free input, bit-identical
    to ``scipy.ndimage.minimum_filter(a, footprint=disc, mode='nearest')``. A
    disc is the union of its horizontal chords ``|dx| ≤ isqrt(k² − dy²)``,
    so its minimum is the minimum of ``2k + 1`` row-shifted running minima
    of half-widths 0 … ``reach``, each built from the previous one in two
    passes. That is ``O(reach²)`` array passes for all the reaches, where a
    footprint filter per reach costs ``O(reach³)`` per pixel (the edge cap
    of a 4 MP photo with radii to 24 px took 175 s of a 271 s job). The
    running minima hold ``reach + 1`` copies of a strip, so strips are
    sized to ``strip_bytes`` (default :data:`DISC_MIN_STRIP_BYTES`).

    ``rows``, ``cols`` (slices with explicit bounds): only that part of the
    array's minima (its discs read the array around it), in strips of its rows.
    """
    m, n = a.shape
    rows = slice(0, m) if rows is None else rows
    cols = slice(0, n) if cols is None else cols
    height = _strip_height(reach, cols.stop - cols.start, a.itemsize, strip_bytes)
    for y0 in range(rows.start, rows.stop, height):
        y1 = min(rows.stop, y0 + height)
        yield slice(y0, y1), _strip_minima(a, y0, y1, cols.start, cols.stop, reach, xp)


def _strip_bytes(reach: int, rows: int, width: int, itemsize: int) -> int:
    """Working memory of a :func:`_disc_minima` strip of ``rows`` × ``width`` values: its
    ``reach + 1`` running minima, each with a halo of ``2 · reach`` rows."""
    return (reach + 1) * (rows + 2 * reach) * width * itemsize


def _strip_height(reach: int, width: int, itemsize: int, strip_bytes=None) -> int:
    """Rows per strip of :func:`_disc_minima` (at least 16): the most whose
    :func:`_strip_bytes` stay within ``strip_bytes`` (default :data:`DISC_MIN_STRIP_BYTES`)."""
    strip_bytes = DISC_MIN_STRIP_BYTES if strip_bytes is None else strip_bytes
    return max(16, strip_bytes // ((reach + 1) * width * itemsize) - 2 * reach)  # _strip_bytes solved for rows


def _strip_minima(a, y0, y1, x0, x1, reach, xp):
    m, n = a.shape
    # the block and its halo, edge rows and columns repeated outside the array
    padded = a[xp.clip(xp.arange(y0 - reach, y1 + reach), 0, m - 1)[:, None],
               xp.clip(xp.arange(x0 - reach, x1 + reach), 0, n - 1)[None, :]]
    w = x1 - x0
    chord = [padded[:, reach:reach + w]]  # chord[v]: the minimum over |dx| <= v
    for v in range(1, reach + 1):
        c = xp.minimum(chord[-1], padded[:, reach - v:reach - v + w])
        chord.append(xp.minimum(c, padded[:, reach + v:reach + v + w], out=c))
    del padded
    h = y1 - y0
    for k in range(1, reach + 1):
        low = None
        for dy in range(-k, k + 1):
            band = chord[math.isqrt(k * k - dy * dy)][reach + dy:reach + dy + h]
            low = band.copy() if low is None else xp.minimum(low, band, out=low)
        yield k, low


def _clipped_2d(saturated, x, be):
    """A clipped-value mask (``(M, N)`` or like the image) as an ``(M, N)`` uint8 array
    on ``be`` (1: any channel clipped), or None when there is none or nothing is clipped."""
    if saturated is None:
        return None
    s = check_saturated(saturated, x, be)
    if s.ndim == 3:
        s = s.any(axis=2)
    # uint8: a maximum over it is a logical or
    return s.astype(np.uint8) if bool(s.any()) else None


def _lsf_peak(psf) -> float:
    """Peak of a PSF's line-spread functions (both axes)."""
    k = np.asarray(psf, dtype=np.float64)
    k = k / k.sum()
    return float(max(k.sum(axis=0).max(), k.sum(axis=1).max()))


def _luminance(x, xp):
    """The luminance the blur-map estimator analyses (its own helper, imported lazily)."""
    from .blurmap.estimator import _luminance as lum  # noqa: PLC0415

    return lum(x, xp)


def radius_check(image, radius_map, *, psf_family="disc", keep_in_focus=KEEP_IN_FOCUS,
                 map_uncertainty=MAP_UNCERTAINTY, scales=RADIUS_CHECK_SCALES, margin=RADIUS_CHECK_MARGIN,
                 window=RADIUS_CHECK_WINDOW, smooth=RADIUS_CHECK_SMOOTH, lam=None, noise_sigma=None, saturated=None,
                 analysis_scale=1, backend=None):
    """Per-pixel factor (≤ 1) for the radii of an estimated blur map, from the ringing it causes.

    Deconvolving with radii that are too large rings: oscillations parallel
    to edges, which add many mid-size gradients. Too small radii leave the
    image soft, which also spreads its gradients. Sharp images have sparse
    gradients, and the normalized sparsity ``ℓ1/ℓ2`` of the gradient
    magnitude (Krishnan, Tay & Fergus 2011) is lowest near the right scale.
    Here the luminance is deconvolved (``fast`` mode, cheap) with the map
    multiplied by each of ``scales`` (the trials share one FFT grid and
    each bank radius's filtering:
    :func:`~gpudeblur.spatially_varying.deconvolve_fast_scaled`); around
    each pixel the ratio
    ``Σ w|∇f| / sqrt(Σ w|∇f|² · Σ w)`` is taken over a Gaussian window of
    ``window`` px, with ``w`` the out-of-focus weight
    (``1 − in_focus_weight``; all pixels when ``keep_in_focus`` is False).
    Where the smallest ratio undercuts the unscaled map's by more than
    ``margin`` (relative), that scale is taken, elsewhere 1; the result is
    smoothed by a Gaussian of ``smooth`` px. With several windows
    (:data:`RADIUS_CHECK_WINDOW`: 40 and 20 px) each one's smoothed
    result is found so, and the smallest is returned: a large window
    misses a small region read as too blurred, a small one has nothing to
    judge by in a region the large one reaches across. A window is
    judged only if it holds out-of-focus pixels (windowed mean of ``w``
    above 1e-3) and the input has gradients there (windowed mean of ``w|∇g|²`` above
    ``(3σ̂)²``, ``σ̂`` the noise, at least 1e-3): a flat or noise-only
    region has nothing to judge by and keeps 1.

    The check only ever shrinks radii: on the natural synthetic scenes of
    the bench, whose maps are right on average, it leaves nearly all pixels
    at 1 (see :data:`RADIUS_CHECK_SCALES`), while a real photo whose blur
    is over-read (CUHK 0223) gets ~0.5 on the over-read regions. It can
    misfire where even the right radius rings in the ``fast`` trial: a
    cartoon of flat rectangles blurred by its true 4 px map had 20 % of
    its pixels shrunk (−0.7 dB against the true map, −0.13 dB against the
    unchecked pipeline). The ratio does not tell reliably when radii are
    too *small* (textured scenes keep lowering it as the scale grows), so
    scales above 1 are not tried.

    With ``analysis_scale = f > 1`` the check runs on the image's ``f × f``
    block means (:func:`~gpudeblur._resample.block_mean`, where a map read
    at scale ``f`` was estimated) with the radii, their spread, the
    keep-in-focus range, ``window`` and ``smooth`` divided by ``f`` (the
    same windows in full-size pixels), and its result is interpolated back
    (:func:`~gpudeblur._resample.upsample_linear`): ``f²`` times less work.
    The pipeline checks a map read at scale ``f`` this way. Measured on
    ``bench/bench_large.py``'s six 4 MP scenes (maps read at scale 4, one
    at 2; ``fast``; session 23): mean PSNR 32.76 → 32.75 dB (per scene
    −0.08 … +0.05), the check 5.4–13.7 → 0.6–2.7 s per scene; with the
    windows kept in coarse pixels instead 32.70 dB. On CUHK 0223 and 0284
    upscaled ×3 (read at 4) the same regions are shrunk (0223: 16.4 % of
    the pixels with the full-size check, 17.8 % at the map's scale; 0284's
    5 % of in-focus cloth, which the full-size check shrank, are left
    alone: the two outputs are 51.7 dB PSNR apart, nearly identical).

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
    radius_map : (M, N) array
        The estimated map (the family's units).
    psf_family, map_uncertainty
        As in :class:`AllInFocus` (the trial deconvolutions use them).
    keep_in_focus : (float, float), None or False
        Radius range of the out-of-focus weight (:func:`in_focus_weight`;
        None: :data:`KEEP_IN_FOCUS`; False: all pixels count).
    scales : sequence of float
        Increasing, in ``(0, 1]``, the last 1.
    margin : float
        In ``[0, 1)``.
    window : float or sequence of float
        Gaussian σ (px of ``image``) of the ratio's window, or of several (the smallest result wins).
    smooth : float
        Gaussian σ (px of ``image``) of the result's smoothing.
    lam : float, optional
        Gradient-prior weight of the trial ``fast`` deconvolutions (its default, 0.015).
    noise_sigma : float, optional
        Noise σ of the image checked (default: measured, at least
        :data:`NOISE_SIGMA_FLOOR`); with ``analysis_scale > 1`` that of the
        block means (measured there by default: averaging does not lower
        correlated noise by ``f``).
    saturated : bool array, (M, N) or like ``image``, optional
        Clipped values (:func:`saturation_mask`): pixels within twice the
        map's largest radius of one are left out of the ratios (every trial
        rings around a clipped highlight, whatever the scale). With
        ``analysis_scale > 1`` a block counts as clipped if any of its pixels is.
    analysis_scale : int
        Check on ``f × f`` block means (above); 1 (default): at full size.
        Needs the ``'disc'`` or ``'gaussian'`` family for ``f > 1``.

    Returns
    -------
    scale : (M, N) array, float32 (the map's kind)
    """
    scales = tuple(float(v) for v in scales)
    if (not scales or scales[-1] != 1.0 or any(not 0 < v <= 1 for v in scales)
            or any(a >= b for a, b in zip(scales, scales[1:]))):
        raise ValueError(f"scales must increase within (0, 1] and end with 1, got {scales!r}")
    margin = check_positive(margin, "margin", allow_zero=True)
    if margin >= 1:
        raise ValueError(f"margin must be in [0, 1), got {margin!r}")
    windows = _check_windows(window)
    smooth = check_positive(smooth, "smooth", allow_zero=True)
    rs, ss = _check_uncertainty(map_uncertainty)
    f = analysis_scale
    if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, np.integer)) or f < 1:
        raise ValueError(f"analysis_scale must be an integer >= 1, got {analysis_scale!r}")
    f = int(f)
    if f > 1 and not _scalable_family(psf_family):
        raise ValueError(f"analysis_scale > 1 needs the 'disc' or 'gaussian' PSF family, got {psf_family!r}")
    be = get_backend(backend, like=radius_map)
    xp = be.xp
    x, _ = as_backend_array(image, be)
    check_image(x, xp)
    r, kind = as_backend_array(radius_map, be, name="radius map")
    check_radius_map(r, x.shape[:2], xp)
    r = r.astype(np.float32, copy=False)
    if f > 1:  # the same check on the f × f block means, radii in their pixels
        m, n = -(-int(x.shape[0]) // f), -(-int(x.shape[1]) // f)
        if min(m, n) < 3:
            raise ValueError(f"image ({x.shape[0]}x{x.shape[1]}) at analysis_scale {f} is {m}x{n}, "
                             "smaller than 3x3; use a smaller analysis_scale")
        full = x.shape[:2]
        clipped = _clipped_2d(saturated, x, be)
        keep = KEEP_IN_FOCUS if keep_in_focus is None else keep_in_focus
        coarse = radius_check(
            block_mean(x.astype(np.float32, copy=False), f, xp), block_mean(r, f, xp) / np.float32(f),
            psf_family=psf_family, keep_in_focus=keep if keep is False else tuple(v / f for v in _check_keep(keep)),
            map_uncertainty=(rs / f, ss / f), scales=scales, margin=margin, window=tuple(v / f for v in windows),
            smooth=smooth / f,
            lam=lam, noise_sigma=noise_sigma,
            saturated=None if clipped is None else block_mean(clipped.astype(np.float32), f, xp) > 0,
            backend=be)
        return to_output(upsample_linear(coarse, f, full, xp), kind)
    if noise_sigma is None:  # on the input as given, as edge_cap measures it
        noise_sigma = max(_noise_sigma(x, be), NOISE_SIGMA_FLOOR)
    sigma = check_positive(noise_sigma, "noise_sigma", allow_zero=True)
    x = x.astype(np.float32, copy=False)
    t = np.float32
    lum = _luminance(x, xp)
    if keep_in_focus is False:
        w = xp.ones_like(r)
    else:
        w = 1 - in_focus_weight(r, *_check_keep(KEEP_IN_FOCUS if keep_in_focus is None else keep_in_focus), backend=be)
    clipped = _clipped_2d(saturated, x, be)
    if clipped is not None:  # every trial rings around a clipped highlight: no evidence there
        reach = 2 * int(np.ceil(2 * float(r.max()))) + 1
        w = w * (_box_extreme(clipped, reach, xp, maximum=True) == 0).astype(w.dtype)
    gy, gx = xp.gradient(lum)
    g2 = w * (gx * gx + gy * gy)
    del gy, gx
    wsums = [_window_summer(v, w.shape, be, w.dtype) for v in windows]
    gws = [wsum(w) for wsum in wsums]
    judged = [(gw > t(1e-3)) & (wsum(g2) > t((3 * sigma) ** 2) * gw) for wsum, gw in zip(wsums, gws)]
    del g2
    family = family_function(psf_family)
    lowest, best, ratio = [None] * len(windows), [None] * len(windows), [None] * len(windows)
    trials = deconvolve_fast_scaled(lum, r, scales, lam=lam, family=family, radius_sigma=rs, spatial_sigma=ss,
                                    backend=be)
    for s, f in trials:  # running minimum: two maps per window instead of one per scale
        wa, waa = _weighted_gradient(f, xp, w)
        for i, (wsum, gw) in enumerate(zip(wsums, gws)):
            ratio[i] = _sparsity_ratio(wsum(wa), wsum(waa), gw, xp)
            if lowest[i] is None:
                lowest[i], best[i] = ratio[i], xp.full(ratio[i].shape, t(s))
            else:
                lower = ratio[i] < lowest[i]
                lowest[i] = xp.where(lower, ratio[i], lowest[i])
                best[i] = xp.where(lower, t(s), best[i])
    scale = None
    for i in range(len(windows)):  # `ratio` is now the unscaled map's (scales end with 1)
        taken = judged[i] & (lowest[i] < t(1 - margin) * ratio[i])
        si = xp.where(taken, best[i], t(1))
        if smooth > 0:
            si = _local_mean(si, smooth, be)
        scale = si if scale is None else xp.minimum(scale, si)
    return to_output(xp.clip(scale, t(scales[0]), t(1)).astype(t, copy=False), kind)


def _check_windows(window) -> tuple:
    """``radius_check``'s ``window`` as a non-empty tuple of positive floats."""
    values = (window,) if np.ndim(window) == 0 else tuple(window)
    if not values:
        raise ValueError("window: give at least one window σ")
    return tuple(check_positive(v, "window") for v in values)


def _scalable_family(family) -> bool:
    """``family`` is the disc or Gaussian family (by name or as the function), whose PSF
    of radius ``r`` at ``f`` px per pixel is the family's ``r / f``."""
    if isinstance(family, str):
        return family in ("disc", "gaussian")
    return any(family is _family(name) for name in ("disc", "gaussian"))


def saturation_mask(image, level=SATURATION_LEVEL, backend=None):
    """Clipped pixels of ``image``: True where a colour channel is at least
    ``level`` times the white point (per pixel and channel).

    The white point is 1 for float images within [0, 1] (what
    :func:`gpudeblur.io.read_image` returns) and for unsigned integer arrays
    (read on their type's full scale: 255 for uint8), the type's maximum
    for signed integer arrays and the image's maximum for other float images;
    channels beyond the third (alpha) are never clipped. For
    ``deconvolve_spatially_varying(..., saturated=)``: a clipped value only
    bounds the blurred value from below, so ``sv-admm`` fits it one-sided
    instead of ringing around a plateau it cannot explain.

    Returns
    -------
    mask : bool array like ``image`` (the image's kind)
    """
    level = check_positive(level, "level")
    if level > 1:
        raise ValueError(f"level must be in (0, 1], got {level!r}")
    be = get_backend(backend, like=image)
    xp = be.xp
    dtype = getattr(image, "dtype", None)
    x, kind = as_backend_array(image, be)
    check_image(x, xp)
    colour = x[..., :3] if x.ndim == 3 else x
    if dtype is not None and np.issubdtype(dtype, np.unsignedinteger):
        white = 1.0  # as_backend_array read it on its type's full scale, not its brightest pixel
    elif dtype is not None and np.issubdtype(dtype, np.integer):
        white = float(np.iinfo(dtype).max)
    else:
        white = max(float(colour.max()), 1.0)
    mask = x >= np.float32(level * white)
    if x.ndim == 3 and x.shape[2] > 3:
        mask[..., 3:] = False
    return to_output(mask, kind)


def _noise_sigma(x, be) -> float:
    """Noise σ of ``x`` (:func:`gpudeblur.estimate_noise`; 0 for images under 3×3)."""
    if min(x.shape[:2]) < 3:
        return 0.0
    from .restoration import estimate_noise  # noqa: PLC0415

    return float(estimate_noise(x, backend=be))


def _window_sum(a, sigma, be):
    """Gaussian-weighted local sum of ``a`` (σ = ``sigma`` px, zero outside
    the image), up to a constant factor: divide two of them for a local
    weighted mean. The Gaussian is cut to the image's size (odd) where it is
    larger."""
    return _window_summer(sigma, a.shape, be, a.dtype)(a)


def _window_summer(sigma, shape, be, dtype):
    """:func:`_window_sum` for any number of ``(M, N)`` arrays of one shape: the
    Gaussian's transfer function is computed once (the same bits as one call each)."""
    from .convolution import BlurOperator
    from .psf import from_array, gaussian

    k = gaussian(sigma)
    cut = [min(n, (m - 1) // 2 * 2 + 1) for n, m in zip(k.shape, shape)]
    k = k[(k.shape[0] - cut[0]) // 2:, (k.shape[1] - cut[1]) // 2:][:cut[0], :cut[1]]
    op = BlurOperator(from_array(k), tuple(shape), be, dtype, boundary="zero", taper=False)  # unit sum, as fftconvolve

    def window_sum(a):
        return op.forward(a.astype(dtype, copy=False)[None])[0].astype(dtype, copy=False)

    return window_sum


def _gradient_sparsity(f, wsum, gw, xp, w=None):
    """Normalized sparsity ``Σ w|∇f| / sqrt(Σ w|∇f|² · Σ w)`` of ``f``'s gradient
    magnitude over the windows of ``wsum`` (``gw = wsum(w)``; ``w`` None: all
    pixels), and the windowed energy ``Σ w|∇f|²`` (Krishnan, Tay & Fergus 2011)."""
    wa, waa = _weighted_gradient(f, xp, w)
    energy = wsum(waa)
    return _sparsity_ratio(wsum(wa), energy, gw, xp), energy


def _weighted_gradient(f, xp, w=None):
    """``(w|∇f|, w|∇f|²)`` (``w`` None: 1), the terms of :func:`_gradient_sparsity`'s window sums."""
    gy, gx = xp.gradient(f)
    a = xp.sqrt(gx * gx + gy * gy)
    wa = a if w is None else w * a
    return wa, wa * a


def _sparsity_ratio(sum_wa, energy, gw, xp):
    """``Σ w|∇f| / sqrt(Σ w|∇f|² · Σ w)`` from the three window sums."""
    t = sum_wa.dtype.type
    return sum_wa / xp.maximum(xp.sqrt(xp.maximum(energy * gw, t(0))), t(1e-12))


def _local_mean(a, sigma, be):
    """Gaussian-weighted local mean of ``a`` (σ = ``sigma`` px) over the image only."""
    ssum = _window_summer(sigma, a.shape, be, a.dtype)
    return ssum(a) / ssum(be.xp.ones_like(a))


def _check_spread_select(value):
    """``spread_select`` as ``(factor, margin)`` or None (off); the default (None) and True
    give :data:`SPREAD_SELECT`."""
    if value is None:
        return SPREAD_SELECT
    if value is False or (isinstance(value, np.bool_) and not value):
        return None
    if value is True or isinstance(value, np.bool_):
        return SPREAD_SELECT
    if isinstance(value, (str, bytes)):
        raise ValueError(f"spread_select must be True, False or a pair (factor, margin), got {value!r}")
    try:
        factor, margin = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"spread_select must be True, False or a pair (factor, margin), got {value!r}") from None
    if not (0 <= factor < 1) or not (0 <= margin < 1):
        raise ValueError(f"spread_select: factor and margin must lie in [0, 1), got {value!r}")
    return factor, margin


def spread_choice(wide, narrow, margin, *, window=SPREAD_SELECT_WINDOW, smooth=SPREAD_SELECT_SMOOTH,
                  backend=None):
    """Per-pixel weight (0…1) of ``narrow`` in ``spread_select``'s blend.

    1 where the normalized sparsity of ``narrow``'s luminance gradient
    magnitude, ``G(|∇f|) / sqrt(G(|∇f|²) · G(1))`` over a Gaussian window of
    ``window`` px, is below ``1 − margin`` times ``wide``'s (it rings no
    more), 0 elsewhere (and where ``wide`` has no gradients at all); then
    smoothed by a Gaussian of ``smooth`` px.
    Both images ``(M, N)`` or ``(M, N, C)``; the weight comes back as the
    array type of ``wide`` (NumPy or CuPy), in float32.
    """
    be = get_backend(backend, like=wide)
    xp = be.xp
    margin = check_positive(margin, "margin", allow_zero=True)
    t = np.float32
    (wide, kind), (narrow, _) = (as_backend_array(a, be, dtype=t, name=n) for a, n in ((wide, "wide"), (narrow, "narrow")))
    lw, ln = (_luminance(a, xp) for a in (wide, narrow))
    wsum = _window_summer(window, lw.shape, be, t)
    g1 = wsum(xp.ones_like(lw))

    sn, _ = _gradient_sparsity(ln, wsum, g1, xp)
    sw, ew = _gradient_sparsity(lw, wsum, g1, xp)
    # a window without gradients (RMS below 1e-5: no noise either) has nothing to judge: the default
    pick = ((sn < t(1 - margin) * sw) & (ew > t(1e-10) * g1)).astype(t)
    if smooth > 0:
        pick = _local_mean(pick, smooth, be)
    return to_output(xp.clip(pick, t(0), t(1)), kind)


def _check_keep(value):
    msg = f"keep_in_focus must be a pair (lo, hi) of radii, False or None, got {value!r}"
    if isinstance(value, (str, bytes)):
        raise ValueError(msg)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(msg) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi):
        raise ValueError(f"keep_in_focus must satisfy 0 <= lo < hi (finite), got {value!r}")
    return lo, hi


def compose_layers(layers, labels, feather=2.0, backend=None):
    """``f = Σ α_i ⊙ u_i`` with masks feathered by a Gaussian of ``feather`` px.

    The hard masks of ``labels`` are smoothed and renormalized to sum to one,
    so seams blend over a few pixels instead of showing a step.
    """
    be = get_backend(backend, like=layers[0])
    xp = be.xp
    dt = layers[0].dtype if np.dtype(layers[0].dtype) in (np.dtype(np.float32), np.dtype(np.float64)) else None
    moved = [as_backend_array(u, be, dtype=dt, name=f"layer {i}", image=True) for i, u in enumerate(layers)]
    kind = moved[0][1]
    layers = [u for u, _ in moved]
    if is_cupy_array(labels) and be.name == "cpu":
        labels = labels.get()
    labels = xp.asarray(labels)
    alphas = []
    for i in range(len(layers)):
        alphas.append(_feathered((labels == i).astype(layers[0].dtype), feather, be))
    total = sum(alphas)
    total = xp.where(total > 1e-6, total, layers[0].dtype.type(1))
    out = None
    for u, a in zip(layers, alphas):
        w = (a / total)
        term = u * (w[..., None] if u.ndim == 3 else w)
        out = term if out is None else out + term
    return to_output(out, kind)


def _check_blind_options(options) -> None:
    """``blind_options`` names only keywords of :func:`~gpudeblur.blind.blind_deblur_layer` that the
    pipeline does not set itself (checked when the pipeline is made, not after the blur map)."""
    import inspect
    from collections.abc import Mapping

    from .blind import blind_deblur_layer

    if options is None:
        return
    if not isinstance(options, Mapping):
        raise ValueError(f"blind_options must be a mapping (dict), got {type(options).__name__}")
    params = inspect.signature(blind_deblur_layer).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # a stand-in taking any keyword (tests)
    known = set(params) - {"image", "mask", "backend"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"blind_options: unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(known))}")


def family_function(family):
    """``r -> psf`` of a PSF family: ``'disc'``, ``'gaussian'``, a callable
    (e.g. a :class:`gpudeblur.blurmap.PSFCalibration`); a callable's PSFs are
    checked once here (at r = 0 and 2), not at every use."""
    fam = _family(family, "psf_family")
    if fam is family and not isinstance(family, str):
        _check_family_psfs(fam, "psf_family")
    return fam


def _second_moment(k) -> float:
    k = np.asarray(k, dtype=np.float64)
    i, j = np.indices(k.shape)
    return float((k * ((i - k.shape[0] // 2) ** 2 + (j - k.shape[1] // 2) ** 2)).sum() / k.sum())


def _family_range(family, max_scale: float) -> tuple[float, float]:
    """Scales over which a family is defined: a calibration's radii, else ``[0, max_scale]``."""
    radii = getattr(family, "radii", None)
    if radii is not None and not isinstance(family, str):
        return float(radii[0]), float(radii[-1])
    return 0.0, float(max_scale)


def _equivalent(family, disc_radius: float, max_scale: float, step: float) -> tuple[float, bool]:
    """``(scale, clamped)``: see :func:`disc_equivalent`; ``clamped`` when the
    family's narrowest PSF is already at least as wide as the disc."""
    from .psf import disc

    fn = family_function(family)
    target = _second_moment(disc(float(disc_radius)))
    lo, hi = _family_range(family, max_scale)
    prev_r, prev_m = lo, _second_moment(fn(lo))
    if prev_m >= target:
        # already that wide at its smallest scale (a real lens): the end of the
        # plateau of scales that share that narrowest PSF
        end = lo
        for r in np.arange(lo + step, hi + step / 2, step):
            if _second_moment(fn(min(float(r), hi))) > prev_m * (1 + 1e-9) + 1e-12:
                break
            end = min(float(r), hi)
        return end, True
    for r in np.arange(lo + step, hi + step / 2, step):
        r = min(float(r), hi)
        m = _second_moment(fn(r))
        if m >= target:
            return float(prev_r + (r - prev_r) * (target - prev_m) / max(m - prev_m, 1e-300)), False
        prev_r, prev_m = r, m
    raise ValueError(f"psf_family never gets as wide as a disc of radius {disc_radius:g} px (up to scale {hi:g}); "
                     "pass keep_in_focus=(lo, hi) and in_focus_radius= in the family's own units")


def disc_equivalent(family, disc_radius: float, max_scale: float = 16.0, step: float = 0.05) -> float:
    """Scale of ``family`` whose PSF has the second moment of a disc of radius
    ``disc_radius``: the identity for the disc; for a Gaussian's σ about
    ``disc_radius / 2`` from 2 px up (0.64 at 1 px, where the rasterized disc
    is relatively wider). Used to carry the pipeline's default thresholds,
    defined as disc radii, over to another PSF family. A calibration is
    searched over its own radii; if its narrowest PSF is already that wide,
    its smallest radius is returned. A family that never gets that wide
    (within ``max_scale`` or the calibration's range) is an error."""
    if isinstance(family, str) and family == "disc":
        return float(disc_radius)
    return _equivalent(family, disc_radius, max_scale, step)[0]


def _default_keep(family, stacklevel=3):
    """Default ``keep_in_focus`` in ``family``'s units (:data:`KEEP_IN_FOCUS` as disc radii)."""
    import warnings

    if isinstance(family, str) and family == "disc":
        return KEEP_IN_FOCUS
    (lo, clamped), (hi, _) = (_equivalent(family, v, 16.0, 0.05) for v in KEEP_IN_FOCUS)
    if clamped:
        warnings.warn(f"psf_family {_family_name(family)}: its narrowest PSF is already wider than a "
                      f"{KEEP_IN_FOCUS[0]:g} px disc; the input is kept where the map reads at most {lo:g} "
                      "(the scales of that PSF)", UserWarning, stacklevel=stacklevel)
    if hi - lo < 0.05:
        raise ValueError(f"psf_family {_family_name(family)}: the default keep_in_focus range collapses to "
                         f"({lo:g}, {hi:g}); pass keep_in_focus=(lo, hi) in the family's own units, or False")
    return lo, hi


def _default_in_focus_radius(family):
    """Default in-focus radius of ``blind``'s layers in ``family``'s units (a
    :data:`BLIND_IN_FOCUS` disc)."""
    if isinstance(family, str) and family == "disc":
        return BLIND_IN_FOCUS
    r, clamped = _equivalent(family, BLIND_IN_FOCUS, 16.0, 0.05)
    # a family whose narrowest PSF is wider than that disc (a real lens):
    # the scales of that narrowest PSF are in focus (split_layers: r < in_focus_radius)
    return r + 0.025 if clamped else r


def _family_name(family) -> str:
    if isinstance(family, str):
        return family
    if type(family).__name__ == "PSFCalibration":
        src = getattr(family, "source", None)
        return f"calibration {src}" if src else "calibration"
    return "callable"


class AllInFocus:
    """Pipeline object: settings plus reusable state (estimator, kernels).

    Parameters
    ----------
    mode : {'auto', 'sv-admm', 'fast', 'blind'}
        Deblurring method (see module docstring). The default, ``'auto'``,
        is ``sv-admm``, which won the quality benchmark
        (``bench/bench_allinfocus.py``), on a GPU and for images up to
        :data:`AUTO_SV_ADMM_MAX_PIXELS` on the CPU, and ``fast`` for larger
        images on the CPU, where ``sv-admm`` takes tens of minutes, and on
        the CPU for a map it estimates at a coarser scale than
        :data:`AUTO_SV_ADMM_MAX_MAP_SCALE` (strong defocus: there ``sv-admm``
        gained 0.44 dB on average for ~15× the job's time); the result's
        ``mode`` says which ran. Options whose meaning depends on
        the mode (``lam``, ``num_iter``, ``saturation=True``,
        ``spread_select=True``) make ``'auto'`` run ``sv-admm`` whatever the size
        (the mode they belong to).
    layers : int, optional
        Number of out-of-focus layers (``blind``); default from the map.
    in_focus_radius : float, optional
        Radius below which a pixel counts as in focus (layers, ``blind``);
        default a disc radius of 2 px (:data:`BLIND_IN_FOCUS`;
        :func:`disc_equivalent` for another family), widened for a map
        estimated at scale 4 or coarser
        (:func:`scaled_in_focus_radius`; 6 px at scale 4).
    psf_family : {'disc', 'gaussian'}, callable or PSFCalibration
        The blur's PSF as a function of the map's ``r``, used by the
        estimate *and* the deblurring (``sv-admm``/``fast`` bank, ``blind``'s
        initial kernel). Default: the disc (defocus of an ideal lens).
    lam : float, optional
        Regularization weight: TV for ``sv-admm`` (default
        :data:`ESTIMATED_MAP_LAM` on an estimated map, or
        :data:`UNCHECKED_MAP_LAM` with ``radius_check=False``; at least
        :data:`NOISE_LAM_PER_SIGMA` times the input's noise σ̂ and, with the
        check, :data:`COMPRESSION_LAM_PER_SIGMA` ``· sqrt(compression_noise)``;
        noise-adaptive on a given one), gradient prior for ``fast`` (``max(1.5·σ̂,
        0.015)``, :func:`gpudeblur.spatially_varying.default_lam`), framelet ℓ1
        ``lam1`` for ``blind`` (0.005; ``blind_options['lam1']`` wins).
    num_iter : int, optional
        ADMM iterations of ``sv-admm`` (:data:`SV_ADMM_ITERATIONS`, 30; with
        ``spread_select`` the two solves' together) or alternations ``N`` of
        ``blind`` (20; ``blind_options['n_outer']`` wins). ``fast`` has no
        iterations: setting it there is an error.
    map_uncertainty : (float, float), optional
        ``(radius_sigma, spatial_sigma)`` in pixels for ``sv-admm``/``fast``:
        treat the map as uncertain (expected-misfit data term, see
        :func:`gpudeblur.spatially_varying.deconvolve_spatially_varying`).
        Default: :data:`MAP_UNCERTAINTY` for an estimated map (widened for
        a map read at a coarser scale, :func:`scaled_map_uncertainty`),
        ``(0, 0)`` (exact) for a given one; a value set here applies to both.
    keep_in_focus : (float, float), False or None
        ``(lo, hi)`` radii: ``sv-admm``/``fast`` return the input where the
        map is ``≤ lo``, their deconvolution where it is ``≥ hi``, and a
        linear fade between (:func:`in_focus_weight`). Default (None):
        :data:`KEEP_IN_FOCUS` for an estimated map (widened for a map read at
        a coarser scale, :func:`scaled_keep_in_focus`), off for a given one; a
        pair set here applies to both; ``False``: never.
    radius_check : bool
        ``sv-admm``/``fast`` on an *estimated* map: shrink the radii where
        trial deconvolutions show they ring (:func:`radius_check`, run at
        the scale the map was read at: ``analysis_scale=map_scale``) and use
        the low TV weight :data:`ESTIMATED_MAP_LAM`. False: the map as
        estimated, with the ringing-robust weight :data:`UNCHECKED_MAP_LAM`.
        A given map is trusted either way (unless ``map_estimated=True``).
    edge_cap : bool
        ``sv-admm``/``fast`` on an *estimated* map: first lower radii that
        an edge nearby is too sharp for (:func:`edge_cap`, slack
        :data:`EDGE_CAP_SLACK`); this is what keeps a sharp photo's smooth
        regions that read as blurred from ringing.
    shrink_uninformed : bool or None
        ``fast`` on a map it estimates: where the map has no information
        (the estimator's confidence below :data:`UNINFORMED_CONFIDENCE`: no
        texture above the noise, e.g. a clear sky) there is nothing to
        sharpen, so deconvolve with the radius up to the map's whose filter
        passes the least noise (:func:`quietest_radii`: radius 0 on a clean
        photo, where a large guessed radius would blow the noise up into
        blotches; :func:`uninformed_weight`; after the radius check; the
        keep-in-focus weight still follows the map). None (default): on
        wherever it applies, silently off elsewhere (a given map has no
        confidence; ``sv-admm``'s TV already smooths such regions, and
        ``'auto'`` may run either); True: the same, but refused with mode
        ``sv-admm`` or ``blind``, and a warning where :meth:`run` cannot
        apply it (a given map, or ``'auto'`` running ``sv-admm``); False: off.
    spread_select : bool, (float, float) or None
        ``sv-admm`` on an *estimated* map: split the ADMM iterations between
        the map's radius spread and a narrower one warm-started from it
        (:func:`gpudeblur.spatially_varying.deconvolve_spread_sequence`),
        and take the narrow result per pixel where it does not ring more
        (:data:`SPREAD_SELECT`: ``(factor, margin)``; True for those
        defaults). Both solves use the map after the edge cap and radius
        check, and the same TV weight and clipped-pixel mask. None
        (default): on wherever it applies (``sv-admm`` on an estimated map
        with a radius spread), silently off elsewhere; True: the same, but
        it makes ``'auto'`` run ``sv-admm``, is refused with ``fast``,
        ``blind`` or a ``map_uncertainty`` without radius spread, and warns
        when the map is given; False: one solve with the spread. +0.46 dB
        on the quality bench (+0.15 on eight held-out scenes, −0.13 on sharp
        photos) for the same number of iterations (each solve at least one:
        ``num_iter=1`` runs 1 + 1); the result's ``spread_selected`` is the
        fraction taken from the narrow solve.
    saturation : bool or None
        ``sv-admm``: fit clipped pixels (:func:`saturation_mask`,
        :data:`SATURATION_LEVEL`) one-sided, whether the map is estimated or
        given. None (default): on for ``sv-admm`` (also when ``'auto'``
        runs it); ``fast`` and ``blind`` cannot weight pixels, so True with
        them is an error (with ``'auto'`` it makes ``sv-admm`` run).
    tv_channels : {'separate', 'joint'} or None
        ``sv-admm``'s TV of a colour image: of each channel on its own
        (None, the default: ``'separate'``) or of the channels together
        (``'joint'``, colour TV: each pixel's gradients of every channel
        shrunk by their joint norm;
        :func:`gpudeblur.spatially_varying.deconvolve_spatially_varying`,
        which gives what it gains and costs here). Set with ``'fast'`` or
        ``'blind'``, an error; ``'joint'`` makes ``'auto'`` run ``sv-admm``
        (as ``lam`` does).
    map_scale : int or 'auto'
        Estimate the blur map on the image reduced ``map_scale`` times
        (``scale=`` of :meth:`gpudeblur.blurmap.BlurMapEstimator.estimate`):
        radii up to ``map_scale`` times the estimator's ``max_radius`` (8)
        at ``1/map_scale²`` of the map's cost, for large photos whose blur
        exceeds 8 px; radii below about ``1.5·map_scale`` px are no longer
        resolved. Default ``'auto'``: the finest power-of-2 scale whose
        range holds the blur, found by reading the map coarse first (at
        scale 4 or as the window allows below 2 MP, coarser above; see
        ``scale='auto'`` of :meth:`~gpudeblur.blurmap.BlurMapEstimator.estimate`):
        full resolution when the blur is within 8 px.
    estimator_options : dict
        Passed to :class:`gpudeblur.blurmap.BlurMapEstimator`; the pipeline
        defaults are ``window=MAP_WINDOW`` (51), ``noise='auto'`` (the
        image's own noise, :meth:`map_noise`) and ``labeling_kwargs={'radius_prior':
        RADIUS_PRIOR}`` (2).
    compression_noise : float, optional
        Variance of an error the input's lossy compression added, in ``[0,
        1]`` units (:func:`gpudeblur.io.jpeg_compression_noise` of the JPEG
        it was read from; the ``allinfocus`` command passes it for a JPEG
        IN). The image's measured noise cannot see it (JPEG removes the
        fine-scale noise the measurement looks at) and the blur map reads
        the detail it removed as blur; the estimator's measured noise is
        therefore taken at least :data:`COMPRESSION_NOISE_SHARE` times this,
        divided by ``scale²`` for a map read at ``1/scale`` (the
        estimator's ``compression_noise``; an explicit ``noise`` or
        ``compression_noise`` in ``estimator_options`` wins), and
        ``sv-admm``'s default TV weight is at least
        :data:`COMPRESSION_LAM_PER_SIGMA` ``· sqrt(compression_noise)``
        (where the estimate used it). None or 0: none.
    blind_options : dict
        Passed to :func:`gpudeblur.blind.blind_deblur_layer`; its
        ``kernel_size`` defaults to :func:`blind_kernel_size` of the
        layer's initial PSF (the paper's 31 up to an 11 px disc, larger
        beyond).
    backend : {'auto', 'cuda', 'cpu'}, optional
    progress : callable, optional
        ``progress(stage_name)`` at the start of each stage.

    Examples
    --------
    >>> out, res = AllInFocus(mode="fast").run(image)          # doctest: +SKIP
    >>> res.radius_map.max(), res.timings                        # doctest: +SKIP
    """

    def __init__(
        self,
        mode=DEFAULT_MODE,
        *,
        layers=None,
        in_focus_radius=None,
        psf_family="disc",
        lam=None,
        num_iter=None,
        map_uncertainty=None,
        keep_in_focus=None,
        radius_check=True,
        edge_cap=True,
        shrink_uninformed=None,
        saturation=None,
        spread_select=None,
        tv_channels=None,
        map_scale="auto",
        estimator_options=None,
        compression_noise=None,
        blind_options=None,
        backend=None,
        progress=None,
    ):
        self.mode = check_choice(mode, MODES, "mode")
        self.map_scale = map_scale if (isinstance(map_scale, str) and map_scale == "auto") else \
            check_positive_int(map_scale, "map_scale")
        self.layers = None if layers is None else check_positive_int(layers, "layers")
        if self.layers is not None and self.mode != "blind":
            raise ValueError(f"layers applies to mode 'blind' only (the layers it deblurs one by one), "
                             f"got mode {self.mode!r}")
        self.psf_family = psf_family
        self._psf = family_function(psf_family)  # validates
        if "psf_family" in (estimator_options or {}):
            raise ValueError("set the PSF family with AllInFocus(psf_family=...): the estimate and the deblurring "
                             "must use the same one")
        if "backend" in (estimator_options or {}):
            raise ValueError("set the backend with AllInFocus(backend=...), not in estimator_options")
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be a callable (stage name -> None), got {progress!r}")
        if backend is not None and not isinstance(backend, Backend) and \
                (not isinstance(backend, str) or backend.lower() not in BACKEND_NAMES):
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKEND_NAMES)}")
        _check_blind_options(blind_options)
        # defaults are disc radii, converted once for another family (only those this mode uses;
        # keep_in_focus's only when a map is estimated: _keep_default)
        self._keep_default_cache = None
        self._in_focus_default = in_focus_radius is None  # then scaled with the map's scale (blind)
        if in_focus_radius is None:
            self.in_focus_radius = _default_in_focus_radius(psf_family) if mode == "blind" else BLIND_IN_FOCUS
        else:
            self.in_focus_radius = check_positive(in_focus_radius, "in_focus_radius", allow_zero=True)
        self.lam = None if lam is None else check_weight(lam, "lam")
        self.num_iter = None if num_iter is None else check_positive_int(num_iter, "num_iter")
        if self.num_iter is not None and self.mode == "fast":
            raise ValueError("num_iter does not apply to mode 'fast' (a closed-form per-radius deconvolution)")
        self.map_uncertainty = None if map_uncertainty is None else _check_uncertainty(map_uncertainty)
        self.keep_in_focus = keep_in_focus if (keep_in_focus is None or keep_in_focus is False) else _check_keep(keep_in_focus)
        # settings another mode reads: refused, not silently ignored (as the CLI refuses them)
        if self.mode == "blind":
            for name, value in (("map_uncertainty", map_uncertainty), ("keep_in_focus", keep_in_focus)):
                if value is not None:
                    raise ValueError(f"{name} applies to modes 'sv-admm' and 'fast' (and 'auto'), not 'blind' "
                                     "(which splits the map into layers and keeps its in-focus layer)")
        elif in_focus_radius is not None:
            raise ValueError(f"in_focus_radius applies to mode 'blind' (its in-focus layer), got mode {self.mode!r}; "
                             "sv-admm and fast return the input where the map is in focus by keep_in_focus")
        if not isinstance(radius_check, (bool, np.bool_)):
            raise ValueError(f"radius_check must be True or False, got {radius_check!r}")
        self.radius_check = bool(radius_check)
        if not isinstance(edge_cap, (bool, np.bool_)):
            raise ValueError(f"edge_cap must be True or False, got {edge_cap!r}")
        self.edge_cap = bool(edge_cap)
        if shrink_uninformed is not None and not isinstance(shrink_uninformed, (bool, np.bool_)):
            raise ValueError(f"shrink_uninformed must be True, False or None, got {shrink_uninformed!r}")
        #: whether ``fast`` shrinks the radii where its own estimate knows nothing;
        #: ``_shrink_set``: set by the caller (else the default, on where it applies)
        self.shrink_uninformed = shrink_uninformed is None or bool(shrink_uninformed)
        self._shrink_set = shrink_uninformed is not None
        if self._shrink_set and self.shrink_uninformed and self.mode in ("sv-admm", "blind"):
            raise ValueError(f"shrink_uninformed applies to mode 'fast' (or 'auto' when it runs fast), "
                             f"got mode {self.mode!r}")
        if saturation is not None and not isinstance(saturation, (bool, np.bool_)):
            raise ValueError(f"saturation must be True, False or None, got {saturation!r}")
        if saturation and self.mode not in ("sv-admm", "auto"):
            raise ValueError(f"saturation handling needs mode 'sv-admm' (mode {self.mode!r} cannot weight pixels)")
        #: whether ``sv-admm`` fits clipped values one-sided; None for ``mode='auto'``
        #: left at its default: on when ``'auto'`` runs ``sv-admm``
        if saturation is None:
            self.saturation = None if self.mode == "auto" else self.mode == "sv-admm"
        else:
            self.saturation = bool(saturation)
        #: ``(factor, margin)`` or None (off); ``_spread_set``: set by the caller (else the
        #: default, which applies where it can: sv-admm on an estimated map with a spread)
        self.spread_select = _check_spread_select(spread_select)
        self._spread_set = spread_select is not None
        if self._spread_set and self.spread_select is not None:
            if self.mode in ("fast", "blind"):
                raise ValueError(f"spread_select needs mode 'sv-admm' or 'auto', got mode {self.mode!r}")
            if self.map_uncertainty is not None and self.map_uncertainty[0] <= 0:
                raise ValueError("spread_select needs a radius spread: map_uncertainty's radius_sigma is 0")
        #: ``sv-admm``'s TV of a colour image: each channel alone (``'separate'``) or together (``'joint'``)
        self.tv_channels = "separate" if tv_channels is None else check_choice(tv_channels, TV_CHANNELS, "tv_channels")
        if tv_channels is not None and self.mode in ("fast", "blind"):
            raise ValueError(f"tv_channels applies to sv-admm's TV (mode 'sv-admm' or 'auto'), got mode {self.mode!r}")
        self.estimator_options = dict(estimator_options or {})
        self.compression_noise = check_compression_noise(compression_noise)
        self.blind_options = dict(blind_options or {})
        self.backend = backend
        self.progress = progress
        self._estimator = None
        # the estimator's options are checked now (cheap: no filter bank, LUT or PSF is built); the family
        # against them only when a map is estimated (a calibration short of max_radius serves a given map)
        self._new_estimator("disc")

    def resolve_mode(self, image_shape, backend=None, map_scale=None) -> str:
        """The mode :meth:`run` uses for an image of ``image_shape`` on ``backend``
        (``mode`` itself unless it is ``'auto'``; see :data:`AUTO_SV_ADMM_MAX_PIXELS`).
        ``map_scale``: the scale an estimated map was read at (None: a given map, or before the
        estimate); on the CPU ``'auto'`` takes ``fast`` above :data:`AUTO_SV_ADMM_MAX_MAP_SCALE`."""
        if self.mode != "auto":
            return self.mode
        if self._auto_forced_sv_admm():
            return "sv-admm"  # options of sv-admm (lam: its TV weight, not fast's prior)
        be = backend if isinstance(backend, Backend) else get_backend(backend if backend is not None else self.backend)
        if be.name != "cpu":
            return "sv-admm"
        pixels = int(image_shape[0]) * int(image_shape[1])
        if pixels > AUTO_SV_ADMM_MAX_PIXELS or (map_scale is not None and map_scale > AUTO_SV_ADMM_MAX_MAP_SCALE):
            return "fast"
        return "sv-admm"

    def _auto_forced_sv_admm(self) -> bool:
        """Options of ``sv-admm`` set, which make ``'auto'`` take it everywhere."""
        return self.lam is not None or self.num_iter is not None or bool(self.saturation) or \
            (self._spread_set and self.spread_select is not None) or self.tv_channels == "joint"

    def _auto_may_turn_fast(self, resolved: str, be) -> bool:
        """``'auto'`` resolved (``resolved``) to ``sv-admm`` on the CPU, not forced, which an
        estimated map read at a coarse scale turns to ``fast`` (:data:`AUTO_SV_ADMM_MAX_MAP_SCALE`)."""
        return self.mode == "auto" and resolved == "sv-admm" and be.name == "cpu" and not self._auto_forced_sv_admm()

    def _stage(self, name):
        if self.progress is not None:
            self.progress(name)

    def _timed(self, name, timings, be, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` as the stage ``name``, its device-synchronized time in ``timings``."""
        self._stage(name)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        be.synchronize()
        timings[name.replace(" ", "_")] = time.perf_counter() - t0
        return out

    @property
    def _keep_default(self):
        """Default ``keep_in_focus`` range in the family's units (an estimated map's; converted on first use)."""
        if self._keep_default_cache is None:
            self._keep_default_cache = _default_keep(self.psf_family, stacklevel=4)
        return self._keep_default_cache

    def _map_estimator(self):
        if self._estimator is None:
            self._estimator = self._new_estimator(self.psf_family)
        return self._estimator

    def _new_estimator(self, psf_family):
        from .blurmap import BlurMapEstimator

        opts = dict(self.estimator_options)
        opts.setdefault("noise", "auto")
        opts.setdefault("noise_floor", NOISE_FLOOR)
        opts["compression_noise"] = self._estimator_compression_noise()
        opts.setdefault("window", MAP_WINDOW)
        lk = dict(opts.pop("labeling_kwargs", {}) or {})
        lk.setdefault("radius_prior", RADIUS_PRIOR)
        return BlurMapEstimator(backend=self.backend, labeling_kwargs=lk, psf_family=psf_family, **opts)

    def _estimator_compression_noise(self) -> float:
        """The estimator's ``compression_noise``: ``estimator_options``' own, else the share of ours."""
        return self.estimator_options.get("compression_noise", estimator_compression_noise(self.compression_noise))

    def _noise_floor(self) -> float:
        """Lower bound of the estimator's measured noise at full resolution (``noise_floor``, raised for a
        compressed input)."""
        return max(self.estimator_options.get("noise_floor", NOISE_FLOOR), self._estimator_compression_noise())

    def _compression_noise_used(self):
        """``compression_noise`` where it sets the estimator's floor: not with a given ``noise`` or an explicit
        ``compression_noise`` in ``estimator_options``."""
        opts = self.estimator_options
        if opts.get("noise", "auto") != "auto" or "compression_noise" in opts:
            return None
        return self.compression_noise

    def _estimated_map_lam(self, estimated_here: bool = True, noise_sigma: float = 0.0, checked: bool = True) -> float:
        """``sv-admm``'s TV weight on an estimated map: :data:`ESTIMATED_MAP_LAM` (:data:`UNCHECKED_MAP_LAM`
        unless ``checked`` by :func:`radius_check`), raised for the input's noise σ̂ ``noise_sigma``
        (:data:`NOISE_LAM_PER_SIGMA`) and, on a checked map, for a compression error where the map used it
        (:data:`COMPRESSION_LAM_PER_SIGMA`; ``estimated_here``: the pipeline estimated the map, not a caller's
        ``map_estimated=True``)."""
        noise = noise_lam("sv-admm", noise_sigma)  # NOISE_LAM_PER_SIGMA·σ̂, as the given-map default
        if not checked:
            return max(UNCHECKED_MAP_LAM, noise)
        v = (self._compression_noise_used() or 0.0) if estimated_here else 0.0
        return max(ESTIMATED_MAP_LAM, noise, COMPRESSION_LAM_PER_SIGMA * math.sqrt(v))

    def map_noise(self, image) -> float:
        """Noise variance given to the blur-map estimator for ``image``.

        ``estimator_options['noise']`` when set; otherwise (``'auto'``) the
        noise of what the estimator analyses, the luminance channel:
        ``max(σ̂², NOISE_FLOOR)``, the floor raised for ``compression_noise``
        (at full resolution; a map read at ``1/scale`` divides that by ``scale²``)
        (:func:`gpudeblur.blurmap.measure_noise`;
        right whether the colour channels' noise is independent,
        ``σ̂ ≈ 0.67σ``, or shared, ``σ̂ ≈ σ``). The estimator's fixed default
        (1e-4, the paper's setting for real photos) assumes ~10x the noise
        of a clean 8-bit photo; on the demo scene the measured value took
        the map's RMSE from 1.39 to 1.10 px.
        """
        from .blurmap.estimator import _resolve_noise  # noqa: PLC0415  (without building the estimator)

        opts = self.estimator_options
        return _resolve_noise(opts.get("noise", "auto"), image, self._noise_floor(), self.backend,
                              opts.get("dtype", np.float32))

    def estimate_map(self, image):
        """Blur map of ``image`` (one estimator, so LUTs/kernels are reused across images)."""
        return self._map_estimator().estimate(image, scale=self.map_scale)

    def run(self, image, radius_map=None, *, map_estimated=None):
        """Deblur ``image``; returns ``(all_in_focus, AllInFocusResult)``.

        ``radius_map`` (M, N) skips the estimation (e.g. a map from a depth
        sensor or a previous run). NumPy in → NumPy out, CuPy in → CuPy out.
        ``map_estimated`` (default: ``radius_map is None``) says whether the
        map is an estimate: ``sv-admm``/``fast`` then cap its radii at sharp
        edges (:func:`edge_cap`, ``edge_cap=True``), check them for
        ringing (:func:`radius_check`, ``radius_check=True``), treat it as
        uncertain (:data:`MAP_UNCERTAINTY`) and keep the input where it
        reads in focus (:data:`KEEP_IN_FOCUS`); pass ``True`` with a map
        from a previous estimate.
        """
        if map_estimated is None:
            map_estimated = radius_map is None
        elif not isinstance(map_estimated, (bool, np.bool_)):
            raise ValueError(f"map_estimated must be True, False or None, got {map_estimated!r}")
        be = get_backend(self.backend, like=image)
        x, kind = as_backend_array(image, be)
        check_image(x, be.xp, unit_range=True)
        x, alpha = split_alpha(x)  # RGBA: the alpha channel comes back untouched
        timings = {}
        mode = self.resolve_mode(x.shape, be)
        # 'auto' on the CPU may still turn to fast once the scale of the map it estimates is known
        # (an estimate declared trusted too: its exact weights make sv-admm's bank no smaller; a 512²
        # scene read at scale 2, session 36: sv-admm's deblurring 48 s, fast's 0.2 s, 0.2 dB apart)
        may_turn_fast = radius_map is None and self._auto_may_turn_fast(mode, be)

        def warn_shrink_unused():
            if self._shrink_set and self.shrink_uninformed and not (mode == "fast" and radius_map is None
                                                                   and map_estimated):
                why = f"mode {mode!r}" if mode != "fast" else (
                    "the map is given" if radius_map is not None else "the map is declared trusted (map_estimated=False)")
                warnings.warn(f"shrink_uninformed applies to 'fast' on a map it estimates; not applied ({why})",
                              stacklevel=3)

        if not may_turn_fast:
            warn_shrink_unused()
        if radius_map is not None:
            unused = [name for name, is_set in (("map_scale", self.map_scale != "auto"),
                                                ("estimator_options", bool(self.estimator_options)),
                                                ("compression_noise", self.compression_noise is not None)) if is_set]
            if unused:
                warnings.warn(f"{', '.join(unused)} set{'s' if len(unused) == 1 else ''} up the map's estimate; not "
                              "used with a given map", stacklevel=2)
        if radius_map is None:
            self._map_estimator()  # the family against the estimator's options, before the work
        if map_estimated and self.keep_in_focus is None and mode != "blind":
            self._keep_default  # noqa: B018  (converted to the family's units now: an error before the work)

        t0 = time.perf_counter()
        map_noise = map_scale = confidence = None
        if radius_map is None:
            estimator = self._map_estimator()
            estimator.check_scale(x.shape, self.map_scale)  # before the stage is announced
            self._stage("blur map")
            if (mode == "fast" or may_turn_fast) and self.shrink_uninformed and map_estimated:
                radius, info, confidence = estimator.estimate(x, scale=self.map_scale, return_info=True,
                                                              return_confidence=True)
            else:
                radius, info = estimator.estimate(x, scale=self.map_scale, return_info=True)
            rmap, _ = as_backend_array(radius, be)
            map_noise = float(info["noise"])
            map_scale = int(info.get("scale", 1))
            if may_turn_fast:
                mode = self.resolve_mode(x.shape, be, map_scale=map_scale)
                if mode != "fast":
                    confidence = None  # asked for in case; sv-admm does not use it
                warn_shrink_unused()
        else:
            rmap, _ = as_backend_array(radius_map, be, name="radius map")
            # a disc or Gaussian wider than the image: refused before its PSF is built (seconds, or no memory)
            check_radius_map(rmap, x.shape[:2], be.xp,
                             max_radius=max(x.shape[:2]) if _scalable_family(self.psf_family) else None,
                             family=self.psf_family, psf_fits=True)
        be.synchronize()
        timings["blur_map"] = time.perf_counter() - t0

        result = AllInFocusResult(radius_map=be.to_host(rmap).astype(np.float32), mode=mode, timings=timings,
                                  map_noise=map_noise, psf_family=_family_name(self.psf_family),
                                  map_scale=map_scale,
                                  compression_noise=self._compression_noise_used() if radius_map is None else None)
        t0 = time.perf_counter()
        if mode in ("sv-admm", "fast"):
            kw = {}
            check = map_estimated and self.radius_check
            sigma = None
            if self.lam is None or (map_estimated and (self.edge_cap or check)):
                # one noise measurement for both checks and the weight
                sigma = max(_noise_sigma(x, be), NOISE_SIGMA_FLOOR)
            if self.lam is not None:
                kw["lam"] = self.lam
            elif map_estimated and mode == "sv-admm":
                kw["lam"] = self._estimated_map_lam(radius_map is None, sigma, check)
            else:  # deconvolve_spatially_varying's noise-adaptive default, from the same measurement
                kw["lam"] = default_lam(mode, sigma)
            result.lam = kw["lam"]
            result.noise_sigma = sigma
            unc = self.map_uncertainty
            if unc is None:
                unc = scaled_map_uncertainty(map_scale or 1) if map_estimated else (0.0, 0.0)
            kw["radius_sigma"], kw["spatial_sigma"] = unc
            result.map_uncertainty = tuple(unc)
            rdeb = rmap
            sat = None
            if map_estimated and self.edge_cap:  # it skips the rims of clipped plateaus
                sat = saturation_mask(x, backend=be)
                rdeb = self._timed("edge cap", timings, be, edge_cap, x, rmap, psf_family=self._psf,
                                   noise_sigma=sigma, saturated=sat, backend=be)
                result.edge_capped = float((rdeb < rmap).mean())
            rkeep = rdeb
            keep = self.keep_in_focus
            if keep is None:
                keep = scaled_keep_in_focus(map_scale or 1, self._keep_default) if map_estimated else False
            if check:
                f = map_scale or 1  # checked where the map was read (the same windows, in full-size pixels)
                scale = self._timed("radius check", timings, be, radius_check, x, rdeb, psf_family=self._psf,
                                    keep_in_focus=keep, map_uncertainty=unc, noise_sigma=sigma if f == 1 else None,
                                    analysis_scale=f, backend=be)
                rdeb = rdeb * scale.astype(rdeb.dtype, copy=False)
                result.radius_scale = be.to_host(scale).astype(np.float32)
            t0 = time.perf_counter()  # the deblur stage starts after the checks
            self._stage(f"deblur ({mode})")
            if confidence is not None:  # fast on its own estimate: the quietest radius where the map knows nothing
                u = uninformed_weight(confidence, backend=be).astype(rdeb.dtype, copy=False)
                result.uninformed_shrunk = float(u.mean())
                rdeb = rdeb - u * (rdeb - _quietest(rdeb, kw["lam"], self._psf, be))
            result.deblur_map = be.to_host(rdeb).astype(np.float32)
            if self.saturation or (self.saturation is None and mode == "sv-admm"):  # None: 'auto' took sv-admm
                if sat is None:
                    sat = saturation_mask(x, backend=be)
                result.saturated = float(sat.mean())
                kw["saturated"] = sat
            sel = self.spread_select if mode == "sv-admm" else None
            if sel is not None and (not map_estimated or unc[0] <= 0):
                if self._spread_set:
                    warnings.warn(f"spread_select applies to an estimated map with a radius spread; not applied (map "
                                  f"{'estimated' if map_estimated else 'given'}, spread {unc[0]:g} px)", stacklevel=2)
                sel = None
            n_iter = self.num_iter if self.num_iter is not None else SV_ADMM_ITERATIONS
            narrow = None
            if mode == "sv-admm":
                kw["tv_channels"] = result.tv_channels = self.tv_channels
            if sel is None:
                if mode == "sv-admm":
                    kw["num_iter"] = n_iter
                out = deconvolve_spatially_varying(x, rdeb, method=mode, family=self._psf, backend=be, **kw)
            else:
                # the wide spread, then the narrow one warm-started from it: the same map (after the
                # checks) and settings; the iterations split between them
                n_wide, n_narrow = max(1, n_iter - n_iter // 2), max(1, n_iter // 2)
                sigmas = (unc[0], unc[0] * sel[0])

                def announce(i):
                    if i == n_wide - 1:
                        self._stage(f"deblur ({mode}, narrow spread)")

                kw.pop("radius_sigma")
                result.spread_select = {"radius_sigmas": [float(v) for v in sigmas], "num_iter": [n_wide, n_narrow],
                                        "margin": float(sel[1])}
                out, narrow = deconvolve_spread_sequence(x, rdeb, sigmas, num_iter=(n_wide, n_narrow),
                                                         family=self._psf, backend=be, callback=announce, **kw)
            if keep is not False:
                # the weight follows the map before the radius check (which only rescales blurred radii)
                a = in_focus_weight(rkeep, *keep, backend=be).astype(out.dtype, copy=False)
                if out.ndim == 3:
                    a = a[..., None]
                xo = x.astype(out.dtype, copy=False)
                out = a * xo + (1 - a) * out
                if narrow is not None:
                    narrow = a * xo + (1 - a) * narrow
                result.keep_in_focus = tuple(keep)
            if narrow is not None:
                pick = spread_choice(out, narrow, sel[1], backend=be)
                result.spread_selected = float(pick.mean())
                if out.ndim == 3:
                    pick = pick[..., None]
                out = pick * narrow + (1 - pick) * out
        else:
            self._stage(f"deblur ({mode})")
            out = self._blind(x, rmap, be, result)
        be.synchronize()
        timings["deblur"] = time.perf_counter() - t0
        return to_output(join_alpha(out, alpha, be.xp), kind), result

    def _blind(self, x, rmap, be, result):
        from .blind import blind_deblur_layer

        xp = be.xp
        in_focus = self.in_focus_radius
        if self._in_focus_default and result.map_scale:
            in_focus = scaled_in_focus_radius(result.map_scale, in_focus)
        result.in_focus_radius = float(in_focus)
        labels, radii = split_layers(rmap, self.layers, in_focus, xp=xp)
        empty = [i for i in range(1, len(radii)) if not np.isfinite(radii[i])]
        if empty and len(empty) < len(radii) - 1:  # (no out-of-focus pixel at all: nothing to say)
            warnings.warn(f"layers={self.layers}: the map has {len(radii) - 1 - len(empty)} distinct out-of-focus "
                          f"radii at most; {len(empty)} layer(s) stay empty", stacklevel=3)
        labels, radii, result.merged_layers = merge_small_layers(labels, radii, self._psf)
        result.layer_labels = be.to_host(labels)
        result.layer_radii = radii
        layers = [x]  # layer 0: in focus, kept
        for i in range(1, len(radii)):
            sel = labels == i
            if not bool(sel.any()):
                layers.append(x)
                result.kernels.append(np.ones((1, 1)))
                continue
            self._stage(f"layer {i}/{len(radii) - 1} (r≈{radii[i]:.1f})")
            mask = sel.astype(x.dtype)
            opts = dict(self.blind_options)
            opts.setdefault("init_kernel", self._psf(float(radii[i])))
            if opts["init_kernel"] is not None:  # None: Tung's initialization, at the default kernel size
                opts.setdefault("kernel_size", blind_kernel_size(opts["init_kernel"], x.shape[:2]))
            if self.lam is not None:
                opts.setdefault("lam1", self.lam)
            if self.num_iter is not None:
                opts.setdefault("n_outer", self.num_iter)
            u, k, _info = blind_deblur_layer(x, mask, backend=be, **opts)
            layers.append(u)
            result.kernels.append(be.to_host(k) if not isinstance(k, np.ndarray) else k)
        result.layers = [be.to_host(u) for u in layers]
        return compose_layers(layers, labels, backend=be)
