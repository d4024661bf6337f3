"""Tree structures name their class (satjax.pytree.Node).

jax compares the structures of two register_dataclass classes (flax.struct) as equal when their
fields and static values agree, whatever the classes: a jit cache whose hashes meet then runs
one class's program on the other. `satjax reproduce fig6` computed the start scale:1.2 as
shift:1.2 in a few percent of processes (η = 0.18214 instead of 0.018530 for the OT protocol).
"""

import dataclasses
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import pytest
from flax import struct

import satjax
from satjax import perturb as PT
from satjax import schedules as S
from satjax.mixtures import gmm
from satjax.pytree import Node


def _all_classes():
    for m in pkgutil.walk_packages(satjax.__path__, "satjax."):
        mod = importlib.import_module(m.name)
        for obj in vars(mod).values():
            if isinstance(obj, type) and obj.__module__ == mod.__name__:
                yield obj


def test_every_satjax_pytree_dataclass_is_a_node():
    flax_nodes = {c for c in _all_classes()
                  if issubclass(c, struct.PyTreeNode) and dataclasses.is_dataclass(c)}
    assert len(flax_nodes) > 60
    assert [c.__qualname__ for c in flax_nodes if not issubclass(c, Node)] == []


@pytest.mark.parametrize("a, b", [
    (PT.Shift(jnp.asarray(1.2)), PT.Scale(jnp.asarray(1.2))),
    (S.Cosine(tau=jnp.asarray(1.0)), S.ConditionalOT(tau=jnp.asarray(1.0))),
    (S.VPLinear(tau=jnp.asarray(1.0)), S.VE(tau=jnp.asarray(1.0))),
    (PT.MeanChange(jnp.asarray(1.0)), PT.VarianceChange(jnp.asarray(1.0))),
])
def test_sibling_classes_with_the_same_fields_have_different_structures(a, b):
    ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    assert [jnp.shape(x) for x in jax.tree_util.tree_leaves(a)] == \
        [jnp.shape(x) for x in jax.tree_util.tree_leaves(b)]
    assert ta != tb and not (ta == tb)
    # and the round trip keeps the class (and its static name)
    assert type(jax.tree_util.tree_unflatten(ta, jax.tree_util.tree_leaves(b))) is type(a)


def test_one_compiled_function_keeps_the_classes_apart():
    """Scale(1.2) and Shift(1.2) of N(0, 1) through one jit: W1-relevant means and covariances
    of each start by its own closed form (mean 0, variance 1.44; mean 1.2, variance 1)."""
    p_tau = gmm([0.0], 1.0)
    f = jax.jit(lambda pert: (lambda s: (s.means[0, 0], s.cov[0]))(pert.start(p_tau)))
    for pert, mean, var in [(PT.Shift(jnp.asarray(1.2)), 1.2, 1.0),
                            (PT.Scale(jnp.asarray(1.2)), 0.0, 1.44)]:
        m, c = f(pert)
        assert float(m) == pytest.approx(mean, abs=1e-12)
        assert float(jnp.ravel(c)[0]) == pytest.approx(var, rel=1e-12)
