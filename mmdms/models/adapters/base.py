# Copyright (c) mmdms contributors. All rights reserved.
"""Family adapters: what DMS needs to know about a model family beyond the layer rules.

A family adapter is one class, registered in :data:`mmdms.registry.ADAPTERS`, for one module
type (``module_type``: the class, or its import path so that the adapter is skipped where the
package is not installed). It overrides what its family needs, and nothing else:

* :meth:`FamilyAdapter.trace_forward`: a forward torch.fx can trace, run on the channel
  analyzer's private copy of the model only (e.g. a forward that iterates a split);
* :meth:`FamilyAdapter.is_residual_block`: whether an instance is an identity-residual block
  ``g(x) = x + f(x)``, whose depth DMS may search;
* :meth:`FamilyAdapter.build_space`: build the module's widths from its known layout instead
  of tracing it (the tracer then treats the module as a leaf), writing them into the
  :class:`~mmdms.models.search_space.SearchSpace`; with :attr:`FamilyAdapter.build_after_trace`
  the tracer still enters the module and ``build_space`` adds, after the traced widths, the
  widths inside it that tracing keeps fixed (a window attention's heads and head dims, whose
  ``qkv`` reads a traced stream);
* :meth:`FamilyAdapter.static_rule`: after the export sliced the module's layers, make the
  module consistent with them (split sizes, pruned attention shapes);
* :meth:`FamilyAdapter.tensor_forward`: for a whole model, the network forward mmdms runs on a
  bare input batch (its tensor mode without data samples): the one the resource estimator
  counts, the export's output check and ``count_macs`` compare, where the model's own tensor
  mode depends on the data (a two-stage detector's proposals come out of an NMS).

The mutator and the export look adapters up here (:func:`adapters_with`, :func:`adapter_for`);
they import no family. A user adds a family from their own package with one registered class::

    from mmdms.models.adapters import FamilyAdapter
    from mmdms.registry import ADAPTERS

    @ADAPTERS.register_module()
    class MyBlockAdapter(FamilyAdapter):
        module_type = 'my_package.models.MyBlock'

        def is_residual_block(self, module):
            return module.stride == 1
"""
import importlib
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch.nn as nn

from mmdms.registry import ADAPTERS

CAPABILITIES = ('trace_forward', 'is_residual_block', 'build_space', 'static_rule',
                'tensor_forward')


class FamilyAdapter:
    """Base of the family adapters (see the module docstring).

    Attributes:
        module_type (type | str): the module class the adapter is for, or its import path.
        match_subclasses (bool): also apply to subclasses (the most derived adapter wins);
            False: only to instances of exactly ``module_type`` (e.g. a traceable forward that a
            subclass may have made wrong).
        build_after_trace (bool): :meth:`build_space` only adds widths inside a module that
            the channel tracer still enters (it is no leaf of the trace): it runs after the
            traced widths are in the space, and may read their layer masks.
    """

    module_type: Union[type, str, None] = None
    match_subclasses = True
    build_after_trace = False

    def handles(self, module: nn.Module) -> bool:
        """Whether the adapter applies to this instance of its type (default: every one); one
        that does not is left to the next adapter of a base type, or to the tracer."""
        return True

    def trace_forward(self, module: nn.Module, *args, **kwargs):
        """What ``module.forward`` computes, with the same submodules in the same order, in a
        form torch.fx can trace. If the forward splits an output by fixed channel counts, take
        them from :func:`~mmdms.models.mutators.trace_forwards.output_section_widths`
        (MMRazor's check that a width can be pruned runs this forward on a pruned copy)."""
        raise NotImplementedError

    def is_residual_block(self, module: nn.Module) -> bool:
        """Whether ``module`` adds its input unchanged to its output (an identity shortcut)."""
        raise NotImplementedError

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        """Make the layers of module ``name`` of ``model`` read DMS masks, and write the widths,
        layer masks, attentions and free parameters into ``space``. ``width_args``: the
        arguments of every :class:`~mmdms.models.mutables.DMSMutableChannel`. The module is a
        leaf of the channel trace unless :attr:`build_after_trace`."""
        raise NotImplementedError

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        """Make ``module`` (named ``name``, its layers already sliced to ``subnet``)
        consistent with them, in place."""
        raise NotImplementedError

    def tensor_forward(self, module: nn.Module, inputs, data_samples):
        """The network forward of the whole model ``module`` on ``inputs`` (``data_samples``:
        one per image, with its geometry), with the same layers the model's tensor mode runs;
        its output is what the model's tensor mode gives without data samples."""
        raise NotImplementedError

    def provides(self, capability: str) -> bool:
        """Whether the adapter overrides ``capability`` (one of :data:`CAPABILITIES`)."""
        return getattr(type(self), capability) is not getattr(FamilyAdapter, capability)


