"""Statistics over trained models: the equal training budget of the learned-dynamics experiments
(:mod:`.table1`, :mod:`.fig7`), mean ± standard error over models, and paired differences."""

from __future__ import annotations

import math

import numpy as np


def budget(quick: bool, train_steps=None) -> dict:
    """The training budget every learned model gets (equal across protocols, g and seeds)."""
    b = (dict(steps=300, batch_size=256, lr=2e-3, width=32, depth=2, lr_schedule="cosine")
         if quick else
         dict(steps=4000, batch_size=256, lr=1e-3, width=128, depth=3, lr_schedule="cosine"))
    if train_steps is not None:
        b["steps"] = int(train_steps)
    return b


def mean_se(v):
    """(mean, standard error of the mean); the error is NaN for one value."""
    v = np.asarray(v, float)
    with np.errstate(over="ignore", invalid="ignore"):  # e.g. D_max can be astronomically large
        se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
        return float(v.mean()), se


def paired(a, b) -> dict:
    """Mean of a − b over paired models ± standard error and the two-sided paired t-test."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    mean, se = mean_se(d)
    if len(d) < 2 or not se > 0:
        return {"mean_difference": mean, "stderr": se, "p_value": None, "n": len(d)}
    p = float(2 * stats.t.sf(abs(mean / se), len(d) - 1))
    return {"mean_difference": mean, "stderr": se, "p_value": p, "n": len(d)}


__all__ = ["budget", "mean_se", "paired"]
