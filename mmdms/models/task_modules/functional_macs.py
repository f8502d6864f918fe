# Copyright (c) mmdms contributors. All rights reserved.
"""Multiply-adds of matrix products that no layer makes: ``q @ k.transpose(-2, -1)``,
``attn @ v``, YOLOv8's DFL ``softmax(x) @ proj``, and the functional ``F.linear`` /
``baddbmm`` of ``torch.nn.MultiheadAttention`` (DETR), whose projections are parameters or a
Linear it calls as a function, so no layer rule sees a call.

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
from typing import Callable, List, Tuple

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
        weight = args[1] if len(args) > 1 else kwargs.get('weight')
        return args[0].numel() * weight.shape[0] if isinstance(weight, torch.Tensor) else 0
    elif func is F.multi_head_attention_forward:
        return multi_head_attention_macs(args, kwargs)
    else:
        return 0
    if len(operands) == 2 and all(isinstance(t, torch.Tensor) for t in operands):
        return matmul_macs(*operands)
    return 0


class MatmulRecorder(TorchFunctionMode):
    """Records ``(module name, MACs)`` of every matrix product of a forward.

    Args:
        model (nn.Module): the model; its modules' forwards are followed with hooks.
        recorded_by_rule (Callable[[str], bool]): whether a module's call is counted by its
            layer rule (products inside it are then its rule's).
    """

    def __init__(self, model: nn.Module, recorded_by_rule: Callable[[str], bool]) -> None:
        super().__init__()
        self.products: List[Tuple[str, int]] = []
        self._stack: List[Tuple[str, bool]] = [('', False)]
        self._handles = []
        for name, module in model.named_modules():
            ruled = recorded_by_rule(name)
            self._handles.append(module.register_forward_pre_hook(
                lambda mod, args, name=name, ruled=ruled: self._enter(name, ruled)))
            self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str, ruled: bool) -> None:
        self._stack.append((name, ruled or self._stack[-1][1]))

    def _leave(self, module: nn.Module, args, output) -> None:
        self._stack.pop()  # returns None: the output stays as it is

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._stack[-1][1]:
            macs = _product_macs(func, args, kwargs)
            if macs:
                self.products.append((self._stack[-1][0], macs))
        return func(*args, **kwargs)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
