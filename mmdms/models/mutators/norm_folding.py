"""Width masks folded into BatchNorm's affine parameters.

A conv whose input channels are ``act(bn(y))`` and nothing else, with ``act`` positively
homogeneous (ReLU, LeakyReLU, or none), computes the same function when the channel mask ``m``
scales BatchNorm's ``gamma`` and ``beta`` instead of the conv's input:
``act(m (gamma x_hat + beta)) = m act(gamma x_hat + beta)`` for ``m >= 0``. The mask's gradient
is the same too, but the work is channel-sized instead of weight- or activation-sized (the
conv's ``W * m`` and its backward: ``benchmarks/bench_search_overhead.py``).

The same holds for a residual stream: ``relu(m a + m b) = m relu(a + b)``, and pooling, dropout
and a residual block's depth mix commute with a per-channel ``m >= 0`` too. So where every
tensor of a stream comes from BatchNorms through such operations, and every layer that reads
it is a conv or linear masked by the same mutable, the BatchNorms apply the mask and the readers
skip theirs. In a ResNet stage that is every ``bn3`` (``bn2``) and the downsample's BatchNorm as
producers, and each block's ``conv1``, the next stage's ``conv1`` and downsample conv (or the
classifier) as readers. SiLU (EfficientNet, YOLOv8), ReLU6 (MobileNetV2) and GELU (DeiT) are
not positively homogeneous, so their masks stay on the convs.
"""
import operator
from collections import Counter
from typing import List, Set, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx import Graph as FxGraph
from torch.fx import Node as FxNode
from torch.nn.modules.batchnorm import _BatchNorm

from mmdms.models.search_space import sole_mutable

#: Activations with ``act(m x) = m act(x)`` for every ``m >= 0``.
HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU)
HOMOGENEOUS_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.leaky_relu)
HOMOGENEOUS_METHODS = ('relu', 'relu_')
#: Modules that commute with a per-channel factor ``m >= 0`` (pooling, dropout, identity).
COMMUTING_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                     nn.Dropout, nn.Identity)
#: ... matched by class name where the class lives in several packages (mmcv, mmpretrain).
COMMUTING_MODULE_NAMES = ('DropPath', )
#: Sums of two streams: ``m a + m b = m (a + b)``.
SUM_FUNCTIONS = (operator.add, operator.iadd, torch.add)
SUM_METHODS = ('add', 'add_')
#: Reads of a tensor's shape only.
SHAPE_METHODS = ('size', 'dim')
#: Reshapes that keep the channel axis when the spatial size is 1 (after global pooling); a
#: flatten over channels and space gives a reader whose input mask is another mutable, which
#: :func:`fold_masks_into_norms` refuses.
RESHAPE_METHODS = ('view', 'reshape', 'flatten')

#: ``(producer BatchNorms, reading convs / linears)`` of one stream.
Stream = Tuple[List[str], List[str]]


def _module(model: nn.Module, node: FxNode):
    if node.op != 'call_module':
        return None
    try:
        return model.get_submodule(node.target)
    except AttributeError:
        return None


def _is_homogeneous(model: nn.Module, node: FxNode) -> bool:
    if node.op == 'call_module':
        return isinstance(_module(model, node), HOMOGENEOUS_MODULES)
    if node.op == 'call_function':
        return node.target in HOMOGENEOUS_FUNCTIONS
    return node.op == 'call_method' and node.target in HOMOGENEOUS_METHODS


def _is_sum(node: FxNode) -> bool:
    """A sum of two tensors (not of a tensor and a constant: ``m x + c != m (x + c)``)."""
    if node.kwargs or len(node.args) != 2 or not all(isinstance(a, FxNode) for a in node.args):
        return False
    return (node.op == 'call_function' and node.target in SUM_FUNCTIONS) or \
        (node.op == 'call_method' and node.target in SUM_METHODS)


def _commutes(model: nn.Module, node: FxNode) -> bool:
    """Whether ``node`` is ``f`` with ``f(m x) = m f(x)`` over its first (only tensor) input,
    channels kept on their axis. Sums are handled by the caller (all inputs must be scaled)."""
    if _is_homogeneous(model, node):
        return len(node.all_input_nodes) == 1
    module = _module(model, node)
    if module is not None:
        return isinstance(module, COMMUTING_MODULES) or \
            type(module).__name__ in COMMUTING_MODULE_NAMES
    if node.op == 'call_method' and node.target in RESHAPE_METHODS:
        return all(not isinstance(a, FxNode) or _is_shape(a) for a in node.args[1:])
    return False


