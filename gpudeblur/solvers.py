"""Generic solvers and proximal building blocks (backend-agnostic).

Used by the deconvolution methods here and by later pipelines (spatially
varying deconvolution, blind per-layer ADMM, two-layer recovery).
"""

from __future__ import annotations

from typing import Callable

from ._backend import array_module

__all__ = ["conjugate_gradient", "soft_threshold", "hard_threshold", "shrink_isotropic", "CGInfo"]


class CGInfo:
    """Per-batch-item outcome of :func:`conjugate_gradient`."""

    def __init__(self, iterations, residual_norms, converged):
        self.iterations = iterations
        self.residual_norms = residual_norms
        self.converged = converged

    def __repr__(self):
        return f"CGInfo(iterations={self.iterations}, converged={self.converged})"


def conjugate_gradient(
    A: Callable,
    b,
    x0=None,
    *,
    tol: float = 1e-6,
    maxiter: int = 100,
    M: Callable | None = None,
    batch_axes: int = 1,
):
    """Matrix-free (preconditioned) conjugate gradient, batched.

    Solves ``A x = b`` for a symmetric positive definite ``A`` independently
    for each item of the leading ``batch_axes`` axes (e.g. channels of a
    ``(C, M, N)`` stack): step sizes and stopping are per item, and the loop
    never copies data between host and device except one scalar check per
    iteration.

    Parameters
    ----------
    A : callable
        ``A(x)`` applies the operator to a batch shaped like ``b``.
    b : array
    x0 : array, optional
        Initial guess (zeros by default).
    tol : float
        Relative residual ``‖r‖/‖b‖`` at which an item stops.
    maxiter : int
    M : callable, optional
        Preconditioner ``M(r) ≈ A⁻¹ r`` (SPD).
    batch_axes : int
        Number of leading axes that index independent systems.

    Returns
    -------
    x : array
    info : CGInfo
    """
    xp = array_module(b)
    red = tuple(range(batch_axes, b.ndim))
    shape_b = b.shape[:batch_axes] + (1,) * (b.ndim - batch_axes)

    def dot(u, v):
        return (u * v).sum(axis=red).reshape(shape_b)

    x = xp.zeros_like(b) if x0 is None else x0.astype(b.dtype, copy=True)
    r = b - A(x) if x0 is not None else b.copy()
    z = M(r) if M is not None else r
    p = z.copy()
    rz = dot(r, z)
    bnorm = xp.sqrt(dot(b, b))
    bnorm = xp.where(bnorm > 0, bnorm, 1)
    active = xp.ones(shape_b, dtype=bool)
    iters = xp.zeros(shape_b, dtype=xp.int32)
    tiny = xp.finfo(b.dtype).tiny
    for _ in range(int(maxiter)):
        rnorm = xp.sqrt(dot(r, r))
        active = active & (rnorm > tol * bnorm)
        if not bool(active.any()):
            break
        Ap = A(p)
        pAp = dot(p, Ap)
        alpha = xp.where(active, rz / xp.maximum(pAp, tiny), 0)
        x += alpha * p
        r -= alpha * Ap
        z = M(r) if M is not None else r
        rz_new = dot(r, z)
        beta = xp.where(active, rz_new / xp.maximum(rz, tiny), 0)
        rz = rz_new
        p = z + beta * p
        iters += active.astype(xp.int32)
    rnorm = xp.sqrt(dot(r, r))
    info = CGInfo(iters.ravel(), (rnorm / bnorm).ravel(), (rnorm <= tol * bnorm).ravel())
    return x, info


def soft_threshold(v, t):
    """Prox of ``t·|v|`` (elementwise)."""
    xp = array_module(v)
    return xp.sign(v) * xp.maximum(xp.abs(v) - t, 0)


def hard_threshold(v, t):
    """Prox of the L0 penalty with threshold ``t``: keep ``v`` where ``|v| > t``."""
    xp = array_module(v)
    return xp.where(xp.abs(v) > t, v, 0).astype(v.dtype, copy=False)


def shrink_isotropic(vx, vy, t):
    """Prox of ``t·‖(vx, vy)‖₂`` per pixel (isotropic TV shrinkage)."""
    xp = array_module(vx)
    n = xp.sqrt(vx * vx + vy * vy)
    s = xp.where(n > t, (n - t) / xp.where(n > 0, n, 1), 0).astype(vx.dtype, copy=False)
    return s * vx, s * vy
