"""A velocity written in plain NumPy, outside satjax: the exact probability-flow velocity of a
Gaussian mixture under the cond-OT (rectified-flow) path x_t = (1 − t) x_0 + t ε, t = 0 data,
t = 1 noise.

Use it with ``satjax steps --velocity examples/numpy_velocity.py:velocity`` (paper time) or
``examples/numpy_velocity.py:velocity_flow_matching`` with ``--velocity-convention
flow-matching``. Any model works the same way: a function of a NumPy array x (n, d) and a float
time that returns dx/dt as a NumPy array (n, d).
"""

import numpy as np

MEANS = np.array([[-2.0], [2.0]])   # (K, d): the data of `--data "gmm:means=-2|2,std=0.5,..."`
STD = 0.5
WEIGHTS = np.array([0.5, 0.5])


def velocity(x, t):
    """dx/dt = E[ε − x_0 | x_t = x] at paper time t ∈ [0, 1] (0 data, 1 noise)."""
    a, b = 1.0 - t, t                                   # x_t = a x_0 + b ε
    c = a**2 * STD**2 + b**2                             # per-dimension variance of x_t | k
    r = x[:, None, :] - a * MEANS[None]                  # (n, K, d)
    logp = np.log(WEIGHTS) - 0.5 * np.sum(r**2, -1) / c - 0.5 * x.shape[1] * np.log(c)
    w = np.exp(logp - logp.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)                         # responsibilities (n, K)
    x0 = MEANS[None] + (a * STD**2 / c) * r              # E[x_0 | x, k]
    eps = (b / c) * r                                    # E[ε | x, k]
    return np.einsum("nk,nkd->nd", w, eps - x0)


def velocity_flow_matching(x, s):
    """The same field in flow-matching time s = 1 − t (0 noise, 1 data): dx/ds = −dx/dt."""
    return -velocity(x, 1.0 - s)
