"""A PyTorch model for ``satjax steps --velocity``: the three lines that wrap any model.

``satjax steps`` calls ``velocity(x, t)`` with a NumPy array x (n, d) and a float time and
expects dx/dt back as NumPy (n, d); it never differentiates the model (the grid's gradient is
taken by differences), so ``torch.no_grad`` is right. The "model" here is the exact
flow-matching velocity of ½N(−2, ¼) + ½N(2, ¼) written in torch, in flow-matching time
(s = 0 noise, s = 1 data, torchcfm's convention):

    x_s = s·y + (1 − s)·ε,   u_s(x) = E[y − ε | x_s = x]

so that the grid satjax returns can be checked; replace ``MixtureFlow`` by your network::

    satjax steps --data "gmm:means=-2|2,std=0.5,weights=0.5|0.5" --protocol cond-ot --n 8 \\
        --velocity examples/torch_velocity.py:velocity --velocity-convention flow-matching \\
        --format flow-matching --json grid.json
"""

import torch

MEANS = torch.tensor([[-2.0], [2.0]], dtype=torch.float64)
STD = 0.5


class MixtureFlow(torch.nn.Module):
    """u_s(x) = Σ_k r_k(x) (E[y | x, k] − E[ε | x, k]) for the components N(μ_k, STD²)."""

    def forward(self, x, s):
        c = s**2 * STD**2 + (1 - s) ** 2                      # variance of x_s | k
        r = x[:, None, :] - s * MEANS[None]                   # (n, K, d)
        w = torch.softmax(-0.5 * (r**2).sum(-1) / c, dim=1)   # equal weights
        y = MEANS[None] + (s * STD**2 / c) * r                # E[y | x, k]
        eps = ((1 - s) / c) * r                               # E[ε | x, k]
        return torch.einsum("nk,nkd->nd", w, y - eps)


model = MixtureFlow().eval()


def velocity(x, s):
    with torch.no_grad():
        return model(torch.from_numpy(x), float(s)).numpy()
