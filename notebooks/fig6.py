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
# Data q = ½N(−2, 0.5²) + ½N(2, 0.5²) (PAPER.md Eq. 96), horizon τ = 1, protocols cosine,
# cond-OT and the W2 geodesic (ot). The exact reverse process starts from P_τ; we perturb the
# start (shift or scale) and carry both starts back with the **same exact velocity**. In 1-D the
# flow map is the monotone rearrangement, so everything below is exact quadrature:
#
# * η = ΔW₁²/(τ D₀) — the growth of the W₁ error from start to end of generation;
# * c₁ = ∫ v_loss² dt — the squared speed of that error;
# * c₂ = ∫ v₂² dt = w_D = ∫ T Ṡ_tot dt — the kinetic (thermodynamic) cost of the protocol.
#
# The theorem (Eq. 77–83): η ≤ c₁ ≤ c₂, and v_loss(t)² ≤ T_t Ṡ_tot(t) at every t.

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)
from satjax import bound, mixtures, perturb, schedules  # noqa: E402
from satjax.geometry import ot_protocol  # noqa: E402

QUICK = os.environ.get("SATJAX_QUICK", "0") == "1"
q = mixtures.gmm([-2.0, 2.0], 0.5)
protocols = {"cosine": schedules.cosine(), "cond-ot": schedules.cond_ot(), "ot": ot_protocol(q)}
perturbations = ["shift:0.2"] if QUICK else ["shift:0.2", "scale:1.2"]

# %% [markdown]
# One exact bound per protocol and perturbation (`satjax.bound.bound_1d`).

# %%
rows = []
for name, proto in protocols.items():
    for spec in perturbations:
        r = bound.bound_1d(proto, q, perturb.parse(spec), n_time=24 if QUICK else 48)
        rows.append((name, spec, r))
        print(f"{name:8s} {spec:10s} eta={float(r.eta):.5f} c1={float(r.c1):.5f} "
              f"c2={float(r.c2):.5f} holds={all(r.holds().values())}")

# %% [markdown]
# η is the same for every protocol (all protocols share the end points and, in 1-D, the map
# from P_τ to q); the geodesic makes c₁ = η and has the least c₂ = W₂²/τ.

# %%
for spec in perturbations:
    etas = [float(r.eta) for _, s, r in rows if s == spec]
    assert max(etas) - min(etas) < 1e-6 * max(etas), etas
    print(spec, "eta equal across protocols:", etas[0])

# %% [markdown]
# The full figure (four panels, JSON with every number) comes from the same library call that
# `satjax reproduce fig6` makes.

# %%
from satjax.experiments import fig6  # noqa: E402
from satjax.plotting import plot_fig6  # noqa: E402

if not QUICK:
    res = fig6.run(quick=True, progress=False)
    plot_fig6(res, "fig6_notebook.png")
