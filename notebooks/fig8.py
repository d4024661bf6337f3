# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Fig. 8 — trained CFM and OT-CFM models on 8×8 digits
#
# As in the paper's image experiment: c₂ along the model's own trajectories (Eq. G20), D₀ by the
# Gaussian-KL approximation (Eq. G21), η from exact OT between generated particle sets.

# %%
import os

from satjax.experiments import fig8

QUICK = os.environ.get("SATJAX_QUICK", "0") == "1"
res = fig8.run(quick=QUICK)
for c in res["cases"]:
    print(f"{c['loss']:7s} eta={c['eta']:.4f} ± {c['eta_stderr']:.4f}  "
          f"c2={c['c2']:.3f} ± {c['c2_stderr']:.3f}  eta<=c2: {c['holds']['eta<=c2']}")
