# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Optimising the noise schedule
#
# For schedules (m_t, σ_t) the force is conservative, so c₂ = w_D, and both are differentiable
# in the schedule. The learnable polar family m = r cos θ, σ = r sin θ keeps ∂_t(σ/m) ≥ 0 for
# every parameter value (Eq. 24). Minimising the conditional energy n_d ∫(m'² + σ'²) dt (Eq. 93)
# gives cond-OT; under m² + σ² = 1 it gives cosine; minimising the exact c₂ of the data beats
# both, and the geodesic floor W₂²/τ bounds everything from below.

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)
from satjax import mixtures, optimize, path, schedules  # noqa: E402

QUICK = os.environ.get("SATJAX_QUICK", "0") == "1"
q = mixtures.gmm([-2.0, 2.0], 0.5)

# %%
res = optimize.optimize_schedule(q, family="free", objective="c2", steps=60 if QUICK else 300)
for name, s in (("cosine", schedules.cosine()), ("cond-OT", schedules.cond_ot()),
                ("optimised", res.schedule)):
    print(f"{name:10s} c2 = {float(path.path_cost(s, q).c2):.5f}")
print("W2^2/tau   =", path.endpoint_w2sq(schedules.cosine(), q)[0])

# %% [markdown]
# The known optimum of the conditional energy: cond-OT (value 2 per dimension).

# %%
cond = optimize.optimize_schedule(q, family="free", objective="conditional", steps=100 if QUICK else 400)
print("conditional energy:", float(cond.best_value), "(cond-OT: 2.0)")
