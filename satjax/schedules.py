"""Noise schedules (m_t, σ_t) and the linear forces they induce (docs/theory.md §1; Eq. 22–25, 28–32).

A schedule is the linear force f_t(x) = (∂_t ln m_t) x with temperature

    T_t = ∂_t(σ_t²/2) − σ_t² ∂_t ln m_t = m_t σ_t ∂_t(σ_t/m_t)                        (22, 23)

and transition N(m_t y, σ_t² I) (25). Schedules are immutable pytrees whose numbers are array
leaves, so ``jax.grad`` flows to them and changing them never recompiles. Time derivatives are
taken by forward-mode autodiff. Subclasses define ``m(t)`` and ``sigma2(t)`` = σ_t² (the variance
is the primitive because σ = sqrt(σ²) has an infinite derivative at t = 0 for VP schedules).

Schedules also answer the time conventions of :mod:`satjax.conventions`: the noise level
σ_t/m_t (:meth:`Schedule.noise_level`), the log-SNR λ = log(m_t²/σ_t²) (:meth:`Schedule.log_snr`),
their inverses (:meth:`Schedule.t_of_noise_level`, :meth:`Schedule.t_of_log_snr`) and whether
m_τ = 0 (:meth:`Schedule.m_vanishes_at_tau`); generic implementations from m and σ² (bisection
for the inverses), overridden with closed forms by cond-OT, cosine, VP and VE.

Named constructors validate (m_0 = 1, σ_0 = 0, ∂_t(σ/m) ≥ 0 (24), τ > 0) when values are
concrete, and skip the checks while tracing.

Flow-matching libraries use the opposite time: s ∈ [0, 1], s = 0 noise, x_s = α_s x_1 + σ_s x_0
with x_1 data. Here α_s = m(τ(1 − s)), σ_s = σ(τ(1 − s)), and a velocity converts as
u(x, s) = −τ ν(x, τ(1 − s)); see :func:`to_flow_matching`, :func:`from_flow_matching`,
:func:`velocity_to_flow_matching`, :func:`velocity_from_flow_matching`.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from satjax._util import as_float, check_tau, gauss_legendre, is_concrete, time_derivative
from satjax.forces import IsoTransition, LinearForce


class Schedule(LinearForce):
    """Abstract schedule (m_t, σ_t²) on t ∈ [0, τ]; t = 0 data, t = τ noise."""

    def m(self, t):
        """Mean scale m_t (m_0 = 1)."""
        raise NotImplementedError

    def sigma2(self, t):
        """Noise variance σ_t² (σ_0 = 0)."""
        raise NotImplementedError

    def sigma(self, t):
        """Noise scale σ_t."""
        return jnp.sqrt(jnp.maximum(self.sigma2(t), 0.0))

    def dm(self, t):
        """∂_t m_t."""
        return time_derivative(self.m, t)[1]

    def dsigma2(self, t):
        """∂_t σ_t²."""
        return time_derivative(self.sigma2, t)[1]

    def log_m_rate(self, t):
        """∂_t ln m_t, the force coefficient of Eq. 23 (−∞ where m_t = 0)."""
        m, dm = time_derivative(self.m, t)
        return dm / m

    def temperature(self, t):
        """T_t = ∂_t(σ²/2) − σ² ∂_t ln m (Eq. 22); +∞ where m_t = 0 and σ_t > 0."""
        return 0.5 * self.dsigma2(t) - self.sigma2(t) * self.log_m_rate(t)

    def force(self, x, t):
        """f_t(x) = (∂_t ln m_t) x (Eq. 23)."""
        return self.log_m_rate(t) * x

    def transition(self, t):
        """N(m_t y, σ_t² I) (Eq. 25)."""
        t = as_float(t)
        return IsoTransition(scale=self.m(t), var=self.sigma2(t))

    def kinetic_energy_rate(self, t):
        """m'_t² + σ'_t², the integrand of the conditional energy of Eq. 93 (per dimension)."""
        dm = self.dm(t)
        s2, ds2 = time_derivative(self.sigma2, t)
        # σ'² = (σ²)'² / (4σ²); finite limit at σ → 0 is handled by the caller's nodes (t > 0).
        return dm**2 + ds2**2 / (4.0 * s2)

    # ------------------------------------------ σ/m and log-SNR (used by satjax.conventions)
    # Generic implementations from m and sigma2; the shipped schedules override them with
    # closed forms. All take t ∈ [0, τ] (or σ ≥ 0, λ) of any shape, elementwise, without
    # range checks (satjax.conventions checks eagerly and clips).

    def m_vanishes_at_tau(self) -> bool:
        """Whether m_τ = 0 (σ/m infinite and log-SNR −∞ at t = τ).

        Generic: decided from the concrete value |m_τ| < 1e-12.

        Raises:
          ValueError: for a traced schedule whose class does not know the answer.
        """
        if not is_concrete(self):
            raise ValueError("cannot decide whether m_tau = 0 for a traced generic schedule")
        return bool(abs(float(self.m(as_float(self.tau)))) < 1e-12)

    def _log_snr_from_m_sigma2(self, t):
        """log m_t² − log σ_t² (the scalar m, sigma2 mapped over t); +inf at t = 0."""
        lam = _elementwise(lambda u: jnp.log(self.m(u) ** 2) - jnp.log(self.sigma2(u)), t)
        return jnp.where(t <= 0, jnp.inf, lam)

    def log_snr(self, t):
        """Log-SNR λ(t) = log(m_t²/σ_t²) = −2 log(σ_t/m_t), non-increasing since σ/m never
        decreases (Eq. 24, docs/theory.md): +inf at t = 0, −inf at t = τ where m_τ = 0.

        Generic: log m² − log σ²; the −inf at τ is set when the schedule is concrete and
        :meth:`m_vanishes_at_tau`.
        """
        lam = self._log_snr_from_m_sigma2(t)
        if is_concrete(self) and self.m_vanishes_at_tau():
            lam = jnp.where(t >= self.tau, -jnp.inf, lam)
        return lam

    def noise_level(self, t):
        """σ = σ_t/m_t, the noise level of x/m_t (EDM / k-diffusion sigma): 0 at t = 0, ``inf``
        exactly at t = τ where m_τ = 0.

        Generic: sqrt(σ²)/|m|; the ``inf`` at τ is set when the schedule is concrete and
        :meth:`m_vanishes_at_tau`.
        """
        sig = _elementwise(lambda u: jnp.sqrt(jnp.maximum(self.sigma2(u), 0.0))
                           / jnp.abs(self.m(u)), t)
        if is_concrete(self) and self.m_vanishes_at_tau():
            sig = jnp.where(t >= self.tau, jnp.inf, sig)
        return sig

    def t_of_log_snr(self, lam):
        """The t ∈ [0, τ] with λ(t) = ``lam`` (λ = +inf ↦ 0, λ = −inf ↦ τ).

        Generic: bisection of the non-increasing t ↦ log m² − log σ² on [0, τ], a fixed number
        of halvings (to a few ulp; where σ/m is flat any time of the flat stretch is returned).
        """
        tau = self.tau

        def one(target):
            def body(_, ab):
                a, b = ab
                mid = 0.5 * (a + b)
                val = self._log_snr_from_m_sigma2(mid)
                # λ decreases with t: λ(mid) > target means the answer lies above mid
                go_up = val > target
                return jnp.where(go_up, mid, a), jnp.where(go_up, b, mid)

            a, b = jax.lax.fori_loop(0, _BISECTION_STEPS, body,
                                     (jnp.zeros_like(tau), jnp.ones_like(tau) * tau))
            t = 0.5 * (a + b)
            t = jnp.where(target == jnp.inf, 0.0, t)
            return jnp.where(target == -jnp.inf, tau, t)

        return jax.vmap(one)(jnp.ravel(lam)).reshape(jnp.shape(lam))

    def t_of_noise_level(self, sigma):
        """The t ∈ [0, τ] with σ_t/m_t = ``sigma`` (σ = 0 ↦ 0, σ = inf ↦ τ where m_τ = 0).

        Generic: :meth:`t_of_log_snr` of λ = −2 log σ.
        """
        return self.t_of_log_snr(-2.0 * jnp.log(sigma))

    def ddpm_betas(self, n: int = 1000):
        """(β_k, k = 0 … n − 1, of the diffusers DDPM table that discretises this VP schedule,
        the table's diffusers settings), or None when diffusers has no such table
        (:mod:`satjax.export`)."""
        return None

    @property
    def is_rectified_flow(self) -> bool:
        """Whether m = 1 − t/τ and σ = t/τ (cond-OT): t/τ is then diffusers' flow-matching σ."""
        return False

    def validate(self, n_grid: int = 257) -> "Schedule":
        """Raise ValueError unless m_0 = 1, σ_0 = 0 and ∂_t(σ/m) ≥ 0 on a grid (Eq. 24)."""
        if not is_concrete(self):
            return self
        check_tau(self.tau)
        tau = float(self.tau)
        m0, s0 = float(self.m(as_float(0.0))), float(self.sigma2(as_float(0.0)))
        if not np.isclose(m0, 1.0, rtol=0, atol=1e-9):
            raise ValueError(f"a schedule needs m_0 = 1; got m_0 = {m0:.6g}")
        if not np.isclose(s0, 0.0, rtol=0, atol=1e-12):
            raise ValueError(f"a schedule needs sigma_0 = 0; got sigma_0^2 = {s0:.6g}")
        ts = jnp.linspace(0.0, tau, n_grid)[1:-1]
        ratio, temps = (np.asarray(v) for v in _validation_grid(self, ts))
        if not np.all(np.isfinite(ratio)) or not np.all(np.isfinite(temps)):
            raise ValueError("schedule gives non-finite sigma/m or temperature inside (0, tau)")
        bad = np.where((np.diff(ratio) < -1e-12 * np.abs(ratio[1:])) | (temps[1:] < -1e-10))[0]
        if bad.size:
            t_bad = float(ts[bad[0] + 1])
            raise ValueError(
                "d/dt (sigma/m) must be >= 0 (Eq. 24: otherwise the temperature is negative); "
                f"it decreases near t = {t_bad:.4g} (T = {float(temps[bad[0] + 1]):.4g})"
            )
        return self


_BISECTION_STEPS = 200  # halving [0, τ] 200 times reaches the float64 ulp long before the end


def _elementwise(fn, t):
    """fn (written for a scalar time, as every Schedule method is) mapped over t of any shape."""
    t = jnp.asarray(t)
    if t.ndim == 0:
        return fn(t)
    return jax.vmap(fn)(t.ravel()).reshape(t.shape)


@jax.jit
def _validation_grid(sched, ts):
    ratio = jax.vmap(lambda t: sched.sigma2(t) / sched.m(t) ** 2)(ts)
    return ratio, jax.vmap(sched.temperature)(ts)


def _s(sched, t):
    return t / sched.tau


class ConditionalOT(Schedule):
    """cond-OT / rectified flow: m = 1 − t/τ, σ = t/τ (Eq. 28)."""

    @property
    def is_rectified_flow(self) -> bool:
        return True

    def m(self, t):
        return 1.0 - _s(self, t)

    def sigma2(self, t):
        return _s(self, t) ** 2

    def m_vanishes_at_tau(self) -> bool:
        """m_τ = 0."""
        return True

    def log_snr(self, t):
        """λ = 2 log((τ − t)/t), as 2(log(τ − t) − log t): +inf at t = 0, −inf at t = τ."""
        return 2.0 * (jnp.log(self.tau - t) - jnp.log(t))

    def noise_level(self, t):
        """σ/m = t/(τ − t); ``inf`` exactly at t = τ."""
        tau = self.tau
        return jnp.where(t >= tau, jnp.inf, t / jnp.where(t >= tau, 1.0, tau - t))

    def t_of_log_snr(self, lam):
        """(τ − t)/t = e^{λ/2}: t = τ sigmoid(−λ/2)."""
        return self.tau * jax.nn.sigmoid(-0.5 * lam)

    def t_of_noise_level(self, sigma):
        """t = τσ/(1 + σ); σ = inf ↦ τ."""
        tau = self.tau
        return jnp.where(jnp.isinf(sigma), tau, tau * sigma / (1.0 + jnp.where(
            jnp.isinf(sigma), 0.0, sigma)))


class Cosine(Schedule):
    """Cosine schedule: m = cos(πt/2τ), σ = sin(πt/2τ) (Eq. 32)."""

    def ddpm_betas(self, n: int = 1000):
        """diffusers' ``"squaredcos_cap_v2"`` (Nichol & Dhariwal 2021): ᾱ(u) ∝ cos²((u + 0.008)/1.008
        · π/2), β_j = min(1 − ᾱ((j + 1)/n)/ᾱ(j/n), 0.999); it has an offset 0.008 this schedule
        does not have."""
        def abar(u):
            return np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2

        j = np.arange(n)
        return (np.minimum(1.0 - abar((j + 1) / n) / abar(j / n), 0.999),
                f'beta_schedule="squaredcos_cap_v2", num_train_timesteps={n}')

    def m(self, t):
        return jnp.cos(0.5 * jnp.pi * _s(self, t))

    def sigma2(self, t):
        return jnp.sin(0.5 * jnp.pi * _s(self, t)) ** 2

    def m_vanishes_at_tau(self) -> bool:
        """m_τ = cos(π/2) = 0."""
        return True

    def log_snr(self, t):
        """λ = −2 log tan(πs/2) = 2 log cot(πs/2), s = t/τ, as 2(log cos − log sin); −inf at
        t = τ."""
        a = 0.5 * jnp.pi * _s(self, t)
        lam = 2.0 * (jnp.log(jnp.cos(a)) - jnp.log(jnp.sin(a)))
        return jnp.where(t >= self.tau, -jnp.inf, lam)

    def noise_level(self, t):
        """σ/m = tan(πt/2τ); ``inf`` exactly at t = τ."""
        return jnp.where(t >= self.tau, jnp.inf, jnp.tan(0.5 * jnp.pi * _s(self, t)))

    def t_of_log_snr(self, lam):
        """tan(πt/2τ) = e^{−λ/2}: t = (2τ/π) arctan e^{−λ/2}."""
        return (2.0 * self.tau / jnp.pi) * jnp.arctan(jnp.exp(-0.5 * lam))

    def t_of_noise_level(self, sigma):
        """t = (2τ/π) arctan σ (σ = inf ↦ τ)."""
        return (2.0 * self.tau / jnp.pi) * jnp.arctan(sigma)


class VPLinear(Schedule):
    """DDPM linear-β VP schedule: m = exp(−½∫_0^s β), β(s) = β_min + s(β_max − β_min), s = t/τ.

    σ² = 1 − m² (Eq. 31).
    """

    beta_min: jax.Array = 0.1
    beta_max: jax.Array = 20.0

    def ddpm_betas(self, n: int = 1000):
        """diffusers' ``"linear"`` table with ``beta_start`` = β_min/n, ``beta_end`` = β_max/n
        (β_min = 0.1, β_max = 20, n = 1000: DDPM's 1e-4 … 0.02): ᾱ_k = ∏_{j ≤ k}(1 − β_j)
        discretises m_t² = exp(−∫β) on n steps."""
        b0, b1 = float(self.beta_min) / n, float(self.beta_max) / n
        return (np.linspace(b0, b1, n),
                f'beta_schedule="linear", beta_start={b0:g}, beta_end={b1:g}, '
                f"num_train_timesteps={n}")

    def _log_m(self, t):
        s = _s(self, t)
        return -0.5 * (self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2)

    def m(self, t):
        return jnp.exp(self._log_m(t))

    def sigma2(self, t):
        return -jnp.expm1(2.0 * self._log_m(t))

    def _two_a(self, t):
        """2A(s) = β_min s + ½(β_max − β_min) s² = −2 ln m_t, s = t/τ."""
        s = _s(self, t)
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2

    def _t_of_L(self, L):
        """Solve β_min s + ½Δβ s² = L for s ≥ 0 in the cancellation-free form
        s = 2L / (β_min + sqrt(β_min² + 2Δβ L)); t = τ s."""
        bmin = self.beta_min
        dbeta = self.beta_max - self.beta_min
        s = 2.0 * L / (bmin + jnp.sqrt(bmin**2 + 2.0 * dbeta * L))
        return self.tau * s

    def m_vanishes_at_tau(self) -> bool:
        """m_τ = e^{−A(1)} > 0."""
        return False

    def log_snr(self, t):
        """m² = e^{−2A}, σ² = 1 − e^{−2A}: λ = −log(e^{2A} − 1) (expm1; +inf at t = 0)."""
        return -jnp.log(jnp.expm1(self._two_a(t)))

    def noise_level(self, t):
        """σ/m = sqrt(e^{2A} − 1)."""
        return jnp.sqrt(jnp.expm1(self._two_a(t)))

    def t_of_log_snr(self, lam):
        """e^{2A} = 1 + e^{−λ}: 2A = L = softplus(−λ), solved for t by :meth:`_t_of_L`."""
        return self._t_of_L(jax.nn.softplus(-lam))

    def t_of_noise_level(self, sigma):
        """2A = L = log(1 + σ²), solved for t by :meth:`_t_of_L`."""
        return self._t_of_L(jnp.log1p(sigma**2))


class VE(Schedule):
    """Variance-exploding geometric schedule with σ_0 = 0 built in.

    m = 1, σ_t² = σ_min² ((σ_max/σ_min)^{2t/τ} − 1): the geometric σ_min (σ_max/σ_min)^{t/τ}
    of score-SDE VE, shifted so that σ_0 = 0 holds (the transition from the data, not from
    N(data, σ_min²)). T_t = σ_min² ln(σ_max/σ_min) (σ_max/σ_min)^{2t/τ} / τ > 0 for all t.
    """

    sigma_min: jax.Array = 0.01
    sigma_max: jax.Array = 10.0

    def m(self, t):
        return jnp.ones_like(as_float(t))

    def sigma2(self, t):
        log_r = jnp.log(self.sigma_max / self.sigma_min)
        return self.sigma_min**2 * jnp.expm1(2.0 * log_r * _s(self, t))

    def log_m_rate(self, t):
        return jnp.zeros_like(as_float(t))

    def m_vanishes_at_tau(self) -> bool:
        """m = 1."""
        return False

    def log_snr(self, t):
        """m = 1: λ = −log σ² = −(2 log σ_min + log((σ_max/σ_min)^{2s} − 1)) (expm1)."""
        log_r = jnp.log(self.sigma_max / self.sigma_min)
        return -(2.0 * jnp.log(self.sigma_min) + jnp.log(jnp.expm1(2.0 * log_r * _s(self, t))))

    def noise_level(self, t):
        """σ = σ_min sqrt((σ_max/σ_min)^{2t/τ} − 1)."""
        log_r = jnp.log(self.sigma_max / self.sigma_min)
        return self.sigma_min * jnp.sqrt(jnp.expm1(2.0 * log_r * _s(self, t)))

    def t_of_log_snr(self, lam):
        """σ² = e^{−λ}: t = τ log(1 + e^{−λ}/σ_min²) / (2 log(σ_max/σ_min))."""
        log_r = jnp.log(self.sigma_max / self.sigma_min)
        log1p_arg = jnp.exp(-lam - 2.0 * jnp.log(self.sigma_min))
        return self.tau * jnp.log1p(log1p_arg) / (2.0 * log_r)

    def t_of_noise_level(self, sigma):
        """t = τ log(1 + σ²/σ_min²) / (2 log(σ_max/σ_min))."""
        log_r = jnp.log(self.sigma_max / self.sigma_min)
        return self.tau * jnp.log1p((sigma / self.sigma_min) ** 2) / (2.0 * log_r)


class PolarSchedule(Schedule):
    """Learnable monotone family in polar form: m = r cos θ, σ = r sin θ (free or VP).

    θ(s) = (π/2) F(s), s = t/τ, with F(s) = ∫_0^s p(u)² du / ∫_0^1 p(u)² du a monotone, C∞ map of
    [0, 1] onto itself (p a Legendre series with coefficients ``angle``); so σ/m = tan θ never
    decreases (Eq. 24 holds for every parameter value) and m_0 = 1, σ_0 = 0, m_τ = 0, σ_τ = r_τ.
    ln r(s) = s(1 − s) Σ_j b_j P_j(2s − 1) with coefficients ``log_radius``, so r_0 = r_τ = 1;
    an empty ``log_radius`` gives the VP-constrained family (m² + σ² = 1, Eq. 31).

    Cosine is exactly ``angle = (1, 0, ...)``, ``log_radius = 0``; cond-OT is reached to high
    accuracy by :func:`fit_polar` (θ = atan(s/(1−s)), r = sqrt((1−s)² + s²)).

    ``log_edge`` (shape (1,); empty: off) mixes in the arcsine law A(s) = (2/π) arcsin √s,
    F = (F_p + w A)/(1 + w), w = exp(log_edge): θ ∝ √s at s = 0 and π/2 − θ ∝ √(1 − s) at
    s = 1, which polynomial densities cannot represent and which the c_2-optimal VP schedules
    need (for Gaussian data the VP geodesic has σ_t ∝ √t at the start, docs/theory.md §7).
    """

    angle: jax.Array = None
    log_radius: jax.Array = None
    log_edge: jax.Array = None

    @property
    def vp(self) -> bool:
        return self.log_radius.shape[0] == 0

    def _F(self, s):
        deg = self.angle.shape[0]
        n_q = deg + 1  # exact for the polynomial p² of degree 2(deg − 1)
        u, w = gauss_legendre(n_q, 0.0, 1.0)

        def p(x):
            return _legval(2.0 * x - 1.0, self.angle)

        z = jnp.sum(w * p(u) ** 2)
        F = s * jnp.sum(w * p(s * u) ** 2) / z
        if self.log_edge is None or self.log_edge.shape[0] == 0:
            return F
        e = jnp.exp(self.log_edge[0])
        arcsine = (2.0 / jnp.pi) * jnp.arcsin(jnp.sqrt(jnp.clip(s, 0.0, 1.0)))
        return (F + e * arcsine) / (1.0 + e)

    def theta(self, t):
        return 0.5 * jnp.pi * self._F(_s(self, t))

    def radius(self, t):
        s = _s(self, t)
        if self.vp:
            return jnp.ones_like(s)
        return jnp.exp(s * (1.0 - s) * _legval(2.0 * s - 1.0, self.log_radius))

    def m(self, t):
        return self.radius(t) * jnp.cos(self.theta(t))

    def sigma2(self, t):
        return (self.radius(t) * jnp.sin(self.theta(t))) ** 2


def _legval(x, coeffs):
    """Legendre series Σ_j c_j P_j(x) by the three-term recurrence (scalar x)."""
    n = coeffs.shape[0]
    if n == 0:
        return jnp.zeros_like(x)
    p_prev, p_cur = jnp.ones_like(x), x
    total = coeffs[0] * p_prev
    if n > 1:
        total = total + coeffs[1] * p_cur
    for j in range(2, n):
        p_prev, p_cur = p_cur, ((2 * j - 1) * x * p_cur - (j - 1) * p_prev) / j
        total = total + coeffs[j] * p_cur
    return total


class FunctionSchedule(Schedule):
    """A schedule from user functions m(t) and σ(t) (static callables); validated on a grid."""

    m_fn: Callable = struct.field(pytree_node=False, default=None)
    sigma_fn: Callable = struct.field(pytree_node=False, default=None)

    def m(self, t):
        return self.m_fn(t)

    def sigma2(self, t):
        return self.sigma_fn(t) ** 2


# ----------------------------------------------------------------------------- constructors


def _build(cls, tau, **kw):
    check_tau(tau)
    return cls(tau=as_float(tau), **{k: as_float(v) for k, v in kw.items()}).validate()


def cond_ot(tau=1.0) -> ConditionalOT:
    """cond-OT (rectified flow) schedule m = 1 − t/τ, σ = t/τ (Eq. 28)."""
    return _build(ConditionalOT, tau)


def cosine(tau=1.0) -> Cosine:
    """Cosine schedule m = cos(πt/2τ), σ = sin(πt/2τ) (Eq. 32)."""
    return _build(Cosine, tau)


def vp_linear(beta_min=0.1, beta_max=20.0, tau=1.0) -> VPLinear:
    """DDPM linear-β VP schedule (Eq. 31); requires 0 ≤ β_min and β_min + β_max > 0."""
    if is_concrete(beta_min, beta_max):
        if float(beta_min) < 0 or float(beta_max) < 0 or float(beta_min) + float(beta_max) <= 0:
            raise ValueError(
                f"vp-linear needs beta_min >= 0, beta_max >= 0, not both 0; got "
                f"beta_min={float(beta_min)}, beta_max={float(beta_max)}")
    return _build(VPLinear, tau, beta_min=beta_min, beta_max=beta_max)


def ve(sigma_min=0.01, sigma_max=10.0, tau=1.0) -> VE:
    """VE schedule σ_t² = σ_min²((σ_max/σ_min)^{2t/τ} − 1), m = 1."""
    if is_concrete(sigma_min, sigma_max):
        if not (0 < float(sigma_min) < float(sigma_max)):
            raise ValueError(
                "ve needs 0 < sigma_min < sigma_max (sigma must grow, Eq. 24); got "
                f"sigma_min={float(sigma_min)}, sigma_max={float(sigma_max)}")
    return _build(VE, tau, sigma_min=sigma_min, sigma_max=sigma_max)


def polar(n_angle: int = 6, n_radius: int = 6, *, vp: bool = False, tau=1.0,
          angle=None, log_radius=None, edge: Optional[bool] = None,
          log_edge=None) -> PolarSchedule:
    """Learnable schedule, initialised at cosine (``angle = e_0``, ``log_radius = 0``).

    Args:
      n_angle: number of Legendre coefficients of p (θ's density), ≥ 1.
      n_radius: number of Legendre coefficients of ln r; ignored (0) when ``vp``.
      vp: the VP-constrained variant m² + σ² = 1.
      angle, log_radius: explicit coefficients instead of the cosine initialisation.
      edge: include the arcsine component (``log_edge``, initialised at ln 0.05, i.e. 5 % of
        the angle's law); default: for the VP family only.
      log_edge: explicit value (shape (1,)).
    """
    if n_angle > 64 or n_radius > 64:
        raise ValueError(f"`n_angle` and `n_radius` must be <= 64; got {n_angle}, {n_radius}")
    edge = vp if edge is None else bool(edge)
    if log_edge is None:
        log_edge = jnp.full((1,), float(np.log(0.05))) if edge else jnp.zeros((0,))
    log_edge = as_float(log_edge)
    if n_angle < 1:
        raise ValueError(f"`n_angle` must be >= 1; got {n_angle}")
    if angle is None:
        angle = jnp.zeros((n_angle,)).at[0].set(1.0)
    if vp:
        log_radius = jnp.zeros((0,))
    elif log_radius is None:
        log_radius = jnp.zeros((n_radius,))
    angle, log_radius = as_float(angle), as_float(log_radius)
    if angle.ndim != 1 or log_radius.ndim != 1:
        raise ValueError("`angle` and `log_radius` must be 1-D coefficient arrays")
    if is_concrete(angle) and not bool(jnp.any(angle != 0)):
        raise ValueError("`angle` coefficients must not all be zero (θ would be undefined)")
    check_tau(tau)
    return PolarSchedule(tau=as_float(tau), angle=angle, log_radius=log_radius,
                         log_edge=log_edge).validate()


def from_functions(m_fn, sigma_fn, tau=1.0) -> FunctionSchedule:
    """Schedule from callables m(t), σ(t) on [0, τ]; validated (m_0 = 1, σ_0 = 0, Eq. 24)."""
    if not callable(m_fn) or not callable(sigma_fn):
        raise TypeError("`m_fn` and `sigma_fn` must be callables of t")
    check_tau(tau)
    return FunctionSchedule(tau=as_float(tau), m_fn=m_fn, sigma_fn=sigma_fn).validate()


def fit_polar(target: Schedule, n_angle: int = 8, n_radius: int = 8, *, vp: bool = False,
              n_nodes: int = 64, steps: int = 3000, learning_rate: float = 0.02) -> PolarSchedule:
    """Least-squares fit of a :class:`PolarSchedule` to ``target`` (m and σ at GL nodes), optax."""
    import optax

    init = polar(n_angle, n_radius, vp=vp, tau=target.tau, edge=False)
    ts, w = gauss_legendre(n_nodes, 0.0, target.tau)
    m_ref, s_ref = jax.vmap(target.m)(ts), jax.vmap(target.sigma)(ts)

    def loss(p):
        sch = init.replace(**p)
        dm = jax.vmap(sch.m)(ts) - m_ref
        ds = jax.vmap(sch.sigma)(ts) - s_ref
        return jnp.sum(w * (dm**2 + ds**2)) / target.tau

    params = {"angle": init.angle, "log_radius": init.log_radius, "log_edge": init.log_edge}
    opt = optax.adam(learning_rate)

    @jax.jit
    def step(p, state):
        val, g = jax.value_and_grad(loss)(p)
        upd, state = opt.update(g, state, p)
        return optax.apply_updates(p, upd), state, val

    state = opt.init(params)
    for _ in range(steps):
        params, state, _ = step(params, state)
    return init.replace(**params).validate()


# ------------------------------------------------------------------ flow-matching conventions


def to_flow_matching(schedule: Schedule):
    """(α(s), σ(s)) of the flow-matching convention, s = 0 noise: α_s = m(τ(1−s))."""
    def alpha(s):
        return schedule.m(schedule.tau * (1.0 - s))

    def sigma(s):
        return schedule.sigma(schedule.tau * (1.0 - s))

    return alpha, sigma


def from_flow_matching(alpha_fn, sigma_fn, tau=1.0) -> FunctionSchedule:
    """Schedule from flow-matching (α_s, σ_s), s = 0 noise: m(t) = α(1 − t/τ), σ(t) = σ_s(1 − t/τ)."""
    tau_f = as_float(tau)
    return from_functions(lambda t: alpha_fn(1.0 - t / tau_f),
                          lambda t: sigma_fn(1.0 - t / tau_f), tau=tau)


def velocity_to_flow_matching(velocity_fn, tau):
    """u(x, s) = −τ ν(x, τ(1 − s)): our velocity ν(x, t) as a flow-matching velocity."""
    return lambda x, s: -tau * velocity_fn(x, tau * (1.0 - s))


def velocity_from_flow_matching(u_fn, tau):
    """ν(x, t) = −u(x, 1 − t/τ)/τ: a flow-matching velocity in satjax's time."""
    return lambda x, t: -u_fn(x, 1.0 - t / tau) / tau
