"""Coherent blur-map labeling and in-focus segmentation (Zhu et al., TIP 2013, §III-B).

Two discrete labeling problems on the 8-connected pixel grid, both of the form

.. math::  E(l) = \\sum_x D_x(l_x) + \\sum_{(x,v)\\in\\nu} \\lambda_{x,v}\\, |r_{l_x} - r_{l_v}|

* **Coherent labeling** (eq. 14-16): labels are radii ``r`` in
  ``{0, 0.1, ..., 8}``; ``D_x(r) = -log p~_x(r)`` where ``p~_x`` is the
  artificial discrete likelihood built from the top-3 candidates
  ``(r^_k, p^_k)`` of each pixel (the three-step scheme printed before
  eq. 15: place ``p^_k`` at the label nearest ``r^_k``, convolve with the
  symmetric kernel ``kappa``, normalize to sum 1);
  ``lambda_{x,v} = lambda0 exp(-||I_x - I_v||^2 / (2 sigma_lambda^2))``
  on RGB (eq. 16), ``V = |r_x - r_v|`` (eq. 15), 8 neighbours.
* **In-focus segmentation** (eq. 17-18): binary labels, 1 = in focus,
  ``D_x(0) = -log max_{r > tau} p~_x(r)``,
  ``D_x(1) = -log max_{r <= tau} p~_x(r)``, same pairwise form.

Solvers (all take the same data-cost volume ``(M, N, L)`` and the same
edge weights from :func:`edge_weights`, and report the same energy,
:func:`labeling_energy`):

``'exact'`` (CPU, PyMaxflow)
    Ishikawa's construction for convex pairwise terms (Ishikawa, PAMI 2003):
    a graph of ``M x N x (L-1)`` nodes, node ``(k, x)`` standing for
    ``[l_x >= k]``; one s-t min cut gives the **global** minimum. Memory
    grows with ``M N L`` (about 0.4 kB per pixel and label).
``'alpha-expansion'`` (CPU, PyMaxflow)
    What the paper uses (Boykov, Veksler, Zabih 2001): one min cut per
    label and cycle; local minimum within a factor 2 of the optimum for the
    metric ``|r_x - r_v|``. Graphs of ``M x N`` nodes only.
``'min-cut'`` (binary only)
    The ``L = 2`` case of ``'exact'``: the exact minimum.
``'primal-dual'`` (both backends, vectorized over pixels and labels)
    The convex relaxation of the lifted (cumulative) representation
    ``u_k(x) = [l_x >= k]`` (Pock, Cremers, Bischof, Chambolle, SIAM J.
    Imaging Sci. 2010; Chambolle, Cremers, Pock 2012) written on the
    discrete 8-neighbour graph: a linear program whose relaxation is exact,
    so thresholding ``u`` gives a global minimizer once converged. Solved by
    diagonally preconditioned primal-dual iterations (Pock & Chambolle,
    ICCV 2011); the dual iterate gives a certified lower bound on the
    optimum, and iterations stop when the best thresholded labeling is
    within ``tol`` (relative) of that bound (checked every 10 iterations).
    The data term and the monotonicity of the lifted variable stay in the
    primal step, whose prox is a per-pixel isotonic regression (pool
    adjacent violators); each iteration is two custom kernels
    (``kernels/labeling.cu``, Numba twins in ``_numba_labeling.py``): the
    edge-dual update and the fused primal step (``K^T p`` on the fly,
    projection, over-relaxation, per-pixel dual bound). By default the
    iterations are warm-started from the same problem on every 5th label
    (``label_step``), whose iterations cost a fifth, and that problem from
    2x2-block coarsened ones (``multiscale``; on by default in the blur
    map's :func:`coherent_labeling`, off in the generic
    :func:`solve_multilabel`). Both keep the certificate of the full
    problem.

Memory of the primal-dual solver: about ``9 (L-1) M N`` floats (float32):
500 x 500 with ``L = 81`` is ~0.7 GB; a 12 MP image with ``L = 81`` would
need ~35 GB (one ``(L-1, M, N)`` array is 3.8 GB). Reduce the label count
(``labels=`` with a coarser step, e.g. 0.25 px -> 33 labels) or label tiles
of the image; the data-cost volume itself is one such array.
"""

from __future__ import annotations

import numbers
import time

import numpy as np

from .._backend import Backend, array_module, as_backend_array, get_backend, to_output
from .._validate import check_choice, check_positive, check_positive_int

__all__ = [
    "KAPPA",
    "EDGE_OFFSETS",
    "default_labels",
    "edge_weights",
    "candidate_likelihood",
    "data_cost_from_candidates",
    "in_focus_data_cost",
    "labeling_energy",
    "solve_multilabel",
    "solve_binary",
    "coherent_labeling",
    "label_tiles",
    "labeling_bytes_per_pixel",
    "segment_in_focus",
]

#: The symmetric label-space kernel printed after the p~ construction (§III-B).
KAPPA = (1e-20, 1e-12, 1e-7, 1e-3, 1e-1, 1.0, 1e-1, 1e-3, 1e-7, 1e-12, 1e-20)

#: Offsets ``(di, dj)`` of the edge directions; edge ``d`` joins pixel
#: ``(i, j)`` and ``(i + di, j + dj)``. The first two are the 4-neighbour
#: edges, all four the 8-neighbour edges (each undirected edge once).
EDGE_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))

#: Floor on p~ before the log: labels farther than 5 steps from every
#: candidate have p~ = 0 exactly (kappa has 11 taps); the paper does not say
#: how it handles -log 0. The floor, below kappa's smallest tap (1e-20), caps
#: their cost at -log(1e-30) = 69.08.
P_FLOOR = 1e-30
#: Cost added to the label the radius map disagrees with where eq. 18's two costs tie (segmentation)
TIE_BREAK = 1e-3

MULTILABEL_METHODS = ("primal-dual", "exact", "alpha-expansion")
BINARY_METHODS = ("primal-dual", "min-cut")


# ---------------------------------------------------------------------------
# labels, edge weights, data terms
# ---------------------------------------------------------------------------


def default_labels(max_radius: float = 8.0, step: float = 0.1) -> np.ndarray:
    """The paper's label set ``{0, step, ..., max_radius}`` (§IV: 0 to 8 by 0.1)."""
    max_radius = check_positive(max_radius, "max_radius")
    step = check_positive(step, "step")
    return np.round(np.arange(0.0, max_radius + 1e-9, step), 10)


def _check_labels(labels) -> np.ndarray:
    lab = np.asarray(labels.get() if hasattr(labels, "get") and not isinstance(labels, np.ndarray) else labels,
                     dtype=np.float64)
    if lab.ndim != 1 or lab.size < 2:
        raise ValueError(f"labels must be a 1-D array of at least 2 values, got shape {lab.shape}")
    if not np.all(np.isfinite(lab)):
        raise ValueError("labels contain NaN or Inf values")
    if not np.all(np.diff(lab) > 0):
        raise ValueError("labels must be strictly increasing")
    return lab


def _check_kappa(kappa) -> np.ndarray:
    k = np.asarray(kappa, dtype=np.float64)
    if k.ndim != 1 or k.size % 2 != 1:
        raise ValueError(f"kappa must be a 1-D kernel of odd length, got shape {k.shape}")
    if not np.all(np.isfinite(k)) or np.any(k < 0) or k.sum() <= 0:
        raise ValueError("kappa must be finite, non-negative and not all zero")
    return k


def _edge_slices(di: int, dj: int, M: int, N: int):
    """``(src, dst)`` 2-D slices: ``dst`` pixel = ``src`` pixel + (di, dj)."""
    src_i, dst_i = slice(0, M - di), slice(di, M)
    if dj >= 0:
        src_j, dst_j = slice(0, N - dj), slice(dj, N)
    else:
        src_j, dst_j = slice(-dj, N), slice(0, N + dj)
    return (src_i, src_j), (dst_i, dst_j)


def edge_weights(image, lambda0: float = 20.0, sigma_lambda: float = 0.1, *, connectivity: int = 8,
                 diagonal_scale: float = 1.0, backend=None, dtype=None):
    """Contrast-sensitive smoothness weights ``lambda_{x,v}`` (eq. 16).

    ``lambda_{x,v} = lambda0 * exp(-||I_x - I_v||^2 / (2 sigma_lambda^2))``
    with ``||.||`` the Euclidean norm over the color channels (RGB as in the
    paper; a gray image uses its single channel).

    Parameters
    ----------
    image : (M, N) or (M, N, C) array
        Intensities in [0, 1]; ``C`` is 3 (RGB) or 4 (alpha ignored).
    lambda0, sigma_lambda : float
        Paper defaults: 20 and 0.1 for coherent labeling, 1000 and 0.04 for
        the in-focus segmentation.
    connectivity : {8, 4}
        The paper uses the 8 surrounding pixels (§III-B).
    diagonal_scale : float
        Extra factor on the diagonal edges. The paper gives no distance
        weighting, so the default is 1 (all 8 neighbours alike); use
        ``1/sqrt(2)`` for a Euclidean-length weighting.

    Returns
    -------
    weights : (E, M, N) array, E = 4 (or 2 for connectivity 4)
        ``weights[d, i, j]`` is the weight of the edge between ``(i, j)`` and
        ``(i, j) + EDGE_OFFSETS[d]``; 0 where that neighbour is outside the
        image. Same array kind (NumPy/CuPy) as ``image``.
    """
    be = get_backend(backend, like=image)
    xp = be.xp
    img, kind = as_backend_array(image, be, dtype=dtype, name="image")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f"image must be (M, N) gray or (M, N, 3) RGB, got shape {tuple(img.shape)}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"image is too small ({img.shape[0]}x{img.shape[1]}); need at least 2x2 pixels")
    if not bool(xp.isfinite(img).all()):
        raise ValueError("image contains NaN or Inf values")
    lambda0 = check_positive(lambda0, "lambda0", allow_zero=True)
    sigma_lambda = check_positive(sigma_lambda, "sigma_lambda")
    diagonal_scale = check_positive(diagonal_scale, "diagonal_scale", allow_zero=True)
    check_choice(connectivity, (4, 8), "connectivity")
    return to_output(_edge_weights(img, lambda0, sigma_lambda, connectivity, diagonal_scale, xp), kind)


