# Copyright (c) mmdms contributors. All rights reserved.
"""Which modules are identity-residual blocks, ``g(x) = x + f(x)``, whose depth DMS searches,
by their type.

The family adapters (:meth:`~mmdms.models.adapters.FamilyAdapter.is_residual_block`) and a
config's ``DMSMutator(block_types=...)`` decide for the types they name, whatever the graph
shows; every other block is found from the executed graph (:mod:`.residual_graph`).
"""
from typing import Dict, Optional, Union

import torch.nn as nn

from mmdms.models.adapters.base import adapters_with, import_module_type, residual_predicate


def import_class(path: str) -> type:
    """Import ``'package.module.ClassName'``; one clear error when it does not exist."""
    try:
        cls = import_module_type(path)
    except (ImportError, ValueError) as e:
        raise ValueError(
            f'Residual block type {path!r} does not exist ({e}). Name it by its full import path, '
            "e.g. 'mmpretrain.models.backbones.resnet.Bottleneck'.") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f'Residual block type {path!r} is not an nn.Module class')
    return cls


class ResidualBlockMatcher:
    """Decides whether a module is an identity-residual block.

    Args:
        extra_types (dict | list): more block types, as ``{'pkg.mod.Class': condition}`` or a list
            of import paths (every instance counts). A condition is an attribute name that is true
            for identity-shortcut instances, ``'attr is None'``, or None.
        use_known (bool): also ask the family adapters. Defaults to True.
    """

    def __init__(self, extra_types: Union[Dict[str, Optional[str]], list, None] = None,
                 use_known: bool = True) -> None:
        if isinstance(extra_types, (list, tuple)):
            extra_types = {name: None for name in extra_types}
        # the config's types first: they win over an adapter of the same type
        self.rules = [(import_class(path), residual_predicate(condition))
                      for path, condition in (extra_types or {}).items()]
        if use_known:
            self.rules += [(cls, adapter.is_residual_block)
                           for cls, adapter in adapters_with('is_residual_block')]

    def decision(self, module: nn.Module) -> Optional[bool]:
        """Whether ``module`` is an identity-residual block by a rule of its type; None when no
        rule names its type (then the graph decides)."""
        # The most derived matching type decides (mmyolo's block subclasses mmdet's).
        for cls, predicate in sorted(self.rules, key=lambda r: -len(r[0].__mro__)):
            if isinstance(module, cls):
                return bool(predicate(module))
        return None

    def __call__(self, module: nn.Module) -> bool:
        return bool(self.decision(module))
