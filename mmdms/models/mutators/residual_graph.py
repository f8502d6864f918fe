# Copyright (c) mmdms contributors. All rights reserved.
"""Identity-residual blocks found from the executed graph, not from a list of class names.

A module ``g`` is an identity-residual block when, on the demo input, its output is its input
plus a residual branch, ``g(x) = x + f(x)``: in the autograd graph of one forward, the output
reaches the module's input through additions only (the other operand of each is the branch:
layer scale, drop path, any expression), optionally through a ReLU after an addition
(post-activation ResNets, ``relu(x + f(x))``: ``x`` comes out of a ReLU, so ``relu(x + 0) = x``).
A transformer block, ``h = x + attn(x); y = h + mlp(h)``, is one: ``y = x + (attn' + mlp')``.
A block whose shortcut is a projection (a strided or 1x1 conv, a norm, a permutation of the
tokens) is not: the path from its input to its output runs through that layer.

A block of more arguments may return a tuple, ``g(x, *rest) = (x + f(x), *rest)``: its first
element is the tensor the identity path is asked about and the others are its arguments after
``x``, passed through (the same tensors, or equal plain values: MViT-V2's ``(x, out_size)`` of a
block that keeps the token grid). Such a block's stand-in, removed or depth-masked, returns the
same tuple with ``x`` first (:attr:`BlockRecord.tuple_output`).

The graph is recorded without the cost of a training step: every module of interest gets a
marker on its input (a clone, a node of the graph that belongs to that call) and, after its
forward, the output's graph is walked back from the output through ``add``, ``relu`` and
``clone`` nodes. Saved activations are dropped as they are packed (no backward ever runs), so
the forward holds what an inference forward holds.

Why the criterion is the identity path and not only "output shape == input shape": DMS's depth
mask ``x + m (g(x) - x)`` is exact for any module of unchanged shape (at ``m = 0`` it passes
``x`` on, as the exported :class:`~mmdms.models.architectures.RemovedBlock` does), but removing a
block is a meaningful architecture change only where the block has an identity shortcut (the
paper searches the depth of such blocks): a plain ``3x3`` conv of unchanged shape is not a
layer the network can do without.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from torch import Tensor

#: Autograd nodes an identity shortcut may pass through: additions (the residual sums), a ReLU
#: after an addition (post-activation blocks), clones (the markers of nested modules, and
#: ``contiguous`` / ``clone`` in the model's code, which keep the values).
PASS_THROUGH = ('AddBackward0', 'AddBackward1', 'ReluBackward0', 'CloneBackward0')
ADDS = ('AddBackward0', 'AddBackward1')


@dataclass
class BlockCall:
    """One call of an observed module on the demo input."""

    in_shape: Optional[torch.Size]
    out_shape: Optional[torch.Size]
    #: the output reaches the input through additions (and ReLUs after them) only
    identity_residual: bool
    input_id: Optional[int] = None
    output_id: Optional[int] = None
    #: the output is ``(y, *args[1:])``, the call's further positional arguments passed through
    tuple_output: bool = False


@dataclass
class BlockRecord:
    """Every call of an observed module (none: the forward did not run it)."""

    calls: List[BlockCall] = field(default_factory=list)

    @property
    def shapes(self) -> tuple:
        """``(input shape, output shape)`` of the first call, ``(None, None)`` if none."""
        return (self.calls[0].in_shape, self.calls[0].out_shape) if self.calls else (None, None)

    @property
    def identity_residual(self) -> bool:
        """Every call computes ``x + f(x)`` with the output of the input's shape."""
        return bool(self.calls) and all(
            c.identity_residual and c.in_shape is not None and c.in_shape == c.out_shape
            for c in self.calls) and len({c.tuple_output for c in self.calls}) == 1

    @property
    def tuple_output(self) -> bool:
        """Every call returns ``(y, *args[1:])`` rather than a lone tensor ``y``."""
        return bool(self.calls) and all(c.tuple_output for c in self.calls)

    def feeds(self, other: 'BlockRecord') -> Optional[bool]:
        """Whether ``other``'s (first) input is this module's (first) output; None: unknown
        (an output or input that is not a tensor)."""
        if not self.calls or not other.calls:
            return None
        out, inp = self.calls[0].output_id, other.calls[0].input_id
        return None if out is None or inp is None else out == inp


def _first_input(args: tuple, kwargs: dict) -> Optional[Tensor]:
    x = args[0] if args else next(iter(kwargs.values()), None)
    return x if isinstance(x, Tensor) else None


def _same_value(out, arg) -> bool:
    """Whether output element ``out`` passes argument ``arg`` through: the same tensor, or an
    equal plain value (a sequence compared element by element: a ``torch.Size`` may come back
    for a tuple of ints)."""
    if isinstance(out, Tensor) or isinstance(arg, Tensor):
        return out is arg
    if isinstance(out, (tuple, list)) and isinstance(arg, (tuple, list)):
        return len(out) == len(arg) and all(_same_value(o, a) for o, a in zip(out, arg))
    try:
        return type(out) is type(arg) and bool(out == arg)
    except Exception:  # noqa: BLE001  (a value without a plain equality passes nothing)
        return False


