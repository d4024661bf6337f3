# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Schedule optimisation — descend c₂ itself
#
# The conditional energy of Eq. 93 is minimised by cond-OT (free) and cosine (VP); the true c₂ of
# the data's path is lower for an optimised schedule, bounded below by W₂²/τ (Eq. 68–70).

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)
from satjax import mixtures, optimize, path, schedules  # noqa: E402

QUICK = os.environ.get("SATJAX_QUICK", "0") == "1"
q = mixtures.gmm([-2.0, 2.0], 0.5)

res = optimize.optimize_schedule(q, family="free", objective="c2", steps=60 if QUICK else 300)
for name, s in (("cosine", schedules.cosine()), ("cond-OT", schedules.cond_ot()),
                ("optimised", res.schedule)):
    print(f"{name:10s} c2 = {path.path_cost(s, q).c2.text()}")
print("W2^2/tau   =", path.endpoint_w2sq(schedules.cosine(), q).text())

# %%
cond = optimize.optimize_schedule(q, family="free", objective="conditional",
                                  steps=100 if QUICK else 400)
print("conditional energy:", float(cond.best_value), "(cond-OT: 2.0)")
