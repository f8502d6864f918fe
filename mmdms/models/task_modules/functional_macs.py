# Copyright (c) mmdms contributors. All rights reserved.
"""Multiply-adds of matrix products that no layer makes: ``q @ k.transpose(-2, -1)``,
``attn @ v``, YOLOv8's DFL ``softmax(x) @ proj``.

A layer rule counts a module's MACs from its recorded call; a product of two tensors computed
in a forward's own code (the attention of Swin, Twins, XCiT, MobileViT, LeViT ...) belongs to
no layer. :class:`MatmulRecorder` records each one during the estimator's counting forward,
with the module whose forward computed it (its block's depth mask then weighs it), as
mmengine's ``FlopAnalyzer`` counts it: ``prod(a.shape) * b.shape[-1]``.

Their sizes are taken as fixed: the attention internals these products belong to are not
searched where no family adapter builds them, and a product inside a module whose layer rule
records the module (a searched attention, which counts its own products) is left to that rule.
"""
from typing import Callable, List, Tuple

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

#: The functions of a matrix product of two tensors, as FlopAnalyzer counts them.
_MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
            torch.Tensor.bmm)


def matmul_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    """FlopAnalyzer's count of ``a @ b`` (``matmul_flop_jit``): ``prod(a.shape) * n`` with
    ``n`` the last axis of ``b`` (1 for a vector)."""
    return a.numel() * (b.shape[-1] if b.dim() > 1 else 1)


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
        if func in _MATMULS and len(args) >= 2 and not self._stack[-1][1] and \
                all(isinstance(t, torch.Tensor) for t in args[:2]):
            self.products.append((self._stack[-1][0], matmul_macs(args[0], args[1])))
        return func(*args, **kwargs)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
