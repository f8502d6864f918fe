# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's RepMLPNet: its stream widths, through the partition perceptron of
``RepMLPBlock``.

``RepMLPBlock`` multiplies a global perceptron (an SE layer on the stream) with its partition
perceptron: the map ``(N, C, H, W)`` is cut into ``h_parts x w_parts`` partitions of
``path_h x path_w`` positions, and ``fc3`` (a 1x1 conv of ``num_sharesets`` groups, BatchNorm
``fc3_bn``, a local conv ``repconvK`` per kernel) maps each partition's positions, with channel
``c`` in shareset ``c mod S`` (``S = num_sharesets``): the channels go to the batch axis, ``S``
of them per row. Those reshapes read ``self.channels``, so MMRazor's channel graph tied every
stream of RepMLPNet to the model's input and only the FFN and global-perceptron hidden widths
were searched (38% of the zoo's RepMLP-B conv/linear weights).

Here the partition perceptron is one layer to the tracer (:class:`RepMLPBlockRule`, a leaf): a
channel-wise op of the stream, whose channels can be pruned in whole blocks of ``S``
consecutive ones (channel ``g S + s`` is in shareset ``s``; keeping whole blocks keeps every
kept channel in its shareset). Its copy in the trace runs the partition perceptron only, and
the unit's traced forward multiplies it with the global perceptron, which the tracer enters
(its convs read the stream through its mask). The export sets the block's ``channels``;
``fc3``, ``fc3_bn`` and the local convs keep their weights, which are indexed by sharesets and
positions, not by channels, so they stay unsearched, but their MACs (``fc3`` runs once per
row of ``S`` channels) scale with the kept channels (:meth:`RepMLPBlockRule.per_channel_sublayers`).
The deploy form (``RepMLPNet.switch_to_deploy``, ``fc3`` with the local convs folded in) of a
pruned model is that of the unpruned one with fewer channels.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.backbones.repmlp import RepMLPBlock, RepMLPNetUnit
from torch import Tensor

from mmdms.models.layer_rules import LayerCall, LayerRule, register_layer_rule
from mmdms.models.layer_rules.stream_leaf import StreamLeafCheckOp
from mmdms.models.layer_rules.base import SubnetError, channelwise_indices
from mmdms.registry import ADAPTERS
from .base import FamilyAdapter


def partition_perceptron(block: RepMLPBlock, x: Tensor) -> Tensor:
    """``RepMLPBlock.forward`` without the global perceptron (what it multiplies), with the
    channel count read from ``x``: the partitions, ``fc3`` and ``fc3_bn``, and the local convs
    of the training form."""
    n, channels, height, width = x.shape
    h_parts, w_parts = height // block.path_h, width // block.path_w
    partitions = x.reshape(-1, channels, h_parts, block.path_h, w_parts,
                           block.path_w).permute(0, 2, 4, 1, 3, 5)
    out = block.partition_affine(partitions, h_parts, w_parts)
    if block.reparam_conv_kernels is not None and not block.deploy:
        conv_inputs = partitions.reshape(-1, block.num_sharesets, block.path_h, block.path_w)
        local = sum(getattr(block, f'repconv{k}')(conv_inputs)
                    for k in block.reparam_conv_kernels)
        out = out + local.reshape(-1, h_parts, w_parts, block.num_sharesets, block.path_h,
                                  block.path_w)
    return out.permute(0, 3, 1, 4, 2, 5).reshape(n, channels, height, width)


def _whole_blocks(kept: Sequence[int], block: int) -> bool:
    """Whether channel indices ``kept`` are whole consecutive blocks of ``block``."""
    kept = [int(i) for i in kept]
    if len(kept) % block:
        return False
    return all(kept[i] % block == 0 and kept[i:i + block] == list(range(kept[i], kept[i] + block))
               for i in range(0, len(kept), block))


class DynamicRepMLPBlock(StreamLeafCheckOp, RepMLPBlock):
    """The op of MMRazor's pruning check for ``RepMLPBlock``: the partition perceptron of the
    channels its input keeps (the unit's traced forward applies the global perceptron), which
    must be whole blocks of ``num_sharesets`` channels (any other mask fails the check)."""

    def forward(self, x: Tensor) -> Tensor:
        mutable = self.get_mutable_attr('in_channels')
        if mutable is not None:
            kept = torch.nonzero(mutable.current_mask).flatten().tolist()
            if not _whole_blocks(kept, self.num_sharesets):
                raise RuntimeError(f'a RepMLPBlock of {self.num_sharesets} sharesets keeps '
                                   f'whole blocks of {self.num_sharesets} channels only')
        return partition_perceptron(self, x)


class DMSRepMLPBlock(DynamicRepMLPBlock):
    """The DMS op of ``RepMLPBlock``: the whole block, unmasked. Its partition perceptron is
    channel-wise and its global perceptron's convs read the stream through their own masks, so
    with hard masks its kept channels are the pruned block's output."""

    def forward(self, x: Tensor) -> Tensor:
        return RepMLPBlock.forward(self, x)


@register_layer_rule
class RepMLPBlockRule(LayerRule):
    """``RepMLPBlock`` (see the module docstring): a channel-wise leaf of the trace, pruned in
    blocks of ``num_sharesets`` channels. Its own call counts nothing: its layers are recorded
    on their own, the partition perceptron's scaled by the kept channels."""

    module_types = (RepMLPBlock, )
    kind = 'repmlp_block'
    dms_ops = {RepMLPBlock: DMSRepMLPBlock}
    check_op = DynamicRepMLPBlock
    leaf = True
    owns_params = False
    inner_reason = ("its channels are a RepMLPBlock's sharesets times its partition's "
                    'positions, not the stream\'s (its MACs scale with the stream)')

    def channels(self, module: nn.Module) -> Tuple[int, int]:
        return module.channels, module.channels

    def channel_step(self, module: nn.Module) -> int:
        return module.num_sharesets

    def per_channel_sublayers(self, module: nn.Module) -> Tuple[str, ...]:
        names = ['fc3', 'fc3_bn']
        if module.reparam_conv_kernels is not None and not module.deploy:
            for k in module.reparam_conv_kernels:
                names += [f'repconv{k}.conv', f'repconv{k}.bn']
        return tuple(names)

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        return LayerCall(name, self.kind, module.channels, module.channels, x[0, 0].numel())

    def channelwise(self, call: LayerCall) -> bool:
        return True

    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        kept = channelwise_indices(kept_in, kept_out, name)
        if kept is None:
            return
        if not _whole_blocks(kept, module.num_sharesets):
            raise SubnetError(f"'{name}' (RepMLPBlock of {module.num_sharesets} sharesets) can "
                              f'only keep whole blocks of {module.num_sharesets} channels')
        module.channels = len(kept)


@ADAPTERS.register_module()
class RepMLPBlockAdapter(FamilyAdapter):
    """In the tracer's copy, ``RepMLPBlock`` (a leaf) runs its partition perceptron only; the
    global perceptron is applied by :class:`RepMLPNetUnitAdapter`'s forward."""

    module_type = RepMLPBlock
    match_subclasses = False

    def trace_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        return partition_perceptron(module, x)


@ADAPTERS.register_module()
class RepMLPNetUnitAdapter(FamilyAdapter):
    """``RepMLPNetUnit.forward`` with its block's global perceptron called by the unit, so that
    the tracer enters it: ``x + gp(n) * partitions(n)`` for ``n = norm1(x)``."""

    module_type = RepMLPNetUnit
    match_subclasses = False

    def trace_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        normed = module.norm1(x)
        global_vec = module.repmlp_block.gp(normed)
        y = x + module.repmlp_block(normed) * global_vec
        return y + module.ffn_block(module.norm2(y))
