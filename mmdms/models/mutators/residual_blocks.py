# Copyright (c) mmdms contributors. All rights reserved.
"""Which modules are identity-residual blocks, ``g(x) = x + f(x)``, whose depth DMS searches."""
import importlib
from typing import Callable, Dict, Optional, Union

import torch.nn as nn

#: ``'module.path.ClassName'`` -> the attribute that is true when an instance adds its input
#: unchanged (an identity shortcut); ``None`` when every instance does.
KNOWN_RESIDUAL_BLOCKS: Dict[str, Optional[str]] = {
    'mmpretrain.models.backbones.resnet.BasicBlock': 'downsample is None',
    'mmpretrain.models.backbones.resnet.Bottleneck': 'downsample is None',
    'mmpretrain.models.utils.inverted_residual.InvertedResidual': 'with_res_shortcut',
    'mmpretrain.models.backbones.mobilenet_v2.InvertedResidual': 'use_res_connect',
    'mmpretrain.models.backbones.efficientnet.EdgeResidual': 'with_residual',
    'mmpretrain.models.backbones.vision_transformer.TransformerEncoderLayer': None,
    # mmyolo's DarknetBottleneck (in CSPLayerWithTwoConv) subclasses this one.
    'mmdet.models.layers.csp_layer.DarknetBottleneck': 'add_identity',
}


def import_class(path: str) -> type:
    """Import ``'package.module.ClassName'``; one clear error when it does not exist."""
    module_name, _, class_name = path.rpartition('.')
    try:
        if not module_name:
            raise ImportError('a bare class name, not an import path')
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(
            f'Residual block type {path!r} does not exist ({e}). Name it by its full import path, '
            "e.g. 'mmpretrain.models.backbones.resnet.Bottleneck'.") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f'Residual block type {path!r} is not an nn.Module class')
    return cls


def _shortcut_predicate(condition: Optional[str]) -> Callable[[nn.Module], bool]:
    if condition is None:
        return lambda module: True
    if condition.endswith(' is None'):
        attr = condition[:-len(' is None')]
        return lambda module: getattr(module, attr, None) is None
    return lambda module: bool(getattr(module, condition, False))


class ResidualBlockMatcher:
    """Decides whether a module is an identity-residual block.

    Args:
        extra_types (dict | list): more block types, as ``{'pkg.mod.Class': condition}`` or a list
            of import paths (every instance counts). A condition is an attribute name that is true
            for identity-shortcut instances, ``'attr is None'``, or None.
        use_known (bool): also match :data:`KNOWN_RESIDUAL_BLOCKS`. Defaults to True.
    """

    def __init__(self, extra_types: Union[Dict[str, Optional[str]], list, None] = None,
                 use_known: bool = True) -> None:
        if isinstance(extra_types, (list, tuple)):
            extra_types = {name: None for name in extra_types}
        types: Dict[str, Optional[str]] = dict(KNOWN_RESIDUAL_BLOCKS) if use_known else {}
        types.update(extra_types or {})
        self.rules = []
        for path, condition in types.items():
            try:
                cls = import_class(path)
            except ValueError:
                if path in (extra_types or {}):
                    raise
                continue  # a known type whose package is not installed
            self.rules.append((cls, _shortcut_predicate(condition)))

    def __call__(self, module: nn.Module) -> bool:
        # The most derived matching type decides (mmyolo's block subclasses mmdet's).
        for cls, predicate in sorted(self.rules, key=lambda r: -len(r[0].__mro__)):
            if isinstance(module, cls):
                return predicate(module)
        return False
