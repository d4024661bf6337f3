"""Memory-bounded mapping over time nodes and points (satjax._util) equals the plain vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from satjax import _util


def _node_fn(t):
    """Per node: a batched 3 × 3 solve (LAPACK inside the map) and a reduction, as in the closed
    forms of the estimators."""
    A = jnp.eye(3) * (2.0 + t) + 0.1 * t * jnp.ones((3, 3))
    b = jnp.array([1.0, t, t**2])
    x = jnp.linalg.solve(A, b)
    return {"x": x, "s": jnp.sum(x**2) + jnp.sin(t)}


@pytest.mark.parametrize("n", [1, 7, 64, 96, 97])
@pytest.mark.parametrize("per_node", [1, 1 << 16, 1 << 17, 1 << 22])
def test_map_over_nodes_equals_vmap(n, per_node):
    """Every batch size, including a last batch that is padded, gives vmap's values to rounding
    (batch = 2^22 // per_node nodes: all of them, 64, 32 or 1); a node mapped to the wrong
    value (the failure of lax.map's batch_size remainder seen under jax 0.10.2) differs by O(1)."""
    ts = jnp.linspace(0.0, 1.0, n)
    ref = jax.vmap(_node_fn)(ts)
    got = jax.jit(lambda t: _util.map_over_nodes(_node_fn, t, per_node))(ts)
    np.testing.assert_allclose(np.asarray(got["x"]), np.asarray(ref["x"]), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(np.asarray(got["s"]), np.asarray(ref["s"]), rtol=1e-14, atol=1e-16)
    # and against the closed form of each solve (numpy), not only against vmap
    for i in (0, n - 1):
        t = float(ts[i])
        A = np.eye(3) * (2.0 + t) + 0.1 * t * np.ones((3, 3))
        np.testing.assert_allclose(np.asarray(got["x"][i]), np.linalg.solve(A, [1.0, t, t * t]),
                                   rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("budget", [1 << 30, 4096, 64])
def test_map_over_points_equals_direct(budget):
    """Blocks of points (a power of two dividing n) give the direct evaluation."""
    x = jnp.linspace(-3.0, 3.0, 1024)

    def fn(v):
        return jnp.exp(-v**2) * jnp.cos(3 * v), jnp.stack([v, v**2], -1)

    ref = fn(x)
    got = _util.map_over_points(fn, x, bytes_per_point=64, budget=budget)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(ref[0]), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(ref[1]), rtol=1e-14, atol=1e-16)
