"""Learned score and velocity fields (docs/theory.md §3): flax models, DSM / CFM / OT-CFM
objectives (Eq. 18, 19), optax training with callbacks, exact resume and extension,
checkpoints that record the protocol and data they were trained for, the residual L_α of
Eq. 100 and the W₁ from the generated law to the data.

flax and optax enter satjax only through this subpackage.
"""

from satjax.learn.checkpoint import (Checkpoint, check_compatible, fingerprint, load_checkpoint,
                                     load_model, read_config, run_record, save_checkpoint)
from satjax.learn.losses import (LOSSES, Conditional, LossTerms, Residual, cfm_loss, conditional,
                                 conditional_sample, conditional_score, conditional_velocity,
                                 default_coupling, dsm_loss, hungarian_coupling, ot_cfm_loss,
                                 ot_pair, residual, sample_times, score_from_velocity,
                                 velocity_from_score)
from satjax.learn.quality import w1_to_data
from satjax.learn.models import (Apply, MLPField, ModelSpec, apply, field, init_params,
                                 param_field)
from satjax.learn.train import (Batch, History, OptimSpec, ProgressBar, StepEvent, TrainConfig,
                                TrainResult, TrainState, make_train_step, resume_run,
                                sample_batch, train)

__all__ = [
    "LOSSES", "Apply", "Batch", "Checkpoint", "Conditional", "History", "LossTerms", "MLPField",
    "ModelSpec", "OptimSpec", "ProgressBar", "Residual", "StepEvent", "TrainConfig",
    "TrainResult", "TrainState", "apply", "cfm_loss", "check_compatible", "conditional",
    "conditional_sample", "conditional_score", "conditional_velocity", "default_coupling",
    "dsm_loss", "field", "fingerprint", "hungarian_coupling", "init_params", "load_checkpoint",
    "load_model", "make_train_step", "ot_cfm_loss", "ot_pair", "param_field", "read_config",
    "residual",
    "resume_run", "run_record", "sample_batch", "sample_times", "save_checkpoint",
    "score_from_velocity", "train", "velocity_from_score", "w1_to_data",
]
