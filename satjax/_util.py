"""Small shared helpers: concreteness checks, time derivatives, Gauss–Legendre nodes, batched
maps, host programs in parallel threads."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(*xs) -> bool:
    """True when no argument is a tracer, i.e. values can be checked eagerly."""
    leaves = jax.tree_util.tree_leaves(xs)
    return not any(isinstance(x, jax.core.Tracer) for x in leaves)


def time_derivative(fn, t):
    """(fn(t), d fn / dt) by forward-mode autodiff; fn maps a scalar time to a pytree."""
    t = jnp.asarray(t)
    return jax.jvp(fn, (t,), (jnp.ones_like(t),))


def gauss_legendre(n: int, a=0.0, b=1.0):
    """Gauss–Legendre nodes and weights on [a, b] (end points excluded)."""
    x, w = np.polynomial.legendre.leggauss(int(n))
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    half = 0.5 * (b - a)
    return a + half * (jnp.asarray(x) + 1.0), half * jnp.asarray(w)


def check_time(t, tau, name: str = "t") -> None:
    """Eager ValueError when a concrete time lies outside [0, tau]."""
    if is_concrete(t, tau):
        t_np = np.asarray(t, dtype=float)
        tau_f = float(np.asarray(tau))
        if np.any(t_np < -1e-12 * max(tau_f, 1.0)) or np.any(t_np > tau_f * (1 + 1e-12)):
            raise ValueError(
                f"`{name}` must lie in [0, tau] = [0, {tau_f:g}]; got values in "
                f"[{t_np.min():g}, {t_np.max():g}]"
            )


def check_tau(tau) -> None:
    if is_concrete(tau):
        tau_np = np.asarray(tau, dtype=float)
        if tau_np.shape != ():
            raise ValueError(f"`tau` must be a scalar; got shape {tau_np.shape}")
        if not np.isfinite(tau_np) or tau_np <= 0:
            raise ValueError(f"`tau` must be a finite number > 0; got {float(tau_np)}")


def as_float(x):
    """A JAX array of the default float dtype (float64 under x64)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


NODE_BATCH_ELEMENTS = 1 << 22  # per-node work arrays held at once when mapping over time nodes


def map_over_nodes(fn, ts, elements_per_node: int):
    """``vmap(fn)(ts)`` in batches, so at most ~NODE_BATCH_ELEMENTS per-node elements live at once.

    Time nodes are independent; vmapping all of them multiplies memory by their number (a
    64-node integral over 10⁵ samples in 784-D would hold 20 GB). ``lax.map`` with a batch
    size keeps memory bounded and the cost linear in the number of nodes.
    """
    n = jax.tree_util.tree_leaves(ts)[0].shape[0]
    batch = int(max(1, min(n, NODE_BATCH_ELEMENTS // max(1, int(elements_per_node)))))
    return map_in_batches(fn, ts, batch)


def map_in_batches(fn, xs, batch: int):
    """``vmap(fn)(xs)`` over the leading axis of ``xs``, ``batch`` elements at a time: one
    ``lax.map`` (no vmap) for ``batch`` 1, one ``vmap`` when it covers them all."""
    tree = jax.tree_util
    n = tree.tree_leaves(xs)[0].shape[0]
    if batch >= n:
        return jax.vmap(fn)(xs)
    if batch <= 1:
        return jax.lax.map(fn, xs)
    # equal batches (the last padded by repeating the first element, then dropped): explicit,
    # rather than lax.map's batch_size, whose remainder handling is version-dependent
    n_batch = -(-n // batch)
    pad = n_batch * batch - n

    def split(a):
        a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])]) if pad else a
        return a.reshape((n_batch, batch) + a.shape[1:])

    out = jax.lax.map(jax.vmap(fn), tree.tree_map(split, xs))
    return tree.tree_map(lambda a: a.reshape((n_batch * batch,) + a.shape[2:])[:n], out)


MAX_HOST_THREADS = 8  # host programs (exact linear programs, assignments) run at once at most


def host_threads() -> int:
    """Threads for host programs run at once: one per core this process may use, at most
    MAX_HOST_THREADS (POT's network simplex and SciPy's assignment release Python's lock)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_HOST_THREADS))


def host_batched(host_fn, core_ranks):
    """``host_fn`` for ``jax.pure_callback(..., vmap_method="expand_dims")``: under ``vmap`` its
    arguments get leading axes (their last ``core_ranks[k]`` axes are one problem's) and each
    problem of the batch is solved in a parallel thread, with the numbers of one at a time."""
    def run(*args):
        args = [np.asarray(a) for a in args]
        lead = np.broadcast_shapes(*(a.shape[:a.ndim - r] for a, r in zip(args, core_ranks)))
        if not lead:
            return host_fn(*args)
        size = int(np.prod(lead))
        args = [np.broadcast_to(a, lead + a.shape[a.ndim - r:]).reshape(
            (size,) + a.shape[a.ndim - r:]) for a, r in zip(args, core_ranks)]
        with ThreadPoolExecutor(max_workers=min(size, host_threads())) as pool:
            outs = list(pool.map(lambda k: host_fn(*(a[k] for a in args)), range(size)))
        if not isinstance(outs[0], tuple):
            return np.stack(outs).reshape(lead + np.shape(outs[0]))
        return tuple(np.stack([o[m] for o in outs]).reshape(lead + np.shape(outs[0][m]))
                     for m in range(len(outs[0])))
    return run


def map_over_points(fn, x, bytes_per_point: int, budget: int):
    """``fn(x)`` for a pointwise ``fn`` of a 1-D array ``x`` (n,), in blocks of points (a power
    of two dividing n) so that at most ~``budget`` bytes of work arrays live at once."""
    n = x.shape[0]
    block = n
    while block % 2 == 0 and block > 1 and block * bytes_per_point > budget:
        block //= 2
    if block == n:
        return fn(x)
    out = jax.lax.map(fn, x.reshape(n // block, block))
    return jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[2:]), out)


def compiled_peak_bytes(compiled) -> int:
    """Peak memory of a compiled XLA program by its memory analysis: arguments, outputs and
    temporaries (0 where the backend gives no analysis). Host callbacks inside it (the exact
    linear programs) are not counted."""
    ma = compiled.memory_analysis()
    if ma is None:
        return 0
    return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes)


# measured peaks exceed XLA's buffer analysis (runtime allocations, host callbacks): 1.7 times
# for the 2-D c_1 optimisation step (6.6 GiB estimated, 11.4 GB peak RSS)
PEAK_OVER_ANALYSIS = 2.0


def compile_within(jitted, args, max_bytes, what: str, change: str):
    """``jitted`` compiled for ``args``, refused with a ValueError naming the size, ``what`` and
    ``change`` when its expected peak, ``PEAK_OVER_ANALYSIS`` times XLA's estimate, exceeds
    ``max_bytes`` (None: no limit) — before it runs."""
    compiled = jitted.lower(*args).compile()
    need = PEAK_OVER_ANALYSIS * compiled_peak_bytes(compiled)
    if max_bytes is not None and need > max_bytes:
        raise ValueError(f"{what} needs about {need / 2**30:.1f} GiB ({PEAK_OVER_ANALYSIS:g} "
                         f"times XLA's estimate of its buffers), more than the "
                         f"{max_bytes / 2**30:.1f} GiB allowed: {change}")
    return compiled
