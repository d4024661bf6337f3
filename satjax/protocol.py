"""The Protocol interface: everything that moves data to noise (docs/theory.md §1, §7).

A protocol, applied to a data distribution q, defines the forward path P_t (t = 0 data, t = τ
noise) and its mean local velocity ν_t, ∂_t P_t = −∇·(ν_t P_t) (Eq. 1). Two families implement
it:

* diffusions with a linear force f_t(x) = A_t x + b_t and temperature T_t (Eq. 2, 16):
  :class:`satjax.forces.LinearForce` — the noise schedules of :mod:`satjax.schedules`, the
  rotating force of Eq. 99 and general linear forces;
* deterministic transports (T = 0): the W2 geodesics of :mod:`satjax.geometry.ot_protocol`
  (exact in 1-D, closed form for Gaussians, sample-based in n-D).

Everything downstream (:mod:`satjax.path`, :mod:`satjax.bound`, :mod:`satjax.reverse`,
:mod:`satjax.optimize`, the CLI) uses only the methods below, never the concrete classes.
Protocols are immutable pytrees: their numbers are array leaves (differentiable, never
recompiling); their class and static fields fix the compiled program.
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Real

from satjax import sharding as sh
from satjax.engine import Fields
from satjax.pytree import Node

OUTPUTS = ("log_prob", "score", "velocity")


class Draws(Node):
    """Common random numbers of a data mixture: component indices ``idx`` (n,) and standard
    normal ``eps`` (n, d). A protocol maps them to samples of P_t (``sample_given``), so one set
    of draws gives smooth, differentiable Monte-Carlo estimates at every t."""

    idx: jax.Array
    eps: jax.Array

    @property
    def n(self) -> int:
        return self.eps.shape[0]


def _draws(key, data, n):
    k1, k2 = jax.random.split(key)
    idx = jax.random.choice(k1, data.n_components, (n,), p=data.weights)
    return Draws(idx=idx, eps=jax.random.normal(k2, (n, data.dim), data.means.dtype))


@partial(jax.jit, static_argnames=("n", "mesh"))
def _draws_sharded(key, data, n, mesh):
    return sh.constrain(_draws(key, data, n), mesh)  # each device draws its own block


def draws(key, data, n: int, *, shard: sh.ShardSpec = False) -> Draws:
    """n common random draws (component index, standard normal) of a Gaussian-mixture ``data``.

    ``shard``: split the draws over devices (``True``: all; or a mesh with a ``"samples"`` axis;
    see :mod:`satjax.sharding`); the numbers equal the unsharded ones; n must be divisible by
    the device count.

    Raises:
      ValueError: n < 2.
    """
    if n < 2:
        raise ValueError(f"need at least 2 Monte-Carlo samples; got {n}")
    mesh = sh.resolve(shard)
    if mesh is None:
        return _draws(key, data, n)
    sh.check_divisible(n, mesh)
    return _draws_sharded(key, data, n, mesh)


class Rates(Node):
    """Expectations under P_t at one time (arrays get a leading axis when mapped over times).

    ``kinetic`` = E‖ν‖² (= T Ṡ_tot, Eq. 36), ``speed_sq`` = v_2² (Eq. 66), ``score_flux`` =
    E[ν·∇ln P] (= −Ṡ_sys, Eq. 38), ``force_flux`` = E[f·ν] (= T Ṡ_bath, Eq. 39; None for a
    deterministic transport).
    """

    kinetic: jax.Array
    speed_sq: jax.Array
    score_flux: Optional[jax.Array] = None
    force_flux: Optional[jax.Array] = None


class Protocol(Node):
    """Abstract forward protocol on t ∈ [0, τ]; t = 0 data, t = τ noise."""

    tau: jax.Array

    # ------------------------------------------------------------------ structure
    @property
    def dim(self) -> Optional[int]:
        """The dimension the protocol acts in (None: any)."""
        return None

    @property
    def conservative(self) -> bool:
        """True when ν_t is a gradient field for every data set (no circulation), so that
        v_2² = E‖ν‖² (Eq. 67). A traced parameter that could break it counts as False."""
        return True

    @property
    def stochastic(self) -> bool:
        """True for a diffusion with temperature T_t (Eq. 2); False for a deterministic
        transport, whose entropy production S_tot is undefined (T = 0)."""
        return True

    @property
    def has_density(self) -> bool:
        """Whether :meth:`marginal` and the ``log_prob``/``score`` fields exist (False for
        protocols known only through particles)."""
        return True

    def check(self, data) -> None:
        """Eager ValueError/TypeError when ``data`` cannot be used with this protocol."""
        if self.dim is not None and self.dim != data.dim:
            raise ValueError(f"protocol acts in {self.dim} dimensions but data has dimension "
                             f"{data.dim}")

    def describe(self) -> dict:
        """Class name and parameters (JSON-ready): how checkpoints and reports record it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the path of data
    def marginal(self, data, t):
        """P_t as a :class:`satjax.distribution.Distribution`."""
        raise NotImplementedError(f"{type(self).__name__} gives no density of P_t")

    def reverse_start(self, data):
        """P_τ, the exact reverse start, as a Distribution."""
        return self.marginal(data, self.tau)

    def fields(self, data, x: Float[Array, "n d"], t: Real[ArrayLike, ""],
               outputs=OUTPUTS) -> Fields:
        """log P_t, ∇ln P_t and ν_t at points x (N, d) (only the requested ``outputs``)."""
        raise NotImplementedError

    def sample_given(self, data, t: Real[ArrayLike, ""], draws: Draws) -> Float[Array, "n d"]:
        """Samples of P_t (n, d) from common random numbers (reparameterised: differentiable)."""
        raise NotImplementedError

    def velocity_given(self, data, t: Real[ArrayLike, ""], draws: Draws):
        """ν_t at the points :meth:`sample_given` returns for the same draws, when the protocol
        knows it from its construction (a geodesic's straight lines); None: evaluate
        :meth:`fields` there."""
        return None

    def flow_map_1d(self, data, t, x0):
        """1-D only, optional: the Lagrangian position X_t(x₀) at time t of the data point x₀
        (the monotone rearrangement), for protocols that have it in closed form; None when
        not available (then :mod:`satjax.bound` inverts CDFs on a grid)."""
        return None

    def sample(self, key, data, t: Real[ArrayLike, ""], n: int) -> Float[Array, "n d"]:
        """n samples of P_t, shape (n, d)."""
        return self.sample_given(data, t, _draws(key, data, n))

    # ------------------------------------------------------------------ thermodynamics
    def temperature(self, t) -> jax.Array:
        """T_t ≥ 0 (0 for a deterministic transport)."""
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def force(self, x, t) -> jax.Array:
        """f_t(x) for one point x (d,) (diffusions only)."""
        raise NotImplementedError(f"{type(self).__name__} is a deterministic transport: no force")

    def circulation(self, t) -> Optional[jax.Array]:
        """The antisymmetric part (K − Kᵀ)/2 of the force matrix, through which a linear force
        makes ν_t non-conservative (docs/theory.md §5); None when there is none."""
        return None

    # ------------------------------------------------------------------ closed forms
    def has_exact_rates(self, data) -> bool:
        """Whether :meth:`exact_rates` has a closed form for this data (static decision)."""
        return False

    def exact_rates(self, data, t) -> Rates:
        """Closed-form :class:`Rates` (Gaussian P_t, or a geodesic's constant speed)."""
        raise NotImplementedError
