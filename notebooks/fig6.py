# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Fig. 6 — the speed-accuracy relation on a 1-D two-component mixture
#
# Data q = ½N(−2, 0.5²) + ½N(2, 0.5²) (Eq. 96), horizon τ = 1, protocols cosine, cond-OT and the
# W2 geodesic (ot). The exact reverse process starts from P_τ; we perturb the start and carry
# both starts back with the **same exact velocity**. In 1-D the flow map is the monotone
# rearrangement, so every number below is exact quadrature (docs/theory.md §6):
#
# * η = ΔW₁²/(τ D₀) — the growth of the W₁ error from start to end of generation;
# * c₁ = ∫ v_loss² dt — the squared speed of that error;
# * c₂ = ∫ v₂² dt = w_D = ∫ T Ṡ_tot dt — the kinetic (thermodynamic) cost of the protocol.
#
# The theorem (Eq. 77–83): η ≤ c₁ ≤ c₂, and v_loss(t)² ≤ T_t Ṡ_tot(t) at every t. Only the last two
# can fail (η ≤ c₁ is Cauchy–Schwarz of the same numbers): they are the verdicts.

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)
from satjax import bound, mixtures, perturb, schedules  # noqa: E402
from satjax.geometry import ot_protocol  # noqa: E402

QUICK = os.environ.get("SATJAX_QUICK", "0") == "1"
q = mixtures.gmm([-2.0, 2.0], 0.5)
protocols = {"cosine": schedules.cosine(), "cond-ot": schedules.cond_ot(),
             "ot": ot_protocol.ot_protocol(q)}
starts = {"shift 0.2": perturb.shift(0.2), "N(1, 1)": perturb.mean_change(1.0)}
if QUICK:
    starts.pop("N(1, 1)")

# %%
rows = []
for name, proto in protocols.items():
    for label, pert in starts.items():
        r = bound.bound(proto, q, pert, n_time=24 if QUICK else 48)
        rows.append((name, label, r))
        verdicts = {k: v.status for k, v in r.verdicts().items()}
        print(f"{name:8s} {label:10s} eta={float(r.eta.value):.5f} c1={float(r.c1.value):.5f} "
              f"c2={float(r.c2.value):.5f} {verdicts}")

# %% [markdown]
# η is the same for every protocol (all protocols share the end points and, in 1-D, the map
# from P_τ to q); the geodesic makes c₁ = η and has the least c₂ = W₂²/τ.

# %%
for label in starts:
    etas = [float(r.eta.value) for _, s, r in rows if s == label]
    assert max(etas) - min(etas) < 1e-6 * max(etas), etas
    print(label, "eta equal across protocols:", etas[0])

# %% [markdown]
# The full figure (and the Table-I panel) comes from the same library call that
# `satjax reproduce fig6` makes.

# %%
from satjax.experiments import fig6  # noqa: E402
from satjax.plotting import plot_fig6  # noqa: E402
from satjax.report import jsonable  # noqa: E402

if not QUICK:
    plot_fig6(jsonable(fig6.run(quick=True)), "fig6_notebook.png")
