"""Wasserstein geometry (docs/theory.md §5, §7): distances (:mod:`.distances`), the W2 speed
by projection (:mod:`.speed`) and by the 2-D weighted Poisson solve (:mod:`.grid`), exact W1
between two weightings of the same atoms (:mod:`.atoms`, the 2-D density grid of the bound),
and the W2 geodesic protocols (:mod:`.ot_protocol`). ott-jax is imported only here (:mod:`.distances`,
:mod:`.ot_protocol`). Import the submodules directly."""
