"""Learned score and velocity fields (PAPER.md section 3): flax models, DSM / CFM / OT-CFM
objectives, optax training with exact resume, checkpoints, and the residual L_α of Eq. 100.

flax and optax enter satjax only through this subpackage.
"""

from satjax.learn.checkpoint import (Checkpoint, load_checkpoint, load_model, read_config,
                                     save_checkpoint)
from satjax.learn.losses import (LOSSES, Conditional, LossTerms, Residual, cfm_loss, conditional,
                                 conditional_sample, conditional_score, conditional_velocity,
                                 default_coupling, dsm_loss, ot_cfm_loss, ot_pair, residual,
                                 sample_times, score_from_velocity, velocity_from_score)
from satjax.learn.models import MLPField, ModelSpec, apply, field, init_params
from satjax.learn.train import (Batch, OptimSpec, TrainResult, TrainState, make_train_step,
                                train)

__all__ = [
    "LOSSES", "Batch", "Checkpoint", "Conditional", "LossTerms", "MLPField", "ModelSpec",
    "OptimSpec", "Residual", "TrainResult", "TrainState", "apply", "cfm_loss", "conditional",
    "conditional_sample", "conditional_score", "conditional_velocity", "default_coupling",
    "dsm_loss", "field", "init_params", "load_checkpoint", "load_model", "make_train_step",
    "ot_cfm_loss", "ot_pair", "read_config", "residual", "sample_times", "save_checkpoint",
    "score_from_velocity", "train", "velocity_from_score",
]