def import_module_type(path: str) -> type:
    """Import ``'package.module.ClassName'``; ``ImportError`` when it does not exist."""
    module_name, _, class_name = path.rpartition('.')
    if not module_name:
        raise ImportError('a bare class name, not an import path')
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except AttributeError as e:
        raise ImportError(str(e)) from None
    return cls


_resolved: Dict[type, Tuple[Optional[type], FamilyAdapter]] = {}


def registered_adapters() -> List[Tuple[type, FamilyAdapter]]:
    """``(module class, adapter)`` of every registered adapter whose module type imports."""
    found = []
    for adapter_cls in ADAPTERS.module_dict.values():
        if adapter_cls not in _resolved:
            module_type = adapter_cls.module_type
            if isinstance(module_type, str):
                try:
                    module_type = import_module_type(module_type)
                except (ImportError, ValueError):
                    module_type = None  # its package is not installed
            _resolved[adapter_cls] = (module_type, adapter_cls())
        module_type, adapter = _resolved[adapter_cls]
        if module_type is not None:
            found.append((module_type, adapter))
    return found


def adapters_with(capability: str) -> List[Tuple[type, FamilyAdapter]]:
    """The registered adapters that provide ``capability``, most derived module type first."""
    if capability not in CAPABILITIES:
        raise ValueError(f'Unknown adapter capability {capability!r}: one of {CAPABILITIES}')
    found = [(t, a) for t, a in registered_adapters() if a.provides(capability)]
    return sorted(found, key=lambda item: -len(item[0].__mro__))


def adapter_for(module: nn.Module, capability: str) -> Optional[FamilyAdapter]:
    """The adapter of ``module``'s type that provides ``capability``, if any."""
    for module_type, adapter in adapters_with(capability):
        if (type(module) is module_type or (adapter.match_subclasses and
                                            isinstance(module, module_type))) \
                and adapter.handles(module):
            return adapter
    return None


class ResidualBlockAdapter(FamilyAdapter):
    """An adapter that only says which instances are identity-residual blocks.

    Attributes:
        identity_when (str, optional): the attribute that is true for instances with an identity
            shortcut, or ``'attr is None'``; ``None``: every instance.
        branch_conv (str, optional): the ``ConvModule`` that ends the residual branch, whose
            output the block adds to its input with nothing after it but a drop path
            (:meth:`branch_norm`).
    """

    identity_when: Optional[str] = None
    branch_conv: Optional[str] = None

    def is_residual_block(self, module: nn.Module) -> bool:
        return residual_predicate(self.identity_when)(module)

    def branch_conv_path(self, module: nn.Module) -> Optional[str]:
        """The path of the ``ConvModule`` that ends the block's residual branch (default:
        :attr:`branch_conv`)."""
        return self.branch_conv

    def branch_norm(self, module: nn.Module) -> Optional[str]:
        """The norm whose output is the block's residual branch ``f(x)`` in ``x + f(x)``: the
        last layer of :meth:`branch_conv_path`'s ``ConvModule`` when it has a norm and no
        activation after it. The mutator folds the block's depth mask into its affine
        parameters (``x + m f(x)``, no activation-sized work); None: it mixes the block's
        output instead."""
        path = self.branch_conv_path(module)
        if path is None:
            return None
        from mmcv.cnn import ConvModule
        conv = module.get_submodule(path)
        # the norm after the conv and no activation: the module's output is the norm's
        if not isinstance(conv, ConvModule) or conv.with_activation or not conv.with_norm or \
                conv.order.index('norm') < conv.order.index('conv'):
            return None
        return f'{path}.{conv.norm_name}'


def residual_predicate(condition: Optional[str]) -> Callable[[nn.Module], bool]:
    """``'attr'`` (true for identity-shortcut instances), ``'attr is None'`` or ``None``
    (every instance) as a predicate."""
    if condition is None:
        return lambda module: True
    if condition.endswith(' is None'):
        attr = condition[:-len(' is None')]
        return lambda module: getattr(module, attr, None) is None
    return lambda module: bool(getattr(module, condition, False))
