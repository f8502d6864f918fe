# Copyright (c) mmdms contributors. All rights reserved.
"""MMRazor's FX tracer, reporting the modules it could not trace instead of hiding them."""
from typing import Any, Callable, Dict, Optional, Tuple

import torch.nn as nn
from mmrazor.models.task_modules.tracer.fx_tracer import FxTracer, MMFxTracer
from torch.fx import Graph


class RecordingFxTracer(MMFxTracer):
    """Same leaves and same fallbacks as MMRazor's tracer, plus a record of where they fired.

    When tracing into a module fails, MMRazor keeps the module as one opaque node: either a
    ``call_module`` node (``FxTracer.call_module`` catches the error) or a ``get_attr`` of the
    module followed by ``call_method`` (its method auto-wrapping). The channels through such a
    module silently drop out of the search; this is why DeiT shows 0 units. :attr:`untraced` maps
    each such module's name to ``(type, reason)``, for modules that are not declared leaves.
    """

    #: Why a module was not entered, when no exception says it.
    default_reason = ('its forward could not be traced symbolically (e.g. data-dependent '
                      'control flow)')

    def __init__(self, leaf_module: Tuple = ()) -> None:
        super().__init__(leaf_module=leaf_module)
        self.untraced: Dict[str, Tuple[type, str]] = {}
        self._errors: Dict[str, str] = {}

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Tuple[Any, ...],
                    kwargs: Dict[str, Any]) -> Any:
        try:
            return super(FxTracer, self).call_module(m, forward, args, kwargs)
        except Exception as e:  # noqa: BLE001  (MMRazor's fallback, now recorded)
            name = self.path_of_module(m)
            self._errors.setdefault(name, f'{type(e).__name__}: {e}')
            return self.create_proxy('call_module', name, args, kwargs)

    def trace(self, root: nn.Module, concrete_args: Optional[Dict[str, Any]] = None) -> Graph:
        graph = super().trace(root, concrete_args)
        modules = dict(root.named_modules())
        for node in graph.nodes:
            module = modules.get(node.target) if isinstance(node.target, str) else None
            if module is None or node.op not in ('call_module', 'get_attr'):
                continue
            if node.op == 'call_module' and self.is_leaf_module(module, node.target):
                continue
            reason = self._errors.get(node.target, self.default_reason)
            self.untraced.setdefault(node.target, (type(module), reason))
        return graph
