# Copyright (c) mmdms contributors. All rights reserved.
"""Multiply-adds of matrix products that no layer makes: ``q @ k.transpose(-2, -1)``,
``attn @ v``, YOLOv8's DFL ``softmax(x) @ proj``, ``torch.einsum`` (MViT-V2's decomposed
relative positions), the ``F.scaled_dot_product_attention`` of an attention whose heads are
not searched (Conformer's and MobileViT's transformer layers, Twins' sub-sampled attention),
and the functional ``F.linear`` / ``baddbmm`` of ``torch.nn.MultiheadAttention`` (DETR), whose
projections are parameters or a Linear it calls as a function, so no layer rule sees a call.

A layer rule counts a module's MACs from its recorded call; a product of two tensors computed
in a forward's own code (the attention of Swin, Twins, XCiT, MobileViT, LeViT ...) belongs to
no layer. :class:`MatmulRecorder` records each one during the estimator's counting forward,
with the module whose forward computed it (its block's depth mask then weighs it), as
mmengine's ``FlopAnalyzer`` counts it: ``prod(a.shape) * b.shape[-1]``.

Their sizes are taken as fixed: the attention internals these products belong to are not
searched where no family adapter builds them, and a product inside a module whose layer rule
records the module (a searched attention, which counts its own products) is left to that rule.
"""
import inspect
import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

#: The functions of a matrix product of two tensors, as FlopAnalyzer counts them.
_MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
            torch.Tensor.bmm)
#: ``baddbmm(input, a, b)``: the product ``a @ b`` (``torch.nn.MultiheadAttention``'s scores
#: with a mask; ``count_macs`` counts it as a ``bmm``, FlopAnalyzer alone skips it).
_ADD_MATMULS = (torch.baddbmm, torch.Tensor.baddbmm)


def matmul_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    """FlopAnalyzer's count of ``a @ b`` (``matmul_flop_jit``): ``prod(a.shape) * n`` with
    ``n`` the last axis of ``b`` (1 for a vector)."""
    return a.numel() * (b.shape[-1] if b.dim() > 1 else 1)


