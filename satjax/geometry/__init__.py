"""Wasserstein geometry (PAPER.md section 5): distances now; speeds, geodesics and OT protocols
are added as further modules."""

from satjax.geometry.distances import (DEFAULT_RELATIVE_EPSILON, OTNotConverged, OTResult,
                                       SinkhornNotConverged, cdf_1d, ot_assignment, ot_cost,
                                       ot_plan, quantile_1d, w1_samples, w2_samples,
                                       w2_squared_1d, w2_squared_gaussian, wasserstein_1d,
                                       wasserstein_1d_samples)
from satjax.geometry.ot_protocol import (OTProtocol1D, OTProtocolGaussian, OTProtocolSamples,
                                         ot_protocol)
from satjax.geometry.speed import lyapunov_speed_sq, project_onto_gradients

__all__ = [
    "DEFAULT_RELATIVE_EPSILON", "OTNotConverged", "OTProtocol1D", "OTProtocolGaussian",
    "OTProtocolSamples", "OTResult", "SinkhornNotConverged", "cdf_1d", "lyapunov_speed_sq",
    "ot_assignment", "ot_cost", "ot_plan", "ot_protocol", "project_onto_gradients", "quantile_1d",
    "w1_samples", "w2_samples", "w2_squared_1d", "w2_squared_gaussian", "wasserstein_1d",
    "wasserstein_1d_samples",
]
