# Copyright (c) mmdms contributors. All rights reserved.
"""Channel shuffles (ShuffleNet): widths that a shuffle permutes stay fixed, with the reason.

A channel shuffle ``x.view(b, g, c // g, h, w).transpose(1, 2).reshape(b, -1, h, w)`` sends
channel ``i * (c / g) + j`` to ``j * g + i``: it interleaves the ``g`` groups of the grouped conv
before it, so that each group of the grouped conv after it reads channels of every group.
MMRazor's channel graph takes the view / transpose / view for ops that pass channel ``k`` to
channel ``k``; its width group then prunes the same channels on both sides, and the static model
slices the second conv's input at other channels than the masked search model read (ShuffleNet-
v1: outputs 3.7e-2 apart). MMRazor's units hold each layer's channels as ranges aligned
position by position, which cannot say "channel ``k`` here is channel ``perm(k)`` there"; so a
width whose channels run through a shuffle is kept out of the search (exact, fixed), and the
rest of the model (the streams between the shuffle units) is searched as before.

The channel graph marks a shuffle with a :class:`ChannelShuffleNode` (channels passed through,
as before); :func:`unshuffled_units` then drops the units its channels are in.
"""
import operator
from typing import Callable, Dict, List, Tuple

import torch
from mmrazor.structures.graph.channel_nodes import PassUnionChannelNode
from torch.fx import Node as FxNode

_VIEWS = ('view', 'reshape')
_VIEW_FUNCTIONS = (torch.reshape, )
_SWAPS = ('transpose', 'permute')
_SWAP_FUNCTIONS = (torch.transpose, torch.permute)
_AFTER = ('view', 'reshape', 'flatten')
_AFTER_FUNCTIONS = (torch.reshape, torch.flatten)
_PASS = ('contiguous', )
#: Names of shuffle functions (mmpretrain's and mmdet's ``channel_shuffle``).
SHUFFLE_FUNCTIONS = ('channel_shuffle', )


def _is_call(node: FxNode, methods: tuple, functions: tuple) -> bool:
    return (node.op == 'call_method' and node.target in methods) or \
        (node.op == 'call_function' and node.target in functions)


def _shape_args(node: FxNode) -> tuple:
    """The target shape of a view / reshape node, as written (ints or nodes)."""
    args = node.args[1:]
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    if 'shape' in node.kwargs or 'size' in node.kwargs:
        return tuple(node.kwargs.get('shape', node.kwargs.get('size')))
    return tuple(args)


def _swaps_axes_1_and_2(node: FxNode) -> bool:
    args = list(node.args[1:])
    if node.target in ('transpose', torch.transpose):
        dims = args[:2] or [node.kwargs.get('dim0'), node.kwargs.get('dim1')]
        return sorted(d for d in dims if isinstance(d, int)) == [1, 2]
    dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    dims = list(dims or node.kwargs.get('dims', ()))
    return len(dims) >= 3 and dims[:3] == [0, 2, 1]


def _through_passes(node: FxNode) -> List[FxNode]:
    """The users of ``node``, looking through ``contiguous``."""
    users = []
    for user in node.users:
        if _is_call(user, _PASS, ()):
            users += _through_passes(user)
        else:
            users.append(user)
    return users


def _splits_channel_axis(view: FxNode) -> bool:
    """Whether a view / reshape keeps axis 0 and splits axis 1 into its axes 1 and 2, by the
    shapes the concrete tracer recorded (True where they were not recorded)."""
    source = view.args[0] if view.args else None
    before = source.meta.get('concrete_shape') if isinstance(source, FxNode) else None
    after = view.meta.get('concrete_shape')
    if not (isinstance(before, tuple) and isinstance(after, tuple)
            and all(isinstance(d, int) for d in before + after)):
        return True
    return len(before) >= 2 and len(after) >= 3 and before[0] == after[0] and \
        before[1] == after[1] * after[2]


def is_channel_shuffle(node: FxNode) -> bool:
    """Whether FX ``node`` is a channel shuffle.

    A call of a function named in :data:`SHUFFLE_FUNCTIONS` that the tracer kept as one node
    (MMRazor's tracer wraps mmpretrain's ``channel_shuffle``, whose ``assert`` reads a traced
    size), or the transpose of an inlined one: a view / reshape of the channel axis into
    ``(groups, channels / groups)`` (4 or more axes), a transpose / permute of axes 1 and 2
    and (through ``contiguous``) a view / reshape / flatten back. An attention's head split
    (``view(b, n, heads, d)`` then ``transpose(1, 2)``) is not one: no view follows it. Nor is
    a view that moves the channels out of axis 1 first, by the shapes the concrete tracer
    recorded (MobileViT's unfolding into patches, ``reshape(B * C * n_h, p_h, n_w, p_w)``
    then ``transpose(1, 2)``: it swaps positions, and its channels keep their order).
    """
    if node.op == 'call_function' and getattr(node.target, '__name__', '') in SHUFFLE_FUNCTIONS:
        return True
    if not _is_call(node, _SWAPS, _SWAP_FUNCTIONS) or not _swaps_axes_1_and_2(node):
        return False
    source = node.args[0] if node.args else None
    if not isinstance(source, FxNode) or not _is_call(source, _VIEWS, _VIEW_FUNCTIONS) \
            or len(_shape_args(source)) < 4 or not _splits_channel_axis(source):
        return False
    users = _through_passes(node)
    return bool(users) and any(_is_call(u, _AFTER, _AFTER_FUNCTIONS) for u in users) and \
        all(_is_call(u, _AFTER, _AFTER_FUNCTIONS) or
            (u.op == 'call_function' and u.target is operator.getitem) for u in users)


class ChannelShuffleNode(PassUnionChannelNode):
    """A channel shuffle in MMRazor's channel graph: channels pass through as MMRazor's default
    node has them; its type marks the unit it is in (:func:`unshuffled_units`)."""

    def __repr__(self) -> str:
        return super().__repr__() + '_shuffle'


def unshuffled_units(units_config: Dict, channel_graph,
                     module_of: Callable[[str], Tuple[str, str]]
                     ) -> Tuple[Dict, List[Tuple[Dict, str]]]:
    """Split MMRazor's units into those no channel shuffle permutes and the others.

    Args:
        units_config (dict): MMRazor's unit configs, keyed by the hash of their channels
            (``channel_graph.generate_units_config()``, just called).
        channel_graph: the channel graph they came from.
        module_of (callable): FX node name -> ``(module name, type path)`` of the module
            whose forward made it.

    Returns:
        ``(kept configs, [(removed config, why), ...])``.
    """
    shuffled: Dict = {}
    for node in channel_graph.topo_traverse():
        if isinstance(node, ChannelShuffleNode):
            for key in node.in_channel_tensor.elems_hash_dict.values():
                shuffled.setdefault(key, node.name)
    kept, removed = {}, []
    for key, cfg in units_config.items():
        if key not in shuffled:
            kept[key] = cfg
            continue
        node = shuffled[key]
        module, module_type = module_of(node)
        where = f"in '{module}' ({module_type})" if module else 'in the model'
        removed.append((cfg, f"its channels run through a channel shuffle ('{node}' {where}), "
                             'which permutes them across the groups of the grouped convs '
                             'around it; DMS keeps such a width fixed (a width group prunes '
                             'the same channels on both sides of it)'))
    return kept, removed