def passed_through_tuple(output, args: tuple) -> bool:
    """Whether ``output`` is ``(y, *args[1:])``: a tensor ``y`` and then the call's further
    positional arguments, passed through unchanged."""
    return (isinstance(output, tuple) and len(output) == len(args) >= 2 and
            isinstance(output[0], Tensor) and
            all(_same_value(o, a) for o, a in zip(output[1:], args[1:])))


def reaches_through_adds(output: Tensor, marker) -> bool:
    """Whether ``output``'s autograd graph reaches node ``marker`` through :data:`PASS_THROUGH`
    nodes only, with at least one addition on the way."""
    stack = [(output.grad_fn, False)]
    seen = set()
    while stack:
        node, added = stack.pop()
        if node is None or (id(node), added) in seen:
            continue
        seen.add((id(node), added))
        if node is marker:
            if added:
                return True
            continue
        kind = type(node).__name__
        if kind not in PASS_THROUGH:
            continue
        added = added or kind in ADDS
        stack.extend((child, added) for child, _ in node.next_functions)
    return False


def _make_root_inputs_require_grad(inputs):
    """The demo inputs, their floating-point tensors made graph roots (frozen stems would
    otherwise leave the first blocks outside any graph)."""
    def root(t):
        if isinstance(t, Tensor) and t.is_floating_point():
            return t.detach().requires_grad_().clone()
        return t

    if isinstance(inputs, dict):
        return {k: root(v) for k, v in inputs.items()}
    return root(inputs)


def record_blocks(model: nn.Module, names: List[str],
                  forward: Callable[[Callable], None]) -> Dict[str, BlockRecord]:
    """Observe modules ``names`` of ``model`` during one forward: shapes, whether each call is
    ``x + f(x)``, and which module's output feeds which.

    Args:
        model: the model.
        names: the modules to observe.
        forward: runs the demo forward; called with a function that turns the demo inputs into
            graph roots (:func:`_make_root_inputs_require_grad`).

    Returns:
        ``{name: BlockRecord}`` for each of ``names``.
    """
    records = {name: BlockRecord() for name in names}
    alive: list = []  # tensors whose ids are recorded stay alive until the forward ends
    markers: Dict[str, list] = {name: [] for name in names}
    handles = []

    for name in names:
        module = model.get_submodule(name)

        def pre_hook(mod, args, kwargs, name=name):
            x = _first_input(args, kwargs)
            if x is None:
                markers[name].append((None, None))
                return None
            alive.append(x)
            marked = x.clone() if x.requires_grad else x
            markers[name].append((id(x), marked.grad_fn))
            if marked is x:
                return None
            if args:
                return (marked, *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, dict(kwargs, **{key: marked})

        def post_hook(mod, args, kwargs, output, name=name):
            input_id, marker = markers[name].pop() if markers[name] else (None, None)
            x = _first_input(args, kwargs)
            as_tuple = passed_through_tuple(output, args)
            y = output[0] if as_tuple else output if isinstance(output, Tensor) else None
            if y is not None:
                alive.append(y)
            residual = (marker is not None and y is not None and
                        reaches_through_adds(y, marker))
            records[name].calls.append(BlockCall(
                getattr(x, 'shape', None), getattr(y, 'shape', None), residual, input_id,
                id(y) if y is not None else None, as_tuple))

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    try:
        # no backward runs: drop every activation autograd would save for one
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(
                lambda t: None, lambda _: None):
            forward(_make_root_inputs_require_grad)
    finally:
        for h in handles:
            h.remove()
        alive.clear()
    return records


def is_container_element(parent: nn.Module) -> bool:
    """Whether the children of ``parent`` are blocks a depth search may look at: the elements
    of a ``Sequential`` or ``ModuleList`` (a stage, a layer list)."""
    return isinstance(parent, (nn.Sequential, nn.ModuleList))


def graph_candidates(model: nn.Module) -> List[str]:
    """The modules the graph is asked about: elements of a ``Sequential`` / ``ModuleList``
    that hold parameters (a block without any is not a searchable layer)."""
    found = []
    for parent_name, parent in model.named_modules():
        if not is_container_element(parent):
            continue
        for child_name, child in parent.named_children():
            if next(child.parameters(), None) is not None:
                found.append(f'{parent_name}.{child_name}' if parent_name else child_name)
    return found


def innermost(blocks: List[str], fixed: List[str]) -> List[str]:
    """``blocks`` (found by the graph) without those that contain another block of ``blocks``
    or ``fixed`` (the rules' blocks), or lie inside one of ``fixed``: a stage whose blocks are
    all identity-residual is itself ``x + sum f_i``, but its depth is searched block by block."""
    every = set(blocks) | set(fixed)
    kept = []
    for name in blocks:
        prefix = f'{name}.'
        if any(other.startswith(prefix) for other in every):
            continue
        if any(name.startswith(f'{outer}.') for outer in fixed):
            continue
        kept.append(name)
    return kept