def _edge_weights(img, lambda0, sigma_lambda, connectivity, diagonal_scale, xp):
    if img.ndim == 2:
        img = img[..., None]
    M, N = img.shape[:2]
    E = 4 if connectivity == 8 else 2
    W = xp.zeros((E, M, N), dtype=img.dtype)
    inv = 1.0 / (2.0 * sigma_lambda * sigma_lambda)
    for d, (di, dj) in enumerate(EDGE_OFFSETS[:E]):
        src, dst = _edge_slices(di, dj, M, N)
        diff = img[dst] - img[src]
        w = lambda0 * xp.exp(-(diff * diff).sum(axis=-1) * inv)
        if d >= 2:
            w *= diagonal_scale
        W[(d,) + src] = w
    return W


def _check_candidates(r_cand, p_cand, be):
    # float64 for the (small) candidate arrays: raw likelihoods may be tiny
    # (1e-200); they are rescaled per pixel before the float32 cost volume.
    r, kind = as_backend_array(r_cand, be, dtype=np.float64, name="r_cand")
    p, _ = as_backend_array(p_cand, be, dtype=np.float64, name="p_cand")
    if r.ndim == 2:
        r = r[..., None]
    if p.ndim == 2:
        p = p[..., None]
    if r.ndim != 3:
        raise ValueError(f"r_cand must be (M, N, K) (or (M, N)), got shape {tuple(r.shape)}")
    if p.shape != r.shape:
        raise ValueError(f"p_cand shape {tuple(p.shape)} does not match r_cand shape {tuple(r.shape)}")
    if r.shape[0] < 2 or r.shape[1] < 2 or r.shape[2] < 1:
        raise ValueError(f"r_cand is too small: shape {tuple(r.shape)}")
    return r, p, kind


def _candidate_labels(r, p, lab, xp, log_likelihood):
    """Each candidate's nearest label index and its likelihood rescaled per pixel (0 = unusable)."""
    M, N, K = r.shape
    if log_likelihood:
        # p^ given as log-likelihoods: rescale by the per-pixel max before exp
        valid = xp.isfinite(p) & xp.isfinite(r)
        pm = xp.where(valid, p, -xp.inf).max(axis=2, keepdims=True)
        pm = xp.where(xp.isfinite(pm), pm, 0)
        p = xp.where(valid, xp.exp(xp.where(valid, p, 0) - pm), 0)
    else:
        valid = xp.isfinite(p) & xp.isfinite(r) & (p > 0)
        p = xp.where(valid, p, 0)
        pm = p.max(axis=2, keepdims=True)
        p = p / xp.where(pm > 0, pm, 1)  # scale-free: p~ is normalized below
    # nearest label index of every candidate (candidates outside the range
    # go to the end labels)
    mids = xp.asarray((lab[1:] + lab[:-1]) / 2.0, dtype=r.dtype)
    idx = xp.searchsorted(mids, xp.where(valid, r, 0).ravel()).reshape(M, N, K)
    return idx, p


def _likelihood_lmn(r, p, lab, kap, xp, log_likelihood, dtype):
    """p~ as an (L, M, N) array, plus a mask of pixels with no usable candidate.

    The three steps of §III-B: p_x(r) = 0; p_x(r^_l) = p^_l at the label
    nearest r^_l (the larger value when two candidates share a label);
    convolve with kappa along the labels; normalize to sum 1.
    """
    M, N, K = r.shape
    L = lab.size
    idx, p = _candidate_labels(r, p, lab, xp, log_likelihood)
    P = xp.zeros((L, M, N), dtype=dtype)
    flat = P.reshape(L, M * N)
    pix = xp.arange(M * N)
    for k in range(K):  # K = 3: scatter each candidate into its label (the larger wins)
        at = (idx[:, :, k].ravel(), pix)
        flat[at] = xp.maximum(flat[at], p[:, :, k].ravel().astype(dtype))
    h = kap.size // 2
    Pk = P * dtype.type(kap[h])
    for t in range(1, h + 1):
        if t >= L or kap[h + t] == 0 and kap[h - t] == 0:
            continue
        Pk[t:] += dtype.type(kap[h - t]) * P[:-t]   # p[l - t] * kappa[-t]
        Pk[:-t] += dtype.type(kap[h + t]) * P[t:]   # p[l + t] * kappa[+t]
    S = Pk.sum(axis=0)
    empty = ~(S > 0)
    Pk /= xp.where(empty, 1, S)[None]
    if bool(empty.any()):
        Pk = xp.where(empty[None], dtype.type(1.0 / L), Pk)
    return Pk, empty


def candidate_likelihood(r_cand, p_cand, labels=None, *, kappa=KAPPA, log_likelihood=False, backend=None,
                         dtype=None):
    """The artificial discrete likelihood ``p~_x(r)`` of §III-B (before eq. 15).

    Parameters
    ----------
    r_cand, p_cand : (M, N, K) arrays
        Candidate radii ``r^_k`` (pixels) and likelihood values ``p^_k >= 0``
        (any positive scale; candidates with ``p^ = 0``, NaN ``r^`` or NaN
        ``p^`` are ignored).
    labels : (L,) array, optional
        Increasing label values (default :func:`default_labels`).
    kappa : sequence of odd length
        Label-space kernel (default :data:`KAPPA`, the paper's).
    log_likelihood : bool
        ``p_cand`` holds log-likelihoods (rescaled per pixel before ``exp``,
        so unnormalized log-likelihoods of any magnitude are fine).

    Returns
    -------
    p_tilde : (M, N, L) array
        Sums to 1 over the labels; uniform ``1/L`` where a pixel has no
        usable candidate (flat regions).
    """
    be = get_backend(backend, like=r_cand)
    r, p, kind = _check_candidates(r_cand, p_cand, be)
    lab = default_labels() if labels is None else _check_labels(labels)
    dt = np.dtype(np.float32 if dtype is None else dtype)
    P, _ = _likelihood_lmn(r, p, lab, _check_kappa(kappa), be.xp, log_likelihood, dt)
    return to_output(be.xp.moveaxis(P, 0, -1), kind)


def data_cost_from_candidates(r_cand, p_cand, labels=None, *, kappa=KAPPA, p_floor=P_FLOOR,
                              log_likelihood=False, backend=None, dtype=None):
    """Data term ``D_x(r) = -log p~_x(r)`` of eq. 14 as an ``(M, N, L)`` array.

    ``p~`` is floored at ``p_floor`` (see :data:`P_FLOOR`). Pixels without a
    usable candidate get the uniform cost ``log L``. The returned array is a
    view of an ``(L, M, N)``-contiguous buffer (the solvers' layout).
    """
    be = get_backend(backend, like=r_cand)
    r, p, kind = _check_candidates(r_cand, p_cand, be)
    lab = default_labels() if labels is None else _check_labels(labels)
    dt = np.dtype(np.float32 if dtype is None else dtype)
    p_floor = check_positive(p_floor, "p_floor")
    D = _data_cost_lmn(r, p, lab, _check_kappa(kappa), be.xp, log_likelihood, dt, p_floor)
    return to_output(be.xp.moveaxis(D, 0, -1), kind)


def _data_cost_lmn(r, p, lab, kap, xp, log_likelihood, dt, p_floor, numba_kernel=None):
    """``-log max(p~, p_floor)``, ``(L, M, N)``. On NumPy (float32 and
    float64) a Numba kernel (``_numba_labeling.data_cost``: the same float
    operations, computed only where ``p~`` is non-zero) unless
    ``numba_kernel=False``; the array code below is what CuPy runs (the
    test compares the two under NumPy: equal before the ``log``; CuPy's
    own reduction order and ``log`` differ in the last bits anyway)."""
    if numba_kernel is None:
        numba_kernel = xp is np and dt in (np.dtype(np.float32), np.dtype(np.float64))
    if numba_kernel:
        from . import _numba_labeling  # noqa: PLC0415

        M, N, _ = r.shape
        idx, pv = _candidate_labels(r, p, lab, xp, log_likelihood)
        t = dt.type
        # the two constant costs through NumPy's own log, as the array code takes them
        floor_cost = -np.log(np.full(1, p_floor, dt))[0]
        empty_cost = -np.log(np.maximum(np.full(1, 1.0 / lab.size, dt), t(p_floor)))[0]
        out = np.empty((lab.size, M, N), dtype=dt)
        _numba_labeling.data_cost(np.ascontiguousarray(idx, dtype=np.intp), np.ascontiguousarray(pv, dtype=dt),
                                  np.asarray(kap, dtype=dt), t(p_floor), t(floor_cost), t(empty_cost), out)
        return out
    P, _ = _likelihood_lmn(r, p, lab, kap, xp, log_likelihood, dt)
    xp.maximum(P, dt.type(p_floor), out=P)
    xp.log(P, out=P)
    xp.negative(P, out=P)
    return P


def _in_focus_cost_from_lmn(P, lab, tau, p_floor, xp):
    """Eq. 18 from p~ (L, M, N): (2, M, N) with D(0) blurry, D(1) in focus."""
    small = lab <= tau
    if small.all() or not small.any():
        raise ValueError(f"tau={tau} must lie inside the label range [{lab[0]}, {lab[-1]})")
    k = int(np.count_nonzero(small))  # labels increasing: the first k are <= tau
    d1 = P[:k].max(axis=0)
    d0 = P[k:].max(axis=0)
    U = xp.stack([d0, d1])
    return -xp.log(xp.maximum(U, U.dtype.type(p_floor)))