def _is_shape(node: FxNode) -> bool:
    """A shape read, or a value computed from shape reads only (``x.size(0)``)."""
    if node.op == 'call_method' and node.target in SHAPE_METHODS:
        return True
    if node.op == 'call_function' and node.target is getattr and node.args[1:] == ('shape', ):
        return True
    return node.op == 'call_function' and node.target is operator.getitem and \
        isinstance(node.args[0], FxNode) and _is_shape(node.args[0])


def _is_reader(model: nn.Module, node: FxNode, source: FxNode) -> bool:
    """A conv or linear that reads ``source`` as its only argument."""
    return isinstance(_module(model, node), (nn.Conv2d, nn.Linear)) and \
        node.args == (source, ) and not node.kwargs


def norm_streams(fx_graph: FxGraph, model: nn.Module) -> List[Stream]:
    """The streams whose masks BatchNorms can apply (see the module docstring).

    A stream is a connected set of BatchNorm outputs and of the pooling / activation / sum /
    depth-mix nodes computed from them only; it qualifies when every other reader of its
    tensors is a conv or linear called once on it alone (or a shape read), and each BatchNorm
    and reader is called once. The analyzer traces a copy whose SyncBatchNorms are reverted to
    BatchNorm, so whether a norm is synchronised is decided by :func:`fold_masks_into_norms`
    on the model itself.
    """
    calls = Counter(n.target for n in fx_graph.nodes if n.op == 'call_module')

    def is_norm(node: FxNode) -> bool:
        return isinstance(_module(model, node), _BatchNorm) and calls[node.target] == 1

    seen: Set[FxNode] = set()
    streams = []
    for start in fx_graph.nodes:
        if start in seen or not is_norm(start):
            continue
        members, readers, todo, valid = {start}, set(), [start], True
        while todo:
            node = todo.pop()
            # backwards: a sum's or commuting op's inputs must be stream tensors too
            if node is not start and not is_norm(node):
                for source in node.all_input_nodes:
                    if _is_shape(source):
                        continue
                    if source not in members:
                        if is_norm(source) or _is_sum(source) or _commutes(model, source):
                            members.add(source)
                            todo.append(source)
                        else:
                            valid = False
            # forwards: every reader continues the stream or is a masked layer
            for user in node.users:
                if user in members or _is_shape(user):
                    continue
                if _is_sum(user) or _commutes(model, user):
                    members.add(user)
                    todo.append(user)
                elif _is_reader(model, user, node) and calls[user.target] == 1:
                    readers.add(user.target)
                else:
                    valid = False
        seen |= members
        norms = [n for n in fx_graph.nodes if n in members and is_norm(n)]
        # a BatchNorm must read an unscaled tensor: one fed from the stream would normalise
        # the mask away
        if valid and readers and not any(set(n.all_input_nodes) & members for n in norms):
            streams.append(([n.target for n in norms], sorted(readers)))
    return streams


def fold_masks_into_norms(model: nn.Module, streams: List[Stream]) -> List[str]:
    """Let each stream's BatchNorms apply the mask of its readers where all of them are DMS ops
    of one and the same mutable. A SyncBatchNorm keeps its own forward (the folded one would
    normalise with this process's batch alone), so its stream keeps the masks on the readers.
    Returns the readers whose mask moved."""
    folded = []
    for norm_names, reader_names in streams:
        try:
            norms = [model.get_submodule(n) for n in norm_names]
            readers = [model.get_submodule(n) for n in reader_names]
        except AttributeError:
            continue
        if not all(hasattr(r, 'fold_input_mask') for r in readers) or \
                not all(hasattr(n, 'fold_output_mask') and not isinstance(n, nn.SyncBatchNorm)
                        for n in norms):
            continue
        mutables = {id(sole_mutable(r.get_mutable_attr('in_channels'))) for r in readers} | \
            {id(sole_mutable(n.get_mutable_attr('out_channels'))) for n in norms}
        mutable = sole_mutable(readers[0].get_mutable_attr('in_channels'))
        if mutable is None or len(mutables) != 1:
            continue
        for reader in readers:
            reader.fold_input_mask = True
        for norm in norms:
            norm.fold_output_mask = True
        folded += reader_names
    return folded
