"""The base class of satjax's pytrees: a flax.struct dataclass whose tree structure names its class.

jax (0.10.2 and earlier) compares the tree structures of two classes registered with
``jax.tree_util.register_dataclass`` (as ``flax.struct`` does) as equal when their fields and
static values are equal: the class itself is not compared, while it enters the hash. A
jit-compiled function then runs the program compiled for one class on an instance of another
whenever their hashes meet in its cache — ``Scale(1.2)`` was evaluated as ``Shift(1.2)`` in a
few percent of the processes (``satjax reproduce fig6``: η of the scaled start off by 10×).
:class:`Node` adds one static field, the class's qualified name, which makes the structures of
different classes unequal.
"""

from __future__ import annotations

from flax import struct


class Node(struct.PyTreeNode):
    """``flax.struct.PyTreeNode`` with the static field ``pytree_class`` (set on construction)."""

    pytree_class: str = struct.field(pytree_node=False, default="", kw_only=True, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "pytree_class",
                           f"{type(self).__module__}.{type(self).__qualname__}")


__all__ = ["Node"]
