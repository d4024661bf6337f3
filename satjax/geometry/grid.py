"""Wasserstein-2 speed of a 2-D path of densities by a finite-volume Helmholtz projection.

The W2 speed of a path P_t with mean local velocity ν_t (arXiv:2407.04495, Eq. 65–67; see
docs/theory.md) is

    v_2(t)² = ∫ P_t |∇φ_t|² dx,   ∇·(P_t ∇φ_t) = ∇·(P_t ν_t),

i.e. ∇φ_t is the L²(P_t) projection of ν_t onto gradient fields and φ_t minimises
R(ψ) = ∫ P_t |ν_t − ∇ψ|² dx. Hence E_P|ν|² = v_2² + R_min (Eq. 67: T Ṡ_tot ≥ v_2², with equality
iff ν is a gradient); R_min is the "rotational" part of the kinetic energy.

Discretisation (:func:`project_2d`)
-----------------------------------
The box [lo, hi] is cut into n × n cells (the same n on both axes; the cells are rectangles
h = (hi − lo)/n, so h may differ per axis). The unknown φ lives at cell centres. On every face
between two neighbouring cells, P and the normal component of ν are evaluated *exactly* at the
face centre (one batched call of ``field_fn`` on all face centres), and the discrete energy

    R_h(φ) = Σ_faces h_x h_y w_f (ν_f − (φ_j − φ_i)/h_⊥)²

is minimised. Its normal equations are the 5-point weighted Poisson equation
∇_h·(w ∇_h φ) = ∇_h·(w ν) with zero flux through the box boundary (boundary faces carry no flux
and are not in R_h). The constant in φ is irrelevant: the system is singular and consistent
(Σ_cells b = 0 by telescoping), and CG started from φ = 0 solves it without pinning a value.

* ``kinetic`` = Σ_faces h_x h_y w_f ν_f² — a trapezoid (normal direction) × midpoint
  (tangential direction) rule for E_P|ν|², spectrally accurate for smooth, decaying integrands.
* ``rotational`` = R_h(φ*) and ``speed_sq`` = kinetic − R_h(φ*). At the exact discrete solution
  speed_sq = Σ_faces h_x h_y w_f (Dφ*)_f² (the definition ∫P|∇φ|²). The form kinetic − R_h is
  used because it equals max_ψ [2⟨ν, Dψ⟩_w − ‖Dψ‖²_w]: for *any* φ it is a lower bound on the
  discrete v_2², with error quadratic (not linear) in the solver error.
* Accuracy: second order. With w = ν − ∇φ the rotational part, Dφ − ∇φ = (h_a²/24) ∂_a³φ on
  a-faces, and the variational form gives

      speed_sq − v_2² = (1/12) Σ_a h_a² ∫ P w_a ∂_a³φ dx + O(h⁴)

  (checked: predicted −1.51e-3, measured −1.49e-3 relative on the "wave" test at h = 1/8). It
  vanishes when ν is a gradient (then R_h = O(h⁴)) or φ is quadratic (Gaussian P with affine ν:
  fourth order). Measured relative errors are in :data:`MEASURED_ACCURACY`.

Degenerate regions
------------------
Where P is tiny, φ is undetermined but irrelevant. Face weights are floored,
w_f = max(P_f, δ·max P) with δ = ``floor`` (default 1e-20 in float64), and the velocity on such
"dead" faces (P_f ≤ δ·max P) is replaced by 0: there φ just continues harmonically, the dead
faces add ≤ δ·max P·(box area)·max|Dφ|² to R_h, and non-finite velocities on dead faces (e.g. a
field computed as J∇χ/P where P underflowed) are ignored. A smaller δ makes the Jacobi-PCG
converge faster (the dead region is a plain Laplacian whose slow modes CG then need not resolve):
at n = 256 we measured 555 → 229 iterations (Gaussian) and 711 → 368 (mixture) going from
δ = 1e-14 to 1e-20, with changes ≤ 2e-12 relative in the results. The floor also caps the cost of
pushing mass through a region of density < δ·max P (physically enormous); boxes should not
contain such bottlenecks that carry mass.

Non-finite P (NaN or overflowing log-density) anywhere, or a non-finite velocity on a live face,
gives NaN outputs and ``converged = False``. ``mass`` (Σ h² P over the box) and
``boundary_density`` (max P on the box boundary / max P) show whether the box covers the mass;
``covered`` is |mass − 1| ≤ ``mass_tol`` (assumes P normalised).

Solver
------
Jacobi-preconditioned conjugate gradients in a ``lax.while_loop`` (pure JAX, jit/vmap-able on
CPU and GPU). For a Gaussian the Jacobi-preconditioned operator behaves like the
Ornstein–Uhlenbeck generator, whose condition number is ~(σ_max/h)² independently of the box,
so iterations grow ~linearly with n (measured ≈ 0.9–1.5 n for the test problems, see
:data:`MEASURED_ACCURACY`). ``residual`` is the *true* relative residual ‖b − Aφ‖₂/‖b‖₂
recomputed after the loop (the recursive one drifts below ~1e-12; tolerances below ~1e-11 may
not be attainable in float64). Measured on 2 shared CPU cores: n = 128 / 256 / 512 took
104–184 / 229–368 / 449–736 iterations and 0.02 / 0.17–0.25 / 0.9–2.0 s per solve (after
compilation, ~2–4 s). float32 works but its true residual stalls near 1e-4 for n ≥ 128, so
``converged`` is then often False (the values are still accurate to ~1e-6, because the error of
speed_sq is quadratic in the solver error): use float64.

Gradients (envelope theorem)
----------------------------
The CG iterations are not differentiated: with φ* = stop_gradient(solution), R_h(φ*; θ) has the
exact gradient of the discrete R_min(θ) because ∂R_h/∂φ = 0 at φ*, and so do kinetic and
speed_sq = kinetic − R_h(φ*). This holds for anything ``field_fn`` closes over and for the box
(lo, hi). The gradient error is linear in the solver error (tol = 1e-10 suffices for 1e-7
relative agreement with finite differences).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from satjax._util import as_float, is_concrete
from satjax.pytree import Node

__all__ = [
    "GridConvergence", "GridSpeed", "MEASURED_ACCURACY", "mixture_box", "mixture_grid",
    "mixture_resolution", "project_2d", "project_2d_converged",
]

# Relative errors of speed_sq measured with this module (float64, floor 1e-20, tol 1e-10; box
# ±8 widest stds), keyed by r = cells per narrowest std (σ_min / max h). The problems are those of
# tests/test_grid.py: "gauss": anisotropic Gaussian (stds 1, 0.5), affine non-symmetric ν, closed
# form; error ∝ h⁴ (the exact potential is quadratic). "mixture": 3-component mixture (stds 0.25
# to 0.8), ν = ∇ψ + (1/P)J∇(Pg), quadrature reference; ~h⁴ until r ≈ 4, then a small h² term
# (sign change between r = 6 and 8; r = 16 measured with δ = 1e-14). "wave": N(0, diag(1, 1/4)), ψ = g = sin(x + 2y), closed form;
# clean h² (ratio 3.89 → 3.99 per halving), the hardest of the three.
MEASURED_ACCURACY = {
    "gauss": {1: 4.8e-4, 2: 3.0e-5, 4: 1.9e-6, 8: 1.2e-7, 16: 7.3e-9},
    "mixture": {1: 3.3e-3, 2: 1.9e-4, 4: 8.0e-6, 6: 3.9e-7, 8: -4.0e-7, 16: -2.5e-7},
    "wave": {1: -2.0e-2, 2: -5.8e-3, 4: -1.5e-3, 5: -9.6e-4, 6: -6.7e-4, 8: -3.8e-4, 16: -9.4e-5},
}

DEFAULT_Z = 8.0
DEFAULT_CELLS_PER_STD = 6.0


class GridSpeed(Node):
    """Finite-volume W2 speed of one density/velocity pair (Eq. 65–67, docs/theory.md).

    Attributes:
        speed_sq: v_2² = Σ_faces h_x h_y w_f (Dφ)_f² (evaluated as kinetic − R_h(φ*), equal at
            the discrete solution and a lower bound otherwise).
        kinetic: Σ_faces h_x h_y w_f ν_f², the face quadrature of E_P|ν|².
        rotational: kinetic − speed_sq = R_h(φ*) ≥ 0.
        mass: Σ h_x h_y P over the box (trapezoid × midpoint on the face centres); ≈ 1 when the
            box covers the mass of a normalised P.
        residual: true relative residual ‖b − Aφ‖₂ / ‖b‖₂ of the weighted Poisson solve.
        converged: residual ≤ tol, inputs finite on the live faces and all outputs finite.
        iterations: CG iterations used.
        h: cell size per axis, shape (2,).
        boundary_density: max P on the box boundary divided by max P (≲ 1e-14 for a ±8σ box).
        covered: |mass − 1| ≤ mass_tol.
    """

    speed_sq: jax.Array
    kinetic: jax.Array
    rotational: jax.Array
    mass: jax.Array
    residual: jax.Array
    converged: jax.Array
    iterations: jax.Array
    h: jax.Array
    boundary_density: jax.Array
    covered: jax.Array


class GridConvergence(Node):
    """Two resolutions of the same projection (:func:`project_2d_converged`).

    Attributes:
        fine: :class:`GridSpeed` at n.
        coarse: :class:`GridSpeed` at n // 2.
        speed_sq_delta: fine.speed_sq − coarse.speed_sq.
        rotational_delta: fine.rotational − coarse.rotational.
        speed_sq_error: |speed_sq_delta| / 3, an estimate (bound) of the fine error when halving
            h reduces the error at least 4× (second order, the asymptotic rate; the measured
            pre-asymptotic reduction was 14–23×, where this over-estimates the error).
        speed_sq_rel_error: speed_sq_error / |fine.speed_sq|.
        converged: both solves converged.
    """

    fine: GridSpeed
    coarse: GridSpeed
    speed_sq_delta: jax.Array
    rotational_delta: jax.Array
    speed_sq_error: jax.Array
    speed_sq_rel_error: jax.Array
    converged: jax.Array


# ---------------------------------------------------------------------------- discrete operators


def _grad(phi, h):
    """Face differences (Dφ): x-faces (n−1, n), y-faces (n, n−1)."""
    return (phi[1:, :] - phi[:-1, :]) / h[0], (phi[:, 1:] - phi[:, :-1]) / h[1]


def _grad_t(gx, gy, h):
    """Dᵀ of interior-face fields (zero flux on the boundary): a cell field (n, n)."""
    Gx = jnp.pad(gx, ((1, 1), (0, 0)))
    Gy = jnp.pad(gy, ((0, 0), (1, 1)))
    return (Gx[:-1, :] - Gx[1:, :]) / h[0] + (Gy[:, :-1] - Gy[:, 1:]) / h[1]


def _pcg(wx, wy, b, h, tol, max_iter):
    """Jacobi-PCG for Dᵀ W D φ = b (Σ b = 0). Returns (φ, true relative residual, its)."""

    def apply(phi):
        gx, gy = _grad(phi, h)
        return _grad_t(wx * gx, wy * gy, h)

    Wx = jnp.pad(wx, ((1, 1), (0, 0)))
    Wy = jnp.pad(wy, ((0, 0), (1, 1)))
    diag = (Wx[:-1] + Wx[1:]) / h[0] ** 2 + (Wy[:, :-1] + Wy[:, 1:]) / h[1] ** 2
    minv = 1.0 / diag
    bnorm = jnp.sqrt(jnp.sum(b * b))
    scale = jnp.where(bnorm > 0, bnorm, 1.0)
    z0 = minv * b
    rz0 = jnp.sum(b * z0)
    res0 = bnorm / scale

    def cond(c):
        # the recursive residual drifts from the true one (recomputed below) by ~1e-11
        # relative: iterate to tol/4 so that the true residual meets tol
        k, _, _, _, _, res = c
        return (k < max_iter) & (res > 0.25 * tol) & jnp.isfinite(res)

    def body(c):
        k, x, r, p, rz, _ = c
        Ap = apply(p)
        alpha = rz / jnp.sum(p * Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        z = minv * r
        rz_new = jnp.sum(r * z)
        p = z + (rz_new / rz) * p
        return k + 1, x, r, p, rz_new, jnp.sqrt(jnp.sum(r * r)) / scale

    init = (jnp.zeros((), jnp.int32), jnp.zeros_like(b), b, z0, rz0, res0)
    k, x, _, _, _, _ = jax.lax.while_loop(cond, body, init)
    rt = b - apply(x)
    return x, jnp.sqrt(jnp.sum(rt * rt)) / scale, k


def _face_points(lo, hi, n):
    h = (hi - lo) / n
    ie = jnp.arange(n + 1, dtype=lo.dtype)
    ic = jnp.arange(n, dtype=lo.dtype) + 0.5
    X, Y = jnp.meshgrid(lo[0] + ie * h[0], lo[1] + ic * h[1], indexing="ij")  # x-faces (n+1, n)
    px = jnp.stack([X.ravel(), Y.ravel()], -1)
    X, Y = jnp.meshgrid(lo[0] + ic * h[0], lo[1] + ie * h[1], indexing="ij")  # y-faces (n, n+1)
    py = jnp.stack([X.ravel(), Y.ravel()], -1)
    return h, jnp.concatenate([px, py], 0)


def _evaluate(field_fn, pts, chunk_size):
    m = pts.shape[0]
    if chunk_size is None or chunk_size >= m:
        return field_fn(pts)
    c = int(chunk_size)
    k = -(-m // c)
    pad = jnp.broadcast_to(pts[:1], (k * c - m, 2))
    blocks = jnp.concatenate([pts, pad], 0).reshape(k, c, 2)
    lp, v = jax.lax.map(field_fn, blocks)
    return lp.reshape(k * c)[:m], v.reshape(k * c, 2)[:m]


# ------------------------------------------------------------------------------------- the solver


def project_2d(field_fn, lo, hi, n: int, *, tol=None, max_iter=None, floor=None,
               mass_tol: float = 1e-6, chunk_size=None) -> GridSpeed:
    """W2 speed² v_2² = ∫P|∇φ|², ∇·(P∇φ) = ∇·(Pν), on an n × n finite-volume grid (Eq. 65–67).

    See the module docstring and docs/theory.md for the discretisation, the floor on P, the
    solver and the envelope-theorem gradients. Jit-, vmap- and grad-compatible: ``lo``, ``hi``
    and anything ``field_fn`` closes over may be traced; only ``n`` (and the keyword options)
    are static.

    Args:
        field_fn: ``points (M, 2) -> (log_p (M,), velocity (M, 2))``, the log-density of the
            (normalised) P and the mean local velocity ν at the points; pure JAX. Called once on
            all 2n(n+1) face centres (or in chunks of ``chunk_size``).
        lo: lower corner of the box, shape (2,).
        hi: upper corner of the box, shape (2,). Cells are (hi − lo)/n, possibly rectangular.
        n: number of cells per axis (static int ≥ 2).
        tol: relative residual target of CG; default 1e-10 (float64) or 1e-4 (float32).
        max_iter: CG iteration cap; default 20 n.
        floor: δ in the face-weight floor w_f = max(P_f, δ max P); default 1e-20 (float64) or
            1e-12 (float32). Velocities on faces with P_f ≤ δ max P are set to 0.
        mass_tol: tolerance of the ``covered`` flag, |mass − 1| ≤ mass_tol.
        chunk_size: evaluate ``field_fn`` on blocks of this many points via ``lax.map`` (bounds
            memory, e.g. under vmap over many time nodes); None = one call.

    Returns:
        :class:`GridSpeed`. An unconverged solve is reported by ``converged = False`` (its
        speed_sq is then still a lower bound on the discrete v_2²); non-finite inputs give NaN.

    Note:
        Gradients pull back through ``field_fn`` with zero cotangents on dead faces; a
        ``field_fn`` whose *derivative* is non-finite there (e.g. dividing by an underflowed
        density) can still produce NaN gradients — compute such fields in log space.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"`n` must be an int >= 2; got {n}")
    lo = as_float(lo)
    hi = as_float(hi)
    dtype = jnp.result_type(lo, hi)
    lo = lo.astype(dtype)
    hi = hi.astype(dtype)
    if lo.shape != (2,) or hi.shape != (2,):
        raise ValueError(f"`lo` and `hi` must have shape (2,); got {lo.shape} and {hi.shape}")
    if is_concrete(lo, hi) and not np.all(np.asarray(hi) > np.asarray(lo)):
        raise ValueError(f"need hi > lo on both axes; got lo={np.asarray(lo)}, hi={np.asarray(hi)}")
    f64 = dtype == jnp.float64
    tol = (1e-10 if f64 else 1e-4) if tol is None else float(tol)
    floor = (1e-20 if f64 else 1e-12) if floor is None else float(floor)
    max_iter = 20 * n if max_iter is None else int(max_iter)

    h, pts = _face_points(lo, hi, n)
    logp, vel = _evaluate(field_fn, pts, chunk_size)
    m = pts.shape[0]
    if logp.shape != (m,) or vel.shape != (m, 2):
        raise ValueError(
            "`field_fn` must map points (M, 2) to (log_p (M,), velocity (M, 2)); got shapes "
            f"{logp.shape} and {vel.shape} for M = {m}")
    logp = logp.astype(dtype)
    vel = vel.astype(dtype)
    nx = (n + 1) * n
    P = jnp.exp(logp)
    p_ok = jnp.all(jnp.isfinite(P))
    P = jnp.where(jnp.isfinite(P), P, 0.0)
    Px = P[:nx].reshape(n + 1, n)
    Py = P[nx:].reshape(n, n + 1)
    pmax = jnp.max(P)
    ok = p_ok & (pmax > 0)
    pmax = jnp.where(pmax > 0, pmax, 1.0)
    thresh = floor * pmax

    def faces(Pf, vf):
        live = Pf > thresh
        fin = jnp.isfinite(vf)
        u = jnp.where(live & fin, vf, 0.0)
        return jnp.maximum(Pf, thresh), u, jnp.all(fin | ~live)

    wx, ux, okx = faces(Px[1:-1, :], vel[:nx, 0].reshape(n + 1, n)[1:-1, :])
    wy, uy, oky = faces(Py[:, 1:-1], vel[nx:, 1].reshape(n, n + 1)[:, 1:-1])
    ok = ok & okx & oky

    sg = jax.lax.stop_gradient
    hs = sg(h)
    # Σ b = 0 up to round-off (telescoping); not re-centred: shifting b by a constant puts
    # round-off residual into the floored region and doubled the CG iterations (measured).
    b = _grad_t(sg(wx * ux), sg(wy * uy), hs)
    phi, residual, iterations = _pcg(sg(wx), sg(wy), b, hs, tol, max_iter)
    phi = sg(phi)

    gx, gy = _grad(phi, h)
    area = h[0] * h[1]
    kinetic = area * (jnp.sum(wx * ux**2) + jnp.sum(wy * uy**2))
    rotational = area * (jnp.sum(wx * (ux - gx) ** 2) + jnp.sum(wy * (uy - gy) ** 2))
    speed_sq = kinetic - rotational
    ends = jnp.ones(n + 1, dtype).at[0].set(0.5).at[-1].set(0.5)
    mass = 0.5 * area * (jnp.sum(ends[:, None] * Px) + jnp.sum(ends[None, :] * Py))
    edge = jnp.concatenate([Px[0], Px[-1], Py[:, 0], Py[:, -1]])
    boundary_density = jnp.max(edge) / pmax

    nan = jnp.asarray(jnp.nan, dtype)
    fix = lambda x: jnp.where(ok, x, nan)  # noqa: E731
    speed_sq, kinetic, rotational = fix(speed_sq), fix(kinetic), fix(rotational)
    mass, residual, boundary_density = fix(mass), fix(residual), fix(boundary_density)
    finite = jnp.isfinite(speed_sq) & jnp.isfinite(kinetic) & jnp.isfinite(residual)
    converged = ok & finite & (residual <= tol)
    covered = jnp.abs(mass - 1.0) <= mass_tol
    return GridSpeed(speed_sq=speed_sq, kinetic=kinetic, rotational=rotational, mass=mass,
                     residual=residual, converged=converged, iterations=iterations, h=h,
                     boundary_density=boundary_density, covered=covered)


