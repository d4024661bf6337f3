"""Write a trajectory file for ``satjax measure`` from PyTorch (no JAX, no satjax).

The flow simulated here is the exact flow-matching velocity of Gaussian data under the
conditional-OT path, written out in torch, in flow-matching time (s = 0 noise, s = 1 data, as in
torchcfm and most flow-matching code):

    x_s = s·y + (1 − s)·ε,   y ~ N(μ, std² I),   ε ~ N(0, I)

The marginal of x_s is N(s μ, C_s I) with C_s = s² std² + (1 − s)², and the velocity that
transports it (the conditional expectation of y − ε given x_s) is

    u_s(x) = μ + (½ C_s' / C_s) (x − s μ),   ½ C_s' = s std² − (1 − s).

Starting from noise at s = 0 the script integrates dx/ds = u_s(x) with RK4 and saves every
step. Any model works the same way: replace ``velocity`` by your network and keep the saving.

The file holds ``t`` (K,), ``x`` (K, N, d), ``v`` (K, N, d) and ``convention`` =
"flow-matching" (satjax converts to its own time, t = 1 − s, v = −u)::

    python examples/torch_trajectories.py --out traj.npz
    satjax measure --trajectories traj.npz --json - --plot traj.png

For this flow the cost ∫ E‖u‖² ds has a closed form, ‖μ‖² + d (1 + std² − π std / 2), which
the script prints for comparison.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch


def velocity(x: torch.Tensor, s: float, mean: torch.Tensor, std: float) -> torch.Tensor:
    """The exact cond-OT flow-matching velocity u_s(x) of N(mean, std² I) data."""
    c = s * s * std * std + (1.0 - s) ** 2
    half_dc = s * std * std - (1.0 - s)
    return mean + (half_dc / c) * (x - s * mean)


def simulate(n: int = 4096, steps: int = 100, mean=(1.0, -0.5), std: float = 0.5,
             seed: int = 0):
    """(s (K,), x (K, N, d), u (K, N, d)) of ``n`` RK4 trajectories from noise (s = 0) to data."""
    torch.manual_seed(seed)
    mu = torch.tensor(mean, dtype=torch.float64)
    x = torch.randn(n, mu.numel(), dtype=torch.float64)
    s_grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    xs, us = [x], [velocity(x, 0.0, mu, std)]
    for i in range(steps):
        s0, s1 = float(s_grid[i]), float(s_grid[i + 1])
        h = s1 - s0
        k1 = velocity(x, s0, mu, std)
        k2 = velocity(x + 0.5 * h * k1, s0 + 0.5 * h, mu, std)
        k3 = velocity(x + 0.5 * h * k2, s0 + 0.5 * h, mu, std)
        k4 = velocity(x + h * k3, s1, mu, std)
        x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        xs.append(x)
        us.append(velocity(x, s1, mu, std))
    return s_grid.numpy(), torch.stack(xs).numpy(), torch.stack(us).numpy()


def closed_form_cost(mean, std: float) -> float:
    """∫_0^1 E‖u_s‖² ds = ‖μ‖² + d (1 + std² − π std / 2) (see tests/test_measure.py)."""
    mean = np.asarray(mean, float)
    return float(mean @ mean + mean.size * (1.0 + std * std - math.pi * std / 2.0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="trajectories.npz", help="output .npz file")
    ap.add_argument("--n", type=int, default=4096, help="number of trajectories")
    ap.add_argument("--steps", type=int, default=100, help="RK4 steps (K = steps + 1 times)")
    ap.add_argument("--mean", default="1,-0.5", help="data mean, comma-separated (d = length)")
    ap.add_argument("--std", type=float, default=0.5, help="data standard deviation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    mean = tuple(float(c) for c in args.mean.split(","))
    s, x, u = simulate(args.n, args.steps, mean, args.std, args.seed)
    np.savez(args.out, t=s, x=x, v=u, convention="flow-matching")
    print(f"wrote {args.out}: {x.shape[1]} trajectories, {x.shape[0]} times, d = {x.shape[2]}; "
          f"closed-form cost {closed_form_cost(mean, args.std):.6g}")


if __name__ == "__main__":
    main()