def in_focus_data_cost(radius_map=None, *, r_cand=None, p_cand=None, tau=2.0, labels=None, kappa=KAPPA,
                       p_floor=P_FLOOR, log_likelihood=False, backend=None, dtype=None):
    """Data term of the in-focus segmentation (eq. 18) as an ``(M, N, 2)`` array.

    ``D_x(0) = -log max_{r > tau} p~_x(r)`` (blurry) and
    ``D_x(1) = -log max_{r <= tau} p~_x(r)`` (in focus).

    With ``r_cand``/``p_cand`` given, ``p~`` is the paper's candidate
    likelihood (:func:`candidate_likelihood`). With only a ``radius_map``
    (the coherent map of eq. 14), ``p~`` is built the same way from the
    single candidate ``r^ = radius_map`` (``p^ = 1``), so that
    ``D(1) = 0.18`` well below ``tau``, about ``2.5`` one step across the
    threshold and ``-log p_floor`` far beyond it (and vice versa for
    ``D(0)``).
    """
    if (r_cand is None) != (p_cand is None):
        raise ValueError("give both r_cand and p_cand, or neither")
    if r_cand is None:
        if radius_map is None:
            raise ValueError("give radius_map or r_cand/p_cand")
        be = get_backend(backend, like=radius_map)
        rm, kind = as_backend_array(radius_map, be, name="radius_map")
        if rm.ndim != 2:
            raise ValueError(f"radius_map must be 2-D (M, N), got shape {tuple(rm.shape)}")
        r, p = rm[..., None], be.xp.ones_like(rm)[..., None]
    else:
        be = get_backend(backend, like=r_cand)
        r, p, kind = _check_candidates(r_cand, p_cand, be)
    tau = check_positive(tau, "tau", allow_zero=True)
    lab = default_labels() if labels is None else _check_labels(labels)
    dt = np.dtype(np.float32 if dtype is None else dtype)
    P, _ = _likelihood_lmn(r, p, lab, _check_kappa(kappa), be.xp, log_likelihood and r_cand is not None, dt)
    U = _in_focus_cost_from_lmn(P, lab, tau, check_positive(p_floor, "p_floor"), be.xp)
    return to_output(be.xp.moveaxis(U, 0, -1), kind)


# ---------------------------------------------------------------------------
# energy
# ---------------------------------------------------------------------------


def _check_weights(W, M, N, name="weights"):
    if W.ndim != 3 or W.shape[0] not in (2, 4) or W.shape[1:] != (M, N):
        raise ValueError(f"{name} must be (4, M, N) or (2, M, N) = ({M}, {N}) edge weights, "
                         f"got shape {tuple(W.shape)}")


def _energy_lmn(lab_idx, D, W, vals, xp):
    """Energy (eq. 14) of an integer labeling; D (L, M, N), W (E, M, N), vals (L,) on xp. float64."""
    data = xp.take_along_axis(D, lab_idx[None].astype(np.intp), axis=0).sum(dtype=np.float64)
    return float(data) + _pairwise_energy(lab_idx, W, vals, xp)


def _pairwise_energy(lab_idx, W, vals, xp):
    """Smoothness part of eq. 14 of an integer labeling (float64)."""
    M, N = lab_idx.shape
    r = vals[lab_idx]
    pair = 0.0
    for d, (di, dj) in enumerate(EDGE_OFFSETS[: W.shape[0]]):
        src, dst = _edge_slices(di, dj, M, N)
        pair = pair + (W[(d,) + src].astype(np.float64) * xp.abs(r[dst] - r[src])).sum()
    return float(pair)


def labeling_energy(labels_idx, data_cost, weights, label_values) -> float:
    """Energy of eq. 14 / eq. 17 for an integer labeling (float64 sum).

    ``E = sum_x data_cost[x, labels_idx[x]]
    + sum_d sum_x weights[d, x] * |label_values[l_x] - label_values[l_{x + EDGE_OFFSETS[d]}]|``

    Parameters
    ----------
    labels_idx : (M, N) int array
        Label index per pixel (0 .. L-1).
    data_cost : (M, N, L) array
    weights : (E, M, N) array
        From :func:`edge_weights` (E = 4 for 8 neighbours, 2 for 4).
    label_values : (L,) array
        Value of each label (radii; ``[0, 1]`` for the binary problem).
    """
    xp = array_module(data_cost)  # evaluate where the data cost lives

    def _as(a):
        return xp.asarray(a.get() if xp is np and hasattr(a, "get") and not isinstance(a, np.ndarray) else a)

    D = _as(data_cost)
    if D.ndim != 3:
        raise ValueError(f"data_cost must be (M, N, L), got shape {tuple(D.shape)}")
    M, N, L = D.shape
    lab_idx = _as(labels_idx)
    if lab_idx.shape != (M, N):
        raise ValueError(f"labels_idx shape {tuple(lab_idx.shape)} does not match data_cost (M, N) = ({M}, {N})")
    W = _as(weights)
    _check_weights(W, M, N)
    vals = xp.asarray(_check_labels(label_values), dtype=np.float64)
    if vals.size != L:
        raise ValueError(f"label_values has {vals.size} entries but data_cost has L = {L} labels")
    if int(lab_idx.min()) < 0 or int(lab_idx.max()) >= L:
        raise ValueError(f"labels_idx must lie in [0, {L - 1}]")
    return _energy_lmn(lab_idx, xp.moveaxis(D, -1, 0), W, vals, xp)


# ---------------------------------------------------------------------------
# CPU reference solvers (PyMaxflow)
# ---------------------------------------------------------------------------


def _maxflow():
    try:
        import maxflow  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("the 'exact', 'alpha-expansion' and 'min-cut' solvers need PyMaxflow "
                          "(pip install PyMaxflow)") from exc
    return maxflow


def _structure(ndim, offset):
    s = np.zeros((3,) * ndim, dtype=np.float64)
    s[tuple(1 + o for o in offset)] = 1.0
    return s


def _solve_exact(D, W, vals):
    """Ishikawa's graph for the convex prior |r_x - r_v|: global minimum.

    Node (k-1, x) is ``u_k(x) = [l_x >= k]``, k = 1..L-1, sink side = 1.
    Unary: D_x(l) = D_x(0) + sum_{k<=l} (D_x(k) - D_x(k-1)); pairwise:
    |r_a - r_b| = sum_k (r_k - r_{k-1}) |u_k(a) - u_k(b)| within each layer;
    infinite edges k-1 -> k forbid u_k = 1 with u_{k-1} = 0.
    """
    maxflow = _maxflow()
    L, M, N = D.shape
    K = L - 1
    D = np.asarray(D, dtype=np.float64)
    c = D[1:] - D[:-1]
    delta = np.diff(vals)
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes((K, M, N))
    g.add_grid_tedges(nodes, np.maximum(c, 0.0), np.maximum(-c, 0.0))
    W = np.asarray(W, dtype=np.float64)
    for d, (di, dj) in enumerate(EDGE_OFFSETS[: W.shape[0]]):
        g.add_grid_edges(nodes, weights=W[d][None] * delta[:, None, None], structure=_structure(3, (0, di, dj)),
                         symmetric=True)
    if K > 1:
        big = 1.0 + np.abs(c).sum() + 2.0 * W.sum() * (vals[-1] - vals[0])
        g.add_grid_edges(nodes, weights=big, structure=_structure(3, (1, 0, 0)), symmetric=False)
    g.maxflow()
    seg = g.get_grid_segments(nodes)
    return seg.sum(axis=0).astype(np.int32)


def _expansion_move(maxflow, D, W, vals, lab, a):
    """One alpha-expansion move (Boykov et al. 2001; Kolmogorov & Zabih 2004 construction).

    Binary y_x = 1: switch to label a. Pairwise table of an edge (s, t):
    E00 = w|r_s - r_t|, E01 = w|r_s - r_a|, E10 = w|r_a - r_t|, E11 = 0,
    written as E00 + (E10 - E00) y_s - E10 y_t + (E01 + E10 - E00)(1 - y_s) y_t.
    """
    L, M, N = D.shape
    cur = np.take_along_axis(D, lab[None], axis=0)[0]
    du = D[a] - cur  # cost of y = 1 minus cost of y = 0
    r = vals[lab]
    ra = vals[a]
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes((M, N))
    for d, (di, dj) in enumerate(EDGE_OFFSETS[: W.shape[0]]):
        src, dst = _edge_slices(di, dj, M, N)
        w = W[d][src]
        A = w * np.abs(r[src] - r[dst])
        B = w * np.abs(r[src] - ra)
        C = w * np.abs(ra - r[dst])
        du[src] += C - A
        du[dst] -= C
        cap = np.zeros((M, N))
        cap[src] = np.maximum(B + C - A, 0.0)
        g.add_grid_edges(nodes, weights=cap, structure=_structure(2, (di, dj)), symmetric=False)
    g.add_grid_tedges(nodes, np.maximum(du, 0.0), np.maximum(-du, 0.0))
    g.maxflow()
    y = g.get_grid_segments(nodes)
    return np.where(y, a, lab).astype(np.int32)