def project_2d_converged(field_fn, lo, hi, n: int, **kwargs) -> GridConvergence:
    """:func:`project_2d` at n and n // 2, for reporting grid convergence (Eq. 65–67).

    The scheme is second order (error ∝ h², see the module docstring), so the fine error is
    about |fine − coarse| / 3 in the asymptotic regime and smaller when the error falls faster
    (measured 14–23× per halving before the h² term takes over). No Richardson extrapolation is
    applied: with the h⁴ and h² terms of comparable size (measured) it can make things worse.

    Args:
        field_fn, lo, hi: as in :func:`project_2d`.
        n: fine resolution (even static int ≥ 4); the coarse one is n // 2.
        **kwargs: passed to both :func:`project_2d` calls.

    Returns:
        :class:`GridConvergence`.
    """
    n = int(n)
    if n < 4 or n % 2:
        raise ValueError(f"`n` must be an even int >= 4; got {n}")
    fine = project_2d(field_fn, lo, hi, n, **kwargs)
    coarse = project_2d(field_fn, lo, hi, n // 2, **kwargs)
    d = fine.speed_sq - coarse.speed_sq
    err = jnp.abs(d) / 3.0
    return GridConvergence(fine=fine, coarse=coarse, speed_sq_delta=d,
                           rotational_delta=fine.rotational - coarse.rotational,
                           speed_sq_error=err, speed_sq_rel_error=err / jnp.abs(fine.speed_sq),
                           converged=fine.converged & coarse.converged)


# ---------------------------------------------------------------------- boxes for mixtures


def _stds(means, stds):
    stds = jnp.asarray(stds)
    if stds.ndim == means.ndim - 1:  # isotropic (…, K)
        stds = jnp.broadcast_to(stds[..., None], means.shape)
    if stds.shape != means.shape:
        raise ValueError(f"`stds` must have shape {means.shape[:-1]} or {means.shape}; got "
                         f"{stds.shape}")
    return stds


def mixture_box(means, stds, *, z: float = DEFAULT_Z):
    """Box covering a 2-D Gaussian mixture marginal: bounding box of the means ± z·max std.

    z = 8 puts the density at the box edge at ≤ exp(−z²/2) ≈ 1.3e-14 of a component's peak and
    the mass outside at ~1e-15, i.e. at float64 round-off of the sums, so truncation and the
    zero-flux boundary are invisible next to the O(h²) discretisation error. Measured on the
    Gaussian test at fixed h = σ_min/4, the change of speed_sq relative to z = 8 is 2.6e-4
    (z = 4), 2.1e-6 (z = 5), 5e-9 (z = 6), 0 (z = 10): z = 6 would do for ~1e-6 work at (6/8)²
    of the cells; z = 8 is the safe default when components are rotated or ν grows in the tails.

    Args:
        means: component means (…, K, 2); leading axes (e.g. time nodes) are kept.
        stds: isotropic stds (…, K), or per-axis stds (…, K, 2) (e.g. square roots of the
            covariance eigenvalues; use the largest one on both axes for rotated covariances).
        z: half-width in units of the widest std.

    Returns:
        (lo, hi), each of shape (…, 2). Works with traced arrays.
    """
    means = jnp.asarray(means)
    s = _stds(means, stds)
    smax = jnp.max(s, axis=(-2, -1))[..., None]
    return jnp.min(means, -2) - z * smax, jnp.max(means, -2) + z * smax


def mixture_resolution(means, stds, *, z: float = DEFAULT_Z,
                       cells_per_std: float = DEFAULT_CELLS_PER_STD, multiple: int = 8,
                       n_min: int = 32, n_max: int | None = 4096) -> int:
    """Static n for :func:`project_2d` on :func:`mixture_box`: n = ceil(width / (σ_min / r)).

    r = ``cells_per_std`` cells per narrowest std. Measured relative errors of speed_sq (see
    :data:`MEASURED_ACCURACY`) on the hardest test (a velocity varying on the scale of the std,
    large rotational part): 1.5e-3 (r = 4), 9.6e-4 (r = 5), 6.7e-4 (r = 6), 3.8e-4 (r = 8); on
    the other two ≤ 8e-6 at r = 4. The default r = 6 targets ~1e-3 with margin; the error
    constant is problem dependent, so check with :func:`project_2d_converged`.

    Args:
        means: (…, K, 2) concrete component means; leading axes (time nodes) are maxed over.
        stds: (…, K) isotropic or (…, K, 2) per-axis concrete stds.
        z: box half-width in widest stds (as in :func:`mixture_box`).
        cells_per_std: r.
        multiple: n is rounded up to a multiple of this (keep it even for
            :func:`project_2d_converged`).
        n_min: smallest n returned.
        n_max: raise ValueError above this (memory ~ 2n² field evaluations); None = no cap.

    Returns:
        The Python int n (the max over leading axes).
    """
    if not is_concrete(means, stds):
        raise ValueError("`mixture_resolution` needs concrete arrays (n must be static); call it "
                         "outside jit and take the max over time nodes")
    means_np = np.asarray(means, dtype=float)
    s = np.asarray(_stds(jnp.asarray(means_np), np.asarray(stds, dtype=float)))
    if not np.all(s > 0) or not np.all(np.isfinite(s)) or not np.all(np.isfinite(means_np)):
        raise ValueError("`stds` must be finite and > 0 and `means` finite")
    smax = s.max(axis=(-2, -1))
    smin = s.min(axis=(-2, -1))
    width = (means_np.max(-2) - means_np.min(-2)).max(-1) + 2 * z * smax
    n = int(np.max(np.ceil(width / (smin / cells_per_std))))
    n = max(int(n_min), int(multiple) * math.ceil(n / int(multiple)))
    if n_max is not None and n > n_max:
        raise ValueError(f"required n = {n} exceeds n_max = {n_max} (width {width.max():.3g}, "
                         f"narrowest std {smin.min():.3g}); raise n_max or cells_per_std lower")
    return n


def mixture_grid(means, stds, *, z: float = DEFAULT_Z,
                 cells_per_std: float = DEFAULT_CELLS_PER_STD, **kwargs):
    """(lo, hi, n) for concrete mixture parameters (:func:`mixture_box`, :func:`mixture_resolution`).

    With leading time axes, lo and hi are per node (…, 2) and n is the max over nodes, e.g.
    ``lo, hi, n = mixture_grid(means_t, stds_t)`` then
    ``jax.vmap(lambda f, a, b: project_2d(f, a, b, n))`` over the nodes (f closing over t).
    """
    lo, hi = mixture_box(means, stds, z=z)
    n = mixture_resolution(means, stds, z=z, cells_per_std=cells_per_std, **kwargs)
    return lo, hi, n