def sdpa_macs(args: tuple, kwargs: dict) -> int:
    """``count_macs``'s count of ``F.scaled_dot_product_attention(q, k, v)`` (FlopAnalyzer
    alone skips it): ``q k^T`` and ``attn v``, one multiply-add each,
    ``batch * heads * L * S * (E_qk + E_v)``, as the two matmuls would be counted."""
    names = ('query', 'key', 'value')
    q, k, v = (args[i] if len(args) > i else kwargs.get(names[i]) for i in range(3))
    if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
        return 0
    return q.numel() // q.shape[-1] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def einsum_macs(args: tuple) -> int:
    """FlopAnalyzer's count of ``torch.einsum(equation, *operands)`` (``einsum_flop_jit``):
    half of numpy's ``einsum_path`` cost of the optimal contraction. For two operands that is
    the product of every index's size if an index is summed (numpy counts a multiply and an
    add), half of it if none is (a multiply only); it is computed exactly here, while
    FlopAnalyzer reads it from ``einsum_path``'s report, printed to four significant digits
    (within 0.05%). Other einsums are read from that report as FlopAnalyzer reads them."""
    equation, operands = args[0], args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):  # einsum(eq, [a, b])
        operands = tuple(operands[0])
    if not isinstance(equation, str) or not operands or \
            not all(isinstance(t, torch.Tensor) for t in operands):
        return 0  # the sublist format einsum(a, [0, 1], b, [1, 2]) is not counted
    equation = equation.replace(' ', '')
    inputs, arrow, output = equation.partition('->')
    terms = inputs.split(',')
    if len(terms) == 2 and '.' not in equation:
        if not arrow:  # implicit output: the indices that appear once
            output = ''.join(c for c in sorted(set(inputs)) if c.isalpha() and
                             inputs.count(c) == 1)
        sizes: Dict[str, int] = {}
        for term, operand in zip(terms, operands):
            for index, size in zip(term, operand.shape):
                sizes[index] = max(sizes.get(index, 1), size)
        summed = any(index not in output for index in sizes)
        return math.prod(sizes.values()) * (1 + summed) // 2
    path = np.einsum_path(equation, *(np.zeros(t.shape) for t in operands),
                          optimize='optimal')[1]
    for line in path.split('\n'):
        if 'optimized flop' in line.lower():
            return int(float(line.split(':')[-1]) // 2)
    return 0


def multi_head_attention_macs(args: tuple, kwargs: dict) -> int:
    """FlopAnalyzer's count of ``F.multi_head_attention_forward`` (``torch.nn.
    MultiheadAttention``, e.g. in DETR's transformer), which a torch function mode sees as one
    call: the input projections of query ``(L, N, E)``, key ``(S, N, E_k)`` and value
    ``(S, N, E_v)`` (``F.linear``), the scores ``q k^T`` and ``attn v`` (``bmm`` /
    ``baddbmm``, or scaled dot-product attention: ``N L S E`` each) and the output
    projection."""
    bound = inspect.signature(F.multi_head_attention_forward).bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query, key, value = a['query'], a['key'], a['value']
    if query.dim() == 2:  # unbatched
        query, key, value = query[:, None], key[:, None], value[:, None]
    length, batch, embed = query.shape
    source = key.shape[0] + (a['bias_k'] is not None) + bool(a['add_zero_attn'])
    projections = length * embed + key.shape[0] * key.shape[-1] + \
        value.shape[0] * value.shape[-1]
    out_features = a['out_proj_weight'].shape[0]
    return batch * (projections * embed + 2 * length * source * embed +
                    length * embed * out_features)


def _product_macs(func, args: tuple, kwargs: dict) -> int:
    """FlopAnalyzer's count of one call of a matrix product (0 for any other function)."""
    if func in _MATMULS:
        operands = args[:2]
    elif func in _ADD_MATMULS:
        operands = (args[1:3] if len(args) >= 3 else
                    (kwargs.get('batch1'), kwargs.get('batch2')))
    elif func is F.linear:
        # ``F.linear(x, W)`` outside a Linear layer (``torch.nn.MultiheadAttention``'s packed
        # input projection, its ``out_proj`` called as a function): ``prod(x.shape) * W.rows``
        # passed by position or, as Swin-V2's and BEiT's attentions do, by keyword
        x = args[0] if args else kwargs.get('input')
        weight = args[1] if len(args) > 1 else kwargs.get('weight')
        if isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor):
            return x.numel() * weight.shape[0]
        return 0
    elif func is F.multi_head_attention_forward:
        return multi_head_attention_macs(args, kwargs)
    elif func is F.scaled_dot_product_attention:
        return sdpa_macs(args, kwargs)
    elif func is torch.einsum:
        return einsum_macs(args)
    else:
        return 0
    if len(operands) == 2 and all(isinstance(t, torch.Tensor) for t in operands):
        return matmul_macs(*operands)
    return 0


#: FlopAnalyzer's count per output element of the upsamplings it counts.
_UPSAMPLE_MACS = {'nearest': 1, 'bilinear': 4}


def upsample_macs_per_channel(func, args: tuple, kwargs: dict, out) -> Optional[Tuple[int, int]]:
    """``(MACs per channel, channels)`` of an ``F.interpolate`` FlopAnalyzer counts (nearest:
    one per output element, bilinear: four; 4-D inputs), else None."""
    if func is not F.interpolate or not isinstance(out, torch.Tensor) or out.dim() != 4:
        return None
    mode = kwargs.get('mode', args[3] if len(args) > 3 else 'nearest')
    factor = _UPSAMPLE_MACS.get(mode)
    if factor is None:
        return None
    return out[0, 0].numel() * out.shape[0] * factor, out.shape[1]