def _solve_alpha_expansion(D, W, vals, max_cycles, init=None):
    maxflow = _maxflow()
    D = np.asarray(D, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    lab = (D.argmin(axis=0) if init is None else np.asarray(init)).astype(np.int32)
    E = _energy_lmn(lab, D, W, vals, np)
    cycles = 0
    for cycles in range(1, max_cycles + 1):
        improved = False
        for a in range(D.shape[0]):
            new = _expansion_move(maxflow, D, W, vals, lab, a)
            En = _energy_lmn(new, D, W, vals, np)
            if En < E - 1e-9 * max(1.0, abs(E)):
                lab, E, improved = new, En, True
        if not improved:
            break
    return lab, E, cycles


# ---------------------------------------------------------------------------
# GPU-parallel solver: primal-dual on the lifted LP (both backends)
# ---------------------------------------------------------------------------


def _lifted_empty(be: Backend, lead, K, M, N, dtype):
    """A ``lead + (K, M, N)`` array in the backend's lifted memory order.

    CUDA: label-major (C order), so adjacent threads touch adjacent pixels.
    CPU: pixel-major (label axis last in memory), so the Numba kernels walk
    one pixel's labels contiguously; the array code sees the same
    ``(K, M, N)`` axes through a view.
    """
    xp = be.xp
    lead = tuple(lead)
    if be.name == "cuda":
        return xp.empty(lead + (K, M, N), dtype=dtype)
    return xp.moveaxis(xp.empty(lead + (M, N, K), dtype=dtype), -1, len(lead))


def _as_lifted(be: Backend, a, dtype=None):
    """``a`` (``(..., K, M, N)``) in the backend's lifted memory order (a copy unless it already is)."""
    if (dtype is None or a.dtype == dtype) and _is_lifted(be, a):
        return a
    out = _lifted_empty(be, a.shape[:-3], *a.shape[-3:], a.dtype if dtype is None else dtype)
    out[...] = a
    return out


def _is_lifted(be: Backend, a) -> bool:
    order = a if be.name == "cuda" else be.xp.moveaxis(a, -3, -1)
    return bool(order.flags.c_contiguous)


def _pixel_major(a):
    """The C-contiguous ``(..., M, N, K)`` array behind a CPU lifted view ``(..., K, M, N)``."""
    v = np.moveaxis(a, -3, -1)
    if not v.flags.c_contiguous:
        raise RuntimeError("lifted arrays must be allocated by _lifted_empty (pixel-major on the CPU)")
    return v


def _lifted_primal(be: Backend, u, G, ubar, tau):
    """Custom kernel: per-pixel projection onto the monotone lifted set + over-relaxation."""
    if be.name == "cuda":
        from .._kernels import cuda_function  # noqa: PLC0415  (lazy: compiled on first use)

        K = u.shape[0]
        npix = tau.size
        threads = 128
        blocks = max(1, min((npix + threads - 1) // threads, 65535 * 8))
        f = cuda_function(be, "labeling.cu", "lifted_primal_kernel", u.dtype)
        f((blocks,), (threads,), (u, G, ubar, tau, np.int64(npix), np.int32(K)))
    else:
        from . import _numba_labeling  # noqa: PLC0415

        _numba_labeling.lifted_primal(_pixel_major(u), _pixel_major(G), _pixel_major(ubar), tau)


def _lifted_dual(be: Backend, ubar, P, W, delta, sigma):
    """Custom kernel: dual step of all edge variables ``P`` (E, K, M, N), in place."""
    if be.name == "cuda":
        from .._kernels import cuda_function  # noqa: PLC0415

        E, K, M, N = P.shape
        f = cuda_function(be, "labeling.cu", "lifted_dual_kernel", P.dtype)
        f(((N + 31) // 32, (M + 7) // 8, K), (32, 8, 1),
          (ubar, P, W, delta, np.int32(K), np.int32(M), np.int32(N), np.int32(E), P.dtype.type(sigma)))
    else:
        from . import _numba_labeling  # noqa: PLC0415

        _numba_labeling.lifted_dual(_pixel_major(ubar), _pixel_major(P), W, delta, P.dtype.type(sigma))


#: The fused primal kernel loads the next label step's inputs while it merges
#: this step's PAVA blocks (same result either way). H200, one 866² tile,
#: K = 80, float32 (``bench/profile_labeling.py``): 5.50 ms with, 5.69 ms
#: without (the kernel's byte floor 0.77 ms).
_FUSED_PREFETCH = True


def _lifted_primal_fused(be: Backend, u, ubar, scratch, c, P, tau, lb, prefetch=None):
    """Custom kernel: primal step with ``G = c + K^T p`` on the fly; per-pixel dual bound in ``lb``.

    ``prefetch``: the CUDA kernel's variant (default :data:`_FUSED_PREFETCH`;
    ``bench/profile_labeling.py`` times both); ignored by the Numba twin.
    """
    if P.shape[1] == 0:  # no label step: nothing to project (the kernel assumes K >= 1)
        lb[...] = 0
        return
    if be.name == "cuda":
        from .._kernels import cuda_function  # noqa: PLC0415

        E, K, M, N = P.shape
        prefetch = _FUSED_PREFETCH if prefetch is None else bool(prefetch)
        f = cuda_function(be, "labeling.cu", "lifted_primal_fused_kernel", u.dtype)
        f(((N + 31) // 32, (M + 7) // 8, 1), (32, 8, 1),
          (u, ubar, scratch, c, P, tau, lb, np.int32(K), np.int32(M), np.int32(N), np.int32(E), np.int32(prefetch)))
    else:
        from . import _numba_labeling  # noqa: PLC0415

        _numba_labeling.lifted_primal_fused(_pixel_major(u), _pixel_major(ubar), _pixel_major(scratch),
                                            _pixel_major(c), _pixel_major(P), tau, lb)


def _primal_dual(D, W, vals, be: Backend, max_iter, tol, check_every=10, balance=None, init=None, fused=True,
                 warm=None):
    """Diagonally preconditioned primal-dual (Chambolle-Pock) on the lifted LP.

    Primal ``u`` (K = L-1, M, N), ``u_k(x) ~ [l_x >= k]``, in the set
    ``C = {1 >= u_1 >= ... >= u_K >= 0}`` per pixel:

        min_{u in C}  sum_x D_x(0) + <c, u> + sum_k delta_k sum_e w_e |u_k(s_e) - u_k(t_e)|,
        c_k = D(k) - D(k-1),  delta_k = r_k - r_{k-1}.

    The edge terms are dualized (``p_d`` per direction and layer,
    ``|p| <= w_e delta_k``); the data term and ``C`` stay in the primal
    step, whose prox is a per-pixel isotonic regression (custom kernel
    ``lifted_primal``). For any feasible ``p``,
    ``sum_x D_x(0) + sum_x min(0, min_k sum_{j<=k} (c + K^T p)_j)`` is a
    lower bound on the discrete optimum (weak LP duality); the relaxation is
    exact, so the best thresholded ``u`` converges to a global minimizer.
    """
    xp = be.xp
    L, M, N = D.shape
    K = L - 1
    dt = D.dtype
    t = dt.type
    E = W.shape[0]
    offs = EDGE_OFFSETS[:E]
    vals_x = xp.asarray(vals, dtype=np.float64)
    D0sum = float(D[0].sum(dtype=np.float64))
    c = _as_lifted(be, D[1:] - D[:-1])
    delta = np.diff(vals)
    uniform = bool(np.allclose(delta, delta[0], rtol=1e-6, atol=0))
    slices = [_edge_slices(di, dj, M, N) for di, dj in offs]
    bounds = []
    for d, (src, dst) in enumerate([] if fused else slices):
        if uniform:
            bounds.append((W[d][src] * t(delta[0]))[None])
        else:
            bounds.append(W[d][src][None] * xp.asarray(delta, dtype=dt)[:, None, None])
    # diagonal preconditioning (Pock & Chambolle 2011): column sums of |K| =
    # incident edges of the pixel; row sums = 2. ``balance`` trades primal
    # against dual step (u lives in [0, 1], p in [-w delta, w delta]).
    deg = xp.zeros((M, N), dtype=dt)
    for src, dst in slices:
        deg[src] += 1
        deg[dst] += 1
    if balance is None:
        balance = _default_balance(W, slices, delta)
    s = float(balance)
    tau = xp.ascontiguousarray((1.0 / (s * deg)).astype(dt))
    sig = t(s / 2.0)

    if warm is not None:  # (u, P) from a coarser level: _prolong
        if not fused:
            raise ValueError("warm start needs the fused kernels")
        u, P = (_as_lifted(be, a, dt) for a in warm)
        init = (u > t(0.5)).sum(axis=0)
    else:
        if init is None:
            init = D.argmin(axis=0)
        kk = xp.arange(1, L).reshape(K, 1, 1)
        u = _as_lifted(be, init[None] >= kk, dt)
        if fused:
            P = _lifted_empty(be, (E,), K, M, N, dt)
            P[...] = 0
    ubar = _lifted_empty(be, (), K, M, N, dt)
    ubar[...] = u
    if fused:  # two custom kernels per iteration (dual; primal with K^T p on the fly)
        Wc = xp.ascontiguousarray(W, dtype=dt)
        delta_x = xp.asarray(delta, dtype=dt)
        scratch = _lifted_empty(be, (), K, M, N, dt)
        lbpix = xp.empty((M, N), dtype=dt)
    else:  # plain array code (reference for the kernels; same iterates)
        p = [xp.zeros((K, src[0].stop - src[0].start, src[1].stop - src[1].start), dtype=dt) for src, _ in slices]
        G = _lifted_empty(be, (), K, M, N, dt)

    best_lab = init.astype(np.int32)
    best_E = _energy_lmn(best_lab, D, W, vals_x, xp)
    best_lb = -np.inf
    it = 0
    gap = np.inf
    history = []
    for it in range(1, max_iter + 1):
        check = (it % check_every == 0) or it == max_iter
        if fused:
            _lifted_dual(be, ubar, P, Wc, delta_x, sig)
            _lifted_primal_fused(be, u, ubar, scratch, c, P, tau, lbpix)
            if check:
                best_lb = max(best_lb, D0sum + float(lbpix.sum(dtype=np.float64)))
        else:
            best_lb = _pd_step_xp(xp, u, ubar, G, c, p, bounds, slices, tau, sig, be, check, D0sum, best_lb)
        if check:
            lab = (u > t(0.5)).sum(axis=0).astype(np.int32)
            En = _energy_lmn(lab, D, W, vals_x, xp)
            if En < best_E:
                best_E, best_lab = En, lab
            gap = (best_E - best_lb) / max(abs(best_E), 1e-12)
            history.append((it, best_E, best_lb))
            if gap <= tol:
                break
    # final: other thresholds of the relaxed solution (coarea formula)
    if gap > tol:
        for th in (0.1, 0.25, 0.4, 0.6, 0.75, 0.9):
            lab = (u > t(th)).sum(axis=0).astype(np.int32)
            En = _energy_lmn(lab, D, W, vals_x, xp)
            if En < best_E:
                best_E, best_lab = En, lab
        gap = (best_E - best_lb) / max(abs(best_E), 1e-12)
    info = dict(energy=best_E, lower_bound=best_lb, gap=gap, iterations=it, converged=bool(gap <= tol),
                history=history, balance=s)
    if fused:
        info["state"] = (u, P)
    return best_lab, info


# ---------------------------------------------------------------------------
# coarse-to-fine warm start of the primal-dual solver
# ---------------------------------------------------------------------------
#
# A 2x2 block of pixels is one coarse pixel. A coarse labeling (constant on
# blocks) has exactly the fine energy of the coarse problem whose data cost is
# the sum over the block and whose edge weight between two blocks is the sum
# of the fine edge weights crossing between them (4 fine edges between side
# neighbours: 2 straight + 2 diagonal; 1 between corner neighbours). The
# coarse solution (u, P) is prolonged back: u by replication, each coarse
# edge variable shared among its fine edges in proportion to their weights
# (so the fine |p_e| <= w_e delta still holds and K^T p aggregates back to
# the coarse one), 0 on edges inside a block. The fine level then only has to
# correct details: the slow part of primal-dual, propagating the smoothness
# across the image, was done on 4x (16x, ...) fewer pixels. The fine level is
# still run to its own certified gap, so this changes speed, not the result's
# guarantee.


def _edge_map(d: int, pi: int, pj: int):
    """Where fine edge direction ``d`` from a pixel of parity ``(pi, pj)`` lands.

    Returns ``None`` (edge inside a 2x2 block) or ``(dc, si, sj, sign)``:
    coarse direction ``dc``, offset ``(si, sj)`` of the coarse *source* block
    relative to the fine source's block, and the orientation ``sign`` (-1
    when the fine edge runs against the coarse one).
    """
    di, dj = EDGE_OFFSETS[d]
    bi, bj = (pi + di) // 2, (pj + dj) // 2  # destination block offset
    if (bi, bj) == (0, 0):
        return None
    for dc, off in enumerate(EDGE_OFFSETS):
        if (bi, bj) == off:
            return dc, 0, 0, 1.0
        if (bi, bj) == (-off[0], -off[1]):
            return dc, bi, bj, -1.0
    raise AssertionError("unreachable")


def _crossing_edges(E: int):
    """``(d, pi, pj, dc, si, sj, sign)`` for every fine edge class that crosses between blocks."""
    for d in range(E):
        for pi in (0, 1):
            for pj in (0, 1):
                m = _edge_map(d, pi, pj)
                if m is not None:
                    yield (d, pi, pj) + m


def _pad_even(a, xp):
    """``a`` (..., M, N) zero-padded to even ``M`` and ``N`` (whole 2x2 blocks)."""
    M, N = a.shape[-2:]
    out = xp.zeros(a.shape[:-2] + (M + M % 2, N + N % 2), dtype=a.dtype)
    out[..., :M, :N] = a
    return out


def _coarsen(D, W, xp):
    """Coarse problem ``(Dc, Wc)`` of 2x2 blocks (see above). ``D``: (L, M, N); ``W``: (E, M, N)."""
    L, M, N = D.shape
    E = W.shape[0]
    Mc, Nc = (M + 1) // 2, (N + 1) // 2
    Dp = _pad_even(D, xp)
    Dc = Dp[:, 0::2, 0::2] + Dp[:, 1::2, 0::2] + Dp[:, 0::2, 1::2] + Dp[:, 1::2, 1::2]
    # weights on a grid with one extra block on each side, so that shifted
    # coarse sources stay in range; out-of-image fine weights are 0 already
    Wp = _pad_even(W, xp)
    Wc = xp.zeros((E, Mc + 2, Nc + 2), dtype=W.dtype)
    for d, pi, pj, dc, si, sj, _ in _crossing_edges(E):
        Wc[dc, 1 + si : 1 + si + Mc, 1 + sj : 1 + sj + Nc] += Wp[d, pi::2, pj::2]
    return xp.ascontiguousarray(Dc), xp.ascontiguousarray(Wc[:, 1:-1, 1:-1])


def _prolong(u_c, P_c, W, Wc, be: Backend):
    """Fine ``(u, P)`` from the coarse solution (see above), written straight
    into the backend's lifted arrays (:func:`_lifted_empty`): no fine-sized
    temporaries, so the pyramid's finest prolongation holds one fine ``P``."""
    xp = be.xp
    K = u_c.shape[0]
    E, M, N = W.shape
    Mc, Nc = u_c.shape[1:]
    u = _lifted_empty(be, (), K, M, N, u_c.dtype)
    for pi in (0, 1):
        for pj in (0, 1):
            tgt = u[:, pi::2, pj::2]
            tgt[...] = u_c[:, : tgt.shape[1], : tgt.shape[2]]
    # share of each coarse edge variable per unit fine weight (coarse-sized, padded by one)
    has = Wc > 0
    rp = xp.zeros((E, K, Mc + 2, Nc + 2), dtype=P_c.dtype)
    rp[:, :, 1:-1, 1:-1] = xp.where(has[:, None], P_c / xp.where(has, Wc, 1)[:, None], 0)
    Wp = _pad_even(W, xp)
    P = _lifted_empty(be, (E,), K, M, N, P_c.dtype)
    P[...] = 0
    for d, pi, pj, dc, si, sj, sign in _crossing_edges(E):
        tgt = P[d, :, pi::2, pj::2]
        mi, nj = tgt.shape[1:]
        r = rp[dc, :, 1 + si : 1 + si + mi, 1 + sj : 1 + sj + nj]
        tgt[...] = (sign * r) * Wp[d, pi : pi + 2 * mi : 2, pj : pj + 2 * nj : 2][None]
    return u, P


#: Coarse levels stop when the short side would drop below this.
PYRAMID_MIN_SIDE = 64


def _pyramid_levels(shape, min_side=PYRAMID_MIN_SIDE) -> int:
    levels, m = 0, min(shape)
    while m // 2 >= min_side:
        m //= 2
        levels += 1
    return levels


def _primal_dual_multiscale(D, W, vals, be: Backend, max_iter, tol, levels=None, min_side=PYRAMID_MIN_SIDE,
                            coarse_tol=None):
    """Coarse-to-fine primal-dual: solve 2x2-block problems first, warm-start each finer level.

    ``levels`` coarse levels (default: halve while the short side stays
    >= ``min_side``). Coarse levels run to ``coarse_tol`` (default
    ``max(tol, 0.01)``) or ``max_iter``. Returns the finest level's result,
    with ``levels`` and per-level ``level_iterations`` in ``info``.
    """
    xp = be.xp
    if levels is None:
        levels = _pyramid_levels(D.shape[1:], min_side)
    coarse_tol = max(tol, 0.01) if coarse_tol is None else coarse_tol
    problems = [(D, W)]
    for _ in range(levels):
        problems.append(_coarsen(*problems[-1], xp))
    warm = None
    its = []
    for lev in range(levels, -1, -1):
        Dl, Wl = problems[lev]
        if warm is not None:
            warm = _prolong(*warm, Wl, problems[lev + 1][1], be)
        lab, info = _primal_dual(Dl, Wl, vals, be, max_iter, tol if lev == 0 else coarse_tol, warm=warm)
        warm = info.pop("state")  # the only reference: freed once prolonged
        its.append(int(info["iterations"]))
    info["state"] = warm
    info["levels"] = levels
    info["level_iterations"] = its[::-1]  # finest first
    return lab, info


# ---------------------------------------------------------------------------
# coarse-to-fine in the labels
# ---------------------------------------------------------------------------
#
# The cost of an iteration grows with the number of label steps K. Every
# ``step``-th label (both end labels kept) makes a coarse problem whose data
# cost at a coarse label is the smallest fine cost in its bin (the fine
# labels nearer to it than to the other coarse labels), so the narrow wells
# of -log p~ around each candidate are not stepped over. Its solution warms
# the fine problem: fine layer k lies in the coarse step j that covers it,
# u_k = u_c[j], and the coarse edge variable is split over the fine layers
# of its step in proportion to their label steps (p_k = p_c[j] delta_k /
# Delta_j), which keeps |p_k| <= w delta_k and gives the same K^T p summed
# over the step. The fine problem is then run to its own certified gap, so
# this too changes the speed, not the guarantee.


def _label_groups(L: int, step: int):
    """Coarse label indices (0, step, 2 step, ..., L-1) and, per fine layer k = 1..L-1, its coarse layer."""
    idx = list(range(0, L - 1, step)) + [L - 1]
    layer = np.searchsorted(np.asarray(idx), np.arange(1, L), side="left")  # 1-based coarse layer
    return np.asarray(idx), layer


def _coarsen_labels(D, vals, step, xp):
    """Coarse ``(Dc, vals_c)``: min of ``D`` over each coarse label's bin."""
    L = D.shape[0]
    idx, _ = _label_groups(L, step)
    mids = (idx[1:] + idx[:-1]) / 2.0
    lo = np.concatenate([[0], np.floor(mids).astype(int) + 1])
    hi = np.concatenate([np.floor(mids).astype(int) + 1, [L]])
    Dc = xp.stack([D[a:b].min(axis=0) for a, b in zip(lo, hi)])
    return Dc, np.asarray(vals)[idx]


def _prolong_labels(u_c, P_c, vals, step, be: Backend):
    """Fine lifted ``(u, P)`` from the coarse-label solution (see above), in the lifted memory order."""
    L = len(vals)
    idx, layer = _label_groups(L, step)
    delta = np.diff(np.asarray(vals, dtype=np.float64))
    Delta = np.diff(np.asarray(vals, dtype=np.float64)[idx])
    E, Kc, M, N = P_c.shape
    u_c, P_c = _as_lifted(be, u_c), _as_lifted(be, P_c)  # no copy for a solver state
    u = _lifted_empty(be, (), L - 1, M, N, u_c.dtype)
    P = _lifted_empty(be, (E,), L - 1, M, N, P_c.dtype)
    frac = (delta / Delta[layer - 1]).astype(P_c.dtype)
    if be.name == "cpu":  # pixel-major: gather along the contiguous label axis, one row per thread
        from . import _numba_labeling  # noqa: PLC0415

        _numba_labeling.prolong_labels(_pixel_major(u_c), _pixel_major(P_c), (layer - 1).astype(np.intp), frac,
                                       _pixel_major(u), _pixel_major(P))
    else:  # one fine layer at a time: no full-size temporaries
        for k in range(L - 1):
            j = int(layer[k]) - 1
            u[k] = u_c[j]
            P[:, k] = P_c[:, j] * frac[k]
    return u, P


def _primal_dual_labels(D, W, vals, be: Backend, max_iter, tol, steps=(5,), coarse_tol=None, multiscale=False):
    """Primal-dual warm-started by coarser label sets.

    ``steps``: label subsampling factors, finest first: ``(5,)`` solves the
    problem on every 5th label, then the full one; ``(2, 5)`` goes through
    every 2nd and every 10th label. Coarse problems run to ``coarse_tol``
    (default ``max(tol, 0.01)``), the coarsest one coarse-to-fine in space
    too when ``multiscale``; the full one runs to ``tol``. ``info`` gains
    ``label_steps`` and ``label_iterations`` (iterations per label level,
    finest first).
    """
    xp = be.xp
    coarse_tol = max(tol, 0.01) if coarse_tol is None else coarse_tol
    step = int(steps[0])
    Dc, vc = _coarsen_labels(D, vals, step, xp)
    if len(steps) > 1:
        _, ci = _primal_dual_labels(Dc, W, vc, be, max_iter, coarse_tol, steps[1:], coarse_tol, multiscale)
    elif multiscale and _pyramid_levels(D.shape[1:]) > 0:
        _, ci = _primal_dual_multiscale(Dc, W, vc, be, max_iter, coarse_tol)
    else:
        _, ci = _primal_dual(Dc, W, vc, be, max_iter, coarse_tol)
    warm = _prolong_labels(*ci.pop("state"), vals, step, be)
    del Dc
    lab, info = _primal_dual(D, W, vals, be, max_iter, tol, warm=warm)
    for key in ("levels", "level_iterations"):  # spatial levels of the coarsest label level
        if key in ci:
            info[key] = ci[key]
    info["label_steps"] = tuple(int(s) for s in steps)
    info["label_iterations"] = [int(info["iterations"])] + list(ci.get("label_iterations", [ci["iterations"]]))
    return lab, info


def _pd_step_xp(xp, u, ubar, G, c, p, bounds, slices, tau, sig, be, check, D0sum, best_lb):
    """One primal-dual iteration in plain array code (the kernels' reference)."""
    full = (slice(None),)
    # dual ascent on the edge variables, at the over-relaxed point
    for d, (src, dst) in enumerate(slices):
        g = G[full + src]
        xp.subtract(ubar[full + dst], ubar[full + src], out=g)
        g *= sig
        p[d] += g
        xp.clip(p[d], -bounds[d], bounds[d], out=p[d])
    # G = c + K^T p
    G[...] = c
    for d, (src, dst) in enumerate(slices):
        G[full + src] -= p[d]
        G[full + dst] += p[d]
    if check:
        pref = xp.cumsum(G, axis=0)
        lb = D0sum + float(xp.minimum(pref.min(axis=0), 0).sum(dtype=np.float64))
        del pref
        best_lb = max(best_lb, lb)
    # primal: u <- proj_C(u - tau G), ubar <- 2 u_new - u_old (G is scratch)
    _lifted_primal(be, u, G, ubar, tau)
    return best_lb


def _default_balance(W, slices, delta):
    """Dual/primal step balance: the mean edge bound ``w_e delta_k`` (the scale of ``p``).

    Tried 0.25x to 4x of it on random and planted problems: 1x was best or
    near best on all.
    """
    tot = sum(float(W[d][src].sum(dtype=np.float64)) for d, (src, _) in enumerate(slices))
    n = sum(W[d][src].size for d, (src, _) in enumerate(slices))
    return max(tot / max(n, 1) * float(np.mean(delta)), 1e-3)


# ---------------------------------------------------------------------------
# public solvers
# ---------------------------------------------------------------------------

_PD_DEFAULTS = dict(max_iter=3000, tol=1e-2)
#: Primal-dual gap tolerance of the blur-map labeling (:func:`coherent_labeling`).
#: Certifies the energy within 3 % of the global optimum. What the issue asks
#: is an energy within 1 % of α-expansion's (the paper's optimizer) or lower,
#: and α-expansion itself stops 1–3 % above the optimum on real maps. Measured
#: on 2 CPU cores at 500x500 (81 labels):
#:
#: ============================  ===========  ==============  =======
#: problem, tol                  time         E vs α-exp.     map MSE
#: ============================  ===========  ==============  =======
#: pipeline timing map, 0.01     34.4 s       −0.94 %         5.853
#: pipeline timing map, 0.02     24.2 s       −0.57 %         5.864
#: pipeline timing map, 0.03     18.9 s       −0.28 %         5.845
#: real astronaut map, 0.01      28.8 s       −2.83 %
#: real astronaut map, 0.03      18.5 s       −1.41 %
#: ============================  ===========  ==============  =======
#:
#: (α-expansion: 120 s and 133 s.) Pass ``tol=1e-2`` for the 1 % certificate.
BLURMAP_TOL = 3e-2


def _label_range(D, be: Backend):
    """Exact label pruning: the smallest index range ``[lo, hi]`` that holds a global minimizer.

    If every pixel's cost at ``hi`` is no larger than at any label above it,
    clamping any labeling to ``<= hi`` does not raise the data term, and
    cannot raise the pairwise term (clamping is 1-Lipschitz, so
    ``|r_s - r_t|`` does not grow); likewise from below at ``lo``. So the
    problem restricted to ``[lo, hi]`` has the same optimum. With the
    ``p~`` data term all labels beyond every pixel's candidates cost the
    same floor, plus ``radius_prior * r`` when set, so on a photo whose
    largest blur is well below ``max_radius`` the top labels drop out.
    """
    xp = be.xp
    L = D.shape[0]
    ok_hi = xp.zeros(L, dtype=bool)
    ok_lo = xp.zeros(L, dtype=bool)
    run = D[L - 1].copy()
    ok_hi[L - 1] = True
    for h in range(L - 2, -1, -1):
        ok_hi[h] = (D[h] <= run).all()
        xp.minimum(run, D[h], out=run)
    run = D[0].copy()
    ok_lo[0] = True
    for h in range(1, L):
        ok_lo[h] = (D[h] <= run).all()
        xp.minimum(run, D[h], out=run)
    ok_hi, ok_lo = be.to_host(ok_hi), be.to_host(ok_lo)
    hi = int(np.flatnonzero(ok_hi)[0])
    lo = int(np.flatnonzero(ok_lo)[-1])
    if lo > hi:  # both clampings valid: any label in [hi, lo] is optimal for every pixel
        lo = hi
    return lo, hi


#: Spatial coarse-to-fine warm start of the blur map's coarse label level
#: (``multiscale`` of :func:`coherent_labeling`; the generic
#: :func:`solve_multilabel` keeps it off). Measured on 2 CPU cores with the
#: 3 % certificate (session 20; session 3's "equal or slower" was at the 1 %
#: certificate, before the label levels' tuning and the pipeline's window
#: 51 and radius prior): coarse label iterations roughly halve (1 MP
#: astronaut, ramp 0→6, pipeline settings: 90 → 40, plus 40/30/20/20 on the
#: 1/4, 1/16, ... levels), and the labeling 19.8 → 12.5 s at radius prior 2,
#: 25.4 → 21.1 s at 0 (the paper's energy); the two CUHK photos and a 500²
#: ramp 16.7 → 12.3 s (prior 2) and 20.5 → 16.7 s (prior 0); the bench's
#: six 192² scenes 1.57 → 1.52 s and 3.27 → 2.46 s. Energies moved −1.0 … +0.5 % (both
#: certified). On a GPU not measured yet. Where the labels are not coarsened
#: (``label_step=1``, or a pruned range under ``4 * label_step`` labels) the
#: pyramid runs on the full-label problem; :func:`_prolong` writes into the
#: lifted arrays directly, so that stays within :func:`labeling_bytes_per_pixel`.
BLURMAP_MULTISCALE = True

#: Default label subsampling of the primal-dual warm start (1 = off). Used
#: when the problem (after pruning) keeps at least 4 coarse label steps.
LABEL_STEP = 5


def _solve_lmn(D, W, vals, method, be, max_iter, tol, init=None, multiscale=False, label_step=LABEL_STEP):
    """Dispatch on an (L, M, N) cost volume already on backend ``be``."""
    t0 = time.perf_counter()
    label_step = check_positive_int(label_step, "label_step")
    if method == "primal-dual":
        max_iter = _PD_DEFAULTS["max_iter"] if max_iter is None else check_positive_int(max_iter, "max_iter")
        tol = _PD_DEFAULTS["tol"] if tol is None else check_positive(tol, "tol", allow_zero=True)
        lo, hi = _label_range(D, be) if init is None else (0, D.shape[0] - 1)
        if hi == lo:  # one label dominates everywhere
            lab = be.xp.full(D.shape[1:], lo, dtype=np.int32)
            En = _energy_lmn(lab, D, W, be.xp.asarray(vals, dtype=np.float64), be.xp)
            info = dict(energy=En, lower_bound=En, gap=0.0, iterations=0, converged=True)
        else:
            Dr, vr = D[lo : hi + 1], vals[lo : hi + 1]
            if label_step > 1 and init is None and (hi - lo) >= 4 * label_step:
                lab, info = _primal_dual_labels(Dr, W, vr, be, max_iter, tol, steps=(label_step,),
                                                multiscale=multiscale)
            elif multiscale and init is None and _pyramid_levels(D.shape[1:]) > 0:
                lab, info = _primal_dual_multiscale(Dr, W, vr, be, max_iter, tol)
            else:
                lab, info = _primal_dual(Dr, W, vr, be, max_iter, tol, init=init)
            lab = lab + np.int32(lo)
        info.pop("state", None)
        info.setdefault("levels", 0)
        info["label_range"] = (int(lo), int(hi))
    else:
        Dh, Wh = be.to_host(D), be.to_host(W)
        if method == "alpha-expansion":
            cycles = 10 if max_iter is None else check_positive_int(max_iter, "max_iter")
            lab, En, it = _solve_alpha_expansion(Dh, Wh, vals, cycles,
                                                 None if init is None else be.to_host(init))
            info = dict(energy=En, iterations=it)
        else:  # exact / min-cut
            lab = _solve_exact(Dh, Wh, vals)
            En = _energy_lmn(lab, np.asarray(Dh, dtype=np.float64), np.asarray(Wh, dtype=np.float64), vals, np)
            info = dict(energy=En, iterations=1, lower_bound=En, gap=0.0, converged=True)
        lab = be.xp.asarray(lab)
    info["method"] = method
    info["time"] = time.perf_counter() - t0
    return lab, info


def _prepare_volume(data_cost, weights, be, name="data_cost", method="primal-dual"):
    # the PyMaxflow solvers work in float64 anyway; primal-dual in float32
    D, kind = as_backend_array(data_cost, be, dtype=np.float32 if method == "primal-dual" else np.float64, name=name)
    if D.ndim != 3:
        raise ValueError(f"{name} must be (M, N, L), got shape {tuple(D.shape)}")
    M, N, L = D.shape
    if M < 2 or N < 2 or L < 2:
        raise ValueError(f"{name} must have M, N, L >= 2, got shape {tuple(D.shape)}")
    if not bool(be.xp.isfinite(D).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    W, _ = as_backend_array(weights, be, dtype=D.dtype, name="weights")
    _check_weights(W, M, N)
    if not bool((W >= 0).all()):
        raise ValueError("weights must be non-negative")
    return be.xp.ascontiguousarray(be.xp.moveaxis(D, -1, 0)), W, kind


def solve_multilabel(data_cost, weights, label_values, method: str = "primal-dual", *, max_iter=None, tol=None,
                     multiscale: bool = False, label_step: int = LABEL_STEP, backend=None):
    """Minimize ``sum_x D_x(l_x) + sum_e w_e |r_{l_s} - r_{l_t}|`` (eq. 14) over labelings.

    Parameters
    ----------
    data_cost : (M, N, L) array
        ``D_x(l)``; finite.
    weights : (E, M, N) array
        Edge weights from :func:`edge_weights`.
    label_values : (L,) array
        Increasing values ``r_l`` (radii).
    method : {'primal-dual', 'exact', 'alpha-expansion'}
        See the module docstring. ``'exact'`` and ``'alpha-expansion'`` run
        on the CPU (PyMaxflow) whatever the backend.
    max_iter : int, optional
        Primal-dual iterations (default 3000) or expansion cycles (default 10).
    tol : float, optional
        Primal-dual: stop when ``(E_best - lower_bound) / E_best <= tol``
        (default 1e-2, checked every 10 iterations): the labeling is then
        certified within 1 % of the global optimum, hence of any other
        solver's energy (α-expansion included); ``tol=0`` runs ``max_iter``
        iterations.
    multiscale : bool
        Primal-dual: warm-start from the solutions of 2x2-block coarsened
        problems (coarse levels while the short side stays >= 64). Same
        certificate at the finest level. Off by default: on two real
        500x500 maps (81 labels, 1 % gap) it took the fine level from 240
        to 150 iterations on one (1.6x faster overall) but from 340 to 330
        on the other (10 % slower overall, counting the coarse levels).
        With ``label_step > 1`` it applies to the coarse-label problem.
        The blur map's :func:`coherent_labeling` turns it on
        (:data:`BLURMAP_MULTISCALE`, measured there at the 3 % certificate).
    label_step : int
        Primal-dual: first solve the problem on every ``label_step``-th
        label (both ends kept; the coarse cost of a label is the smallest
        fine cost of the labels nearest to it), then warm-start the full
        problem from it (``u`` copied per step, edge duals split over the
        step's labels: feasible, same ``K^T p``). Same certificate on the
        full problem. 1 = off; used when at least 4 coarse steps remain
        after label pruning. Default 5: on a real 500x500 map with 81
        labels it took the solve from 33.5 s to 27.5 s on 2 CPU cores (230
        full iterations -> 260 coarse + 100 full ones; the coarse ones cost
        about a fifth). ``max_iter`` bounds each label level; ``iterations``
        counts the full problem's, ``label_iterations`` all levels' (full
        first).

    Returns
    -------
    labels_idx : (M, N) int32 array (same kind as ``data_cost``)
    info : dict
        ``energy`` (:func:`labeling_energy`), ``iterations``, ``method``,
        ``time``; the primal-dual and exact solvers add ``lower_bound``,
        ``gap`` and ``converged``.
    """
    check_choice(method, MULTILABEL_METHODS, "method")
    be = get_backend(backend, like=data_cost)
    D, W, kind = _prepare_volume(data_cost, weights, be, method=method)
    vals = _check_labels(label_values)
    if vals.size != D.shape[0]:
        raise ValueError(f"label_values has {vals.size} entries but data_cost has L = {D.shape[0]} labels")
    lab, info = _solve_lmn(D, W, vals, method, be, max_iter, tol, multiscale=multiscale, label_step=label_step)
    return to_output(lab, kind), info


def solve_binary(unary, weights, method: str = "primal-dual", *, max_iter=None, tol=None, backend=None):
    """Binary labeling ``min sum_x U_x(y_x) + sum_e w_e |y_s - y_t|`` (eq. 17).

    Parameters
    ----------
    unary : (M, N, 2) array, or (M, N) array
        ``U_x(0), U_x(1)``; a 2-D array is the difference ``U_x(1) - U_x(0)``.
    weights : (E, M, N) array
    method : {'primal-dual', 'min-cut'}
        ``'min-cut'`` is exact (PyMaxflow, CPU).

    Returns
    -------
    mask : (M, N) bool array, True where ``y = 1``
    info : dict with ``energy`` (same definition as :func:`labeling_energy`
        with label values ``[0, 1]``), ``iterations``, ``method``.
    """
    check_choice(method, BINARY_METHODS, "method")
    be = get_backend(backend, like=unary)
    U, kind = as_backend_array(unary, be, dtype=np.float32 if method == "primal-dual" else np.float64, name="unary")
    if U.ndim == 2:
        U = be.xp.stack([be.xp.zeros_like(U), U], axis=-1)
    if U.ndim != 3 or U.shape[2] != 2:
        raise ValueError(f"unary must be (M, N, 2) or (M, N), got shape {tuple(U.shape)}")
    D, W, _ = _prepare_volume(U, weights, be, name="unary", method=method)
    lab, info = _solve_lmn(D, W, np.array([0.0, 1.0]), "exact" if method == "min-cut" else method, be,
                           max_iter, tol)
    info["method"] = method
    return to_output(lab.astype(bool), kind), info


# ---------------------------------------------------------------------------
# the paper's two problems
# ---------------------------------------------------------------------------


def _check_image_for(image, be, M, N):
    img, _ = as_backend_array(image, be, name="image")
    if img.shape[:2] != (M, N) or img.ndim not in (2, 3):
        raise ValueError(f"image shape {tuple(img.shape)} does not match the map size ({M}, {N})")
    return img


def coherent_labeling(r_cand, p_cand, image, *, labels=None, max_radius: float = 8.0, kappa=KAPPA,
                      lambda0: float = 20.0, sigma_lambda: float = 0.1, method: str = "primal-dual",
                      max_iter=None, tol=None, connectivity: int = 8, diagonal_scale: float = 1.0,
                      p_floor: float = P_FLOOR, log_likelihood: bool = False, radius_prior: float = 0.0,
                      multiscale: bool = BLURMAP_MULTISCALE, label_step: int = LABEL_STEP, memory_budget=None,
                      tile_halo: int = 64, backend=None):
    """Coherent defocus blur map by discrete labeling (eq. 14-16).

    Parameters
    ----------
    r_cand, p_cand : (M, N, K) arrays
        Per-pixel candidate radii ``r^_k`` (pixels, continuous) and their
        likelihood values ``p^_k`` (non-negative, any scale; zero = no
        candidate). K = 3 in the paper.
    image : (M, N, 3) RGB or (M, N) gray array in [0, 1]
        For the contrast-sensitive weights (eq. 16).
    labels : (L,) array, optional
        Radii to choose from; default ``{0, 0.1, ..., max_radius}`` (§IV).
    kappa : sequence
        Label-space smoothing kernel for ``p~`` (default: the paper's).
    lambda0, sigma_lambda : float
        Smoothness strength and color scale (eq. 16; paper: 20 and 0.1).
    method : {'primal-dual', 'exact', 'alpha-expansion'}
        ``'alpha-expansion'`` is the paper's optimizer; ``'exact'`` is the
        global minimum (Ishikawa graph, CPU); ``'primal-dual'`` runs on the
        chosen backend and certifies its gap to the optimum.
    max_iter, tol, multiscale, label_step : optional
        See :func:`solve_multilabel`; ``tol`` defaults to :data:`BLURMAP_TOL`
        (3e-2) here, the generic solver's 1e-2 certificate costing ~1.8x the
        time for an energy ~0.7 % lower (both below α-expansion's), and
        ``multiscale`` to :data:`BLURMAP_MULTISCALE` (on).
    connectivity, diagonal_scale : see :func:`edge_weights`.
    p_floor : float
        Floor on ``p~`` before the log (:data:`P_FLOOR`).
    log_likelihood : bool
        ``p_cand`` holds log-likelihoods.
    radius_prior : float
        Not in the paper (0 = the paper's energy): adds ``radius_prior · r``
        to every pixel's data cost, so that where the likelihood cannot tell
        radii apart (smooth, low-texture regions) the smaller radius wins.
        Over-estimated radii ruin a later deconvolution, under-estimated
        ones only leave blur; the all-in-focus pipeline uses
        ``allinfocus.RADIUS_PRIOR`` (2; its comment gives the measurements).
    memory_budget : int, optional
        Bytes the primal-dual solver may hold (data cost, lifted primal and
        dual variables: :func:`labeling_bytes_per_pixel` per pixel). Larger
        problems are solved in overlapping tiles (:func:`label_tiles`): each
        tile's core plus ``tile_halo`` pixels of context on every side is
        labeled on its own (own label pruning, own certificate) and only the
        core is kept. Not the joint minimizer: a seam can differ where the
        smoothness would carry information further than the halo. ``info``
        then has the stitched labeling's ``energy`` but no joint
        ``lower_bound``/``gap`` (``max_tile_gap``, ``tile_gaps``,
        ``tile_iterations``, ``tile_label_iterations`` (iterations per label
        level, finest first), ``tile_seconds``, ``tile_shapes``, ``tiles``;
        ``converged`` = every tile
        converged). The layout depends only on the shape, the labels, the
        halo and the budget, so results stay deterministic. ``None``: never
        tile.
    tile_halo : int
        Context pixels around each tile's core (default 64).

    Returns
    -------
    radius_map : (M, N) float32 array (same kind as ``r_cand``)
    info : dict
        ``energy``, ``iterations``, ``method``, ``time``, ``label_index``
        (M, N) int32, plus the solver's extra keys.
    """
    check_choice(method, MULTILABEL_METHODS, "method")
    be = get_backend(backend, like=r_cand)
    xp = be.xp
    r, p, kind = _check_candidates(r_cand, p_cand, be)
    M, N, _ = r.shape
    lab = default_labels(max_radius) if labels is None else _check_labels(labels)
    img = _check_image_for(image, be, M, N)
    kap = _check_kappa(kappa)
    p_floor = check_positive(p_floor, "p_floor")
    radius_prior = check_positive(radius_prior, "radius_prior", allow_zero=True)
    if memory_budget is not None:
        memory_budget = check_positive_int(memory_budget, "memory_budget")
    if isinstance(tile_halo, bool) or not isinstance(tile_halo, numbers.Integral) or tile_halo < 0:
        raise ValueError(f"tile_halo must be a non-negative integer, got {tile_halo!r}")
    tile_halo = int(tile_halo)
    if tol is None and method == "primal-dual":
        tol = BLURMAP_TOL

    def solve(y0, y1, x0, x1):
        D = _data_cost_lmn(r[y0:y1, x0:x1], p[y0:y1, x0:x1], lab, kap, xp, log_likelihood, np.dtype(np.float32),
                           p_floor)
        if radius_prior > 0:
            D += xp.asarray(np.float32(radius_prior) * lab.astype(np.float32))[:, None, None]
        W = edge_weights(img[y0:y1, x0:x1], lambda0, sigma_lambda, connectivity=connectivity,
                         diagonal_scale=diagonal_scale, backend=be).astype(np.float32)
        t_idx, t_info = _solve_lmn(D, W, lab, method, be, max_iter, tol, multiscale=multiscale,
                                   label_step=label_step)
        return t_idx, t_info, D

    tiles = [(0, M, 0, N)]
    if memory_budget is not None and method == "primal-dual":
        tiles = label_tiles((M, N), lab.size, memory_budget, tile_halo, 4 if connectivity == 8 else 2)
    if len(tiles) == 1:
        idx, info, D = solve(0, M, 0, N)
        del D
    else:
        t0 = time.perf_counter()
        idx = xp.empty((M, N), dtype=np.int32)
        gaps, its, conv, label_its, secs, shapes = [], [], [], [], [], []
        data = 0.0
        for c0, c1, d0, d1 in tiles:
            y0, y1 = max(c0 - tile_halo, 0), min(c1 + tile_halo, M)
            x0, x1 = max(d0 - tile_halo, 0), min(d1 + tile_halo, N)
            t_idx, t_info, D = solve(y0, y1, x0, x1)
            label_its.append(list(t_info.get("label_iterations", [t_info["iterations"]])))
            secs.append(round(float(t_info["time"]), 4))
            shapes.append((y1 - y0, x1 - x0))
            core = (slice(c0 - y0, c1 - y0), slice(d0 - x0, d1 - x0))
            idx[c0:c1, d0:d1] = t_idx[core]
            data += float(xp.take_along_axis(D[(slice(None),) + core], t_idx[core][None].astype(np.intp),
                                             axis=0).sum(dtype=np.float64))
            del D
            gaps.append(float(t_info["gap"]))
            its.append(int(t_info["iterations"]))
            conv.append(bool(t_info["converged"]))
        # the stitched labeling's energy: data terms per core + all edges of the full grid
        W = edge_weights(img, lambda0, sigma_lambda, connectivity=connectivity, diagonal_scale=diagonal_scale,
                         backend=be).astype(np.float32)
        pair = _pairwise_energy(idx, W, xp.asarray(lab, dtype=np.float64), xp)
        info = dict(method=method, energy=data + pair, tiles=len(tiles), tile_halo=tile_halo, max_tile_gap=max(gaps),
                    tile_gaps=gaps, tile_iterations=its, tile_label_iterations=label_its, tile_seconds=secs,
                    tile_shapes=shapes, iterations=max(its), converged=all(conv),
                    time=time.perf_counter() - t0)
    radius = xp.asarray(lab, dtype=np.float32)[idx]
    info["label_index"] = to_output(idx, kind)
    return to_output(radius, kind), info


def labeling_bytes_per_pixel(n_labels: int, n_edges: int = 4) -> int:
    """Peak bytes per pixel of the primal-dual labeling (float32).

    Data cost (``L``); lifted ``u``, ``ubar``, scratch and data increments
    ``c`` (``4 (L-1)``); edge duals (``E (L-1)``); the coarse label level
    (every :data:`LABEL_STEP`-th label, the same arrays) while the full
    level is set up; small per-pixel arrays.
    """
    L = int(n_labels)
    Lc = (L - 1) // LABEL_STEP + 2
    return 4 * (L + (4 + n_edges) * (L - 1) + (5 + n_edges) * Lc + 2 * n_edges + 16)


def label_tiles(shape, n_labels: int, memory_budget: int, halo: int = 64, n_edges: int = 4):
    """Tile cores ``(y0, y1, x0, x1)`` covering ``shape`` whose haloed tiles fit ``memory_budget`` bytes.

    A grid grown greedily (one more split along the longer tile side at a
    time) until its largest haloed tile needs at most ``memory_budget``
    bytes (:func:`labeling_bytes_per_pixel`); ``[(0, M, 0, N)]`` when the
    whole problem fits.
    """
    M, N = (check_positive_int(int(a), "shape") for a in shape)
    if check_positive_int(n_labels, "n_labels") < 2:
        raise ValueError(f"n_labels must be >= 2, got {n_labels}")
    memory_budget = check_positive_int(memory_budget, "memory_budget")
    if isinstance(halo, bool) or not isinstance(halo, numbers.Integral) or halo < 0:
        raise ValueError(f"halo must be a non-negative integer, got {halo!r}")
    bpp = labeling_bytes_per_pixel(n_labels, n_edges)
    if M * N * bpp <= memory_budget:
        return [(0, M, 0, N)]
    smallest = min(2 * halo + 16, M) * min(2 * halo + 16, N) * bpp
    if smallest > memory_budget:
        raise ValueError(f"memory_budget {memory_budget} bytes is too small for the labeling: a tile with a "
                         f"{halo}-pixel halo needs at least {smallest} bytes")
    gy = gx = 1
    while True:
        th, tw = -(-M // gy), -(-N // gx)
        if min(th + 2 * halo, M) * min(tw + 2 * halo, N) * bpp <= memory_budget:
            break
        if th >= tw:
            gy += 1
        else:
            gx += 1
    ys = [M * i // gy for i in range(gy + 1)]
    xs = [N * j // gx for j in range(gx + 1)]
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(gy) for j in range(gx)]


def segment_in_focus(radius_map, image, *, tau: float = 2.0, lambda0: float = 1000.0, sigma_lambda: float = 0.04,
                     method: str = "primal-dual", r_cand=None, p_cand=None, labels=None, kappa=KAPPA,
                     p_floor: float = P_FLOOR, log_likelihood: bool = False, connectivity: int = 8,
                     diagonal_scale: float = 1.0, max_iter=None, tol=None, backend=None):
    """In-focus / out-of-focus segmentation (eq. 17-18).

    Parameters
    ----------
    radius_map : (M, N) array
        Coherent blur map (from :func:`coherent_labeling`). Used for the
        data term unless ``r_cand``/``p_cand`` are given (see
        :func:`in_focus_data_cost`); with them, it only breaks eq. 18's
        ties (pixels whose two costs are equal, e.g. without texture, get
        :data:`TIE_BREAK` on the label the map disagrees with).
    image : (M, N, 3) or (M, N) array in [0, 1]
    tau : float
        In-focus threshold on the radius (paper: 2).
    lambda0, sigma_lambda : float
        Eq. 16 parameters for this problem (paper: 1000, 0.04).
    method : {'primal-dual', 'min-cut'}
    r_cand, p_cand : (M, N, K) arrays, optional
        The candidates: eq. 18 exactly as printed, with p~ from them
        (``radius_map`` may then be None). ``log_likelihood``: ``p_cand``
        holds log-likelihoods.
    labels, kappa, p_floor : see :func:`coherent_labeling` (label grid and
        p~ construction used for eq. 18).
    connectivity, diagonal_scale : see :func:`edge_weights`.
    max_iter, tol : primal-dual settings (see :func:`solve_multilabel`).

    Returns
    -------
    mask : (M, N) bool array, True = in focus (label 1)
    info : dict with ``energy``, ``iterations``, ``method``, ``time``.
    """
    check_choice(method, BINARY_METHODS, "method")
    like = radius_map if radius_map is not None else r_cand
    be = get_backend(backend, like=like)
    xp = be.xp
    lab = default_labels() if labels is None else _check_labels(labels)
    tau = check_positive(tau, "tau", allow_zero=True)
    if r_cand is None:
        rm, kind = as_backend_array(radius_map, be, name="radius_map")
        if rm.ndim != 2:
            raise ValueError(f"radius_map must be 2-D (M, N), got shape {tuple(rm.shape)}")
        if not bool(xp.isfinite(rm).all()):
            raise ValueError("radius_map contains NaN or Inf values")
        if bool((rm < 0).any()):
            raise ValueError("radius_map has negative radii")
        r, p = rm[..., None], xp.ones_like(rm)[..., None]
        log_l = False
    else:
        r, p, kind = _check_candidates(r_cand, p_cand, be)
        log_l = bool(log_likelihood)
    M, N = r.shape[:2]
    img = _check_image_for(image, be, M, N)
    P, _ = _likelihood_lmn(r, p, lab, _check_kappa(kappa), xp, log_l, np.dtype(np.float32))
    U = _in_focus_cost_from_lmn(P, lab, tau, check_positive(p_floor, "p_floor"), xp)
    del P
    if r_cand is not None and radius_map is not None:
        # where eq. 18 cannot choose (equal costs: pixels without texture carry no candidate),
        # the map decides: the mask then agrees with it (a flat photo read 0 px came out all blurred)
        rm, _ = as_backend_array(radius_map, be, name="radius_map")
        if tuple(rm.shape) != (M, N):
            raise ValueError(f"radius_map shape {tuple(rm.shape)} does not match the candidates' {(M, N)}")
        tie = U[0] == U[1]
        in_focus = rm <= tau
        eps = U.dtype.type(TIE_BREAK)
        U[0] += eps * (tie & in_focus)
        U[1] += eps * (tie & ~in_focus)
    W = edge_weights(img, lambda0, sigma_lambda, connectivity=connectivity, diagonal_scale=diagonal_scale,
                     backend=be).astype(np.float32)
    idx, info = _solve_lmn(xp.ascontiguousarray(U), W, np.array([0.0, 1.0]),
                           "exact" if method == "min-cut" else method, be, max_iter, tol)
    info["method"] = method
    return to_output(idx.astype(bool), kind), info