class MatmulRecorder(TorchFunctionMode):
    """Records ``(module name, MACs)`` of every matrix product of a forward, and
    ``(module name, MACs per channel, source layer, channels)`` of every upsampling
    (``F.interpolate``, nearest or bilinear: an FPN's or a YOLO neck's top-down path).

    An upsampling's cost scales with its channels: its source is the recorded layer whose
    output it reads, directly or through shape-keeping functions (activations, adds); the
    estimator counts it at that layer's kept output width (at full size if there is none).

    A ``F.linear`` on the weight of a linear layer counted by its rule (Swin-V2's
    ``WindowMSAV2`` computes ``F.linear(input=x, weight=self.qkv.weight, bias=qkv_bias)``
    itself, never calling ``qkv``) is that layer's call, not a fixed product: it is recorded in
    :attr:`layer_calls` as ``(layer name, layer, input, output)``, for its rule to count at
    the layer's kept widths.

    Args:
        model (nn.Module): the model; its modules' forwards are followed with hooks.
        recorded_by_rule (Callable[[str], bool]): whether a module's call is counted by its
            layer rule (products inside it are then its rule's).
    """

    def __init__(self, model: nn.Module, recorded_by_rule: Callable[[str], bool]) -> None:
        super().__init__()
        self.products: List[Tuple[str, int]] = []
        self.upsamplings: List[Tuple[str, int, Optional[str], int]] = []
        self.layer_calls: List[Tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
        #: id(weight) -> (weight, name, layer) of the linear layers counted by their rule
        self._linear_weights: Dict[int, Tuple[torch.Tensor, str, nn.Module]] = {
            id(module.weight): (module.weight, name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and recorded_by_rule(name)}
        self._stack: List[Tuple[str, bool]] = [('', False)]
        #: id(tensor) -> (tensor, the recorded layer whose output it carries)
        self._sources: Dict[int, Tuple[torch.Tensor, str]] = {}
        self._handles = []
        for name, module in model.named_modules():
            ruled = recorded_by_rule(name)
            self._handles.append(module.register_forward_pre_hook(
                lambda mod, args, name=name, ruled=ruled: self._enter(name, ruled)))
            self._handles.append(module.register_forward_hook(
                lambda mod, args, out, name=name, ruled=ruled: self._leave(name, ruled, out)))

    def _enter(self, name: str, ruled: bool) -> None:
        self._stack.append((name, ruled or self._stack[-1][1]))

    def _leave(self, name: str, ruled: bool, output) -> None:
        self._stack.pop()  # returns None: the output stays as it is
        if ruled and isinstance(output, torch.Tensor) and output.dim() == 4:
            self._sources[id(output)] = (output, name)

    def _source(self, tensor) -> Optional[str]:
        found = self._sources.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return found[1] if found is not None and found[0] is tensor else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inside_rule = self._stack[-1][1]
        layer = self._functional_layer(func, args, kwargs) if not inside_rule else None
        if not inside_rule and layer is None:
            macs = _product_macs(func, args, kwargs)
            if macs:
                self.products.append((self._stack[-1][0], macs))
        out = func(*args, **kwargs)
        if layer is not None:
            x = args[0] if args else kwargs.get('input')
            self.layer_calls.append(layer + (x, out))
        if not inside_rule:
            upsample = upsample_macs_per_channel(func, args, kwargs, out)
            if upsample is not None:
                self.upsamplings.append((self._stack[-1][0], upsample[0],
                                         self._source(args[0] if args else None), upsample[1]))
            elif isinstance(out, torch.Tensor) and out.dim() == 4:
                # a shape-keeping function (activation, residual add) carries its source
                for arg in args[:2]:
                    source = self._source(arg)
                    if source is not None and arg.shape == out.shape:
                        self._sources[id(out)] = (out, source)
                        break
        return out

    def _functional_layer(self, func, args: tuple,
                          kwargs: dict) -> Optional[Tuple[str, nn.Module]]:
        """``(name, layer)`` if ``func`` is ``F.linear`` on the weight of a linear layer counted
        by its rule."""
        if func is not F.linear:
            return None
        weight = args[1] if len(args) > 1 else kwargs.get('weight')
        found = self._linear_weights.get(id(weight))
        if found is None or found[0] is not weight:
            return None
        return found[1], found[2]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
