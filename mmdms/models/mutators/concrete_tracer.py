# Copyright (c) mmdms contributors. All rights reserved.
"""An FX tracer whose Python control flow runs on a concrete input.

Symbolic FX stops at the first ``if``, ``assert``, ``len`` or loop that reads a traced value
(Swin's ``assert L == H * W``, a padding computed from ``x.shape``, a loop over a tensor's
rows); MMRazor's tracer then keeps the whole module as one opaque node and its channels drop out
of the search. :class:`ConcreteFxTracer` traces the same way but runs every traced operation on
a real input as it records it (under ``torch.no_grad``): each proxy carries its concrete value,
and whatever is not a tensor (shapes, sizes, dtypes, booleans, Python numbers) is that value,
not a graph node. So control flow takes the branch the concrete input takes, shapes are
constants, and the graph holds the tensor operations of that executed forward: the channel
dependencies of the forward that runs on inputs of that shape, module calls included (which
MMRazor's channel graph needs, and an autograd or ATen graph would not give).

What it cannot resolve: a forward whose tensor operations themselves depend on the values (e.g.
a ``nonzero`` or a sort whose result decides which layer runs) is recorded as it ran on the
demo input; MMRazor's pruning check, which runs the real forward of a pruned copy, still guards
every width found.

Used by :class:`~mmdms.models.mutators.channel_analyzer.DMSChannelAnalyzer` as a fallback: when
MMRazor's tracer cannot enter a module that holds searchable layers, the model is traced again
with this tracer. Models MMRazor's tracer traces are traced by it alone, as before.
"""
import inspect
import operator
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn as nn
from torch.fx import Graph, Proxy
from torch.fx._symbolic_trace import _orig_module_call, _orig_module_getattr
from torch.fx.node import map_aggregate
from torch.fx.proxy import Attribute

from .recording_tracer import RecordingFxTracer

#: Files of the tracing machinery: a value read is reported at the first frame outside them.
_TRACING_FILES = ('torch/fx/proxy.py', 'torch/fx/_symbolic_trace.py', 'torch/_tensor.py',
                  'mmrazor/models/task_modules/tracer/fx_tracer.py', __file__)


#: Tensor methods that read shapes / layout only (their value is not data-dependent).
_SHAPE_METHODS = ('size', 'dim', 'ndimension', 'numel', 'nelement', 'element_size', 'stride',
                  'get_device', 'is_contiguous', 'is_floating_point', 'is_complex', 'type',
                  'storage_offset', '__len__')
#: Attributes read by ``getattr`` that are shapes / layout.
_SHAPE_ATTRS = ('shape', 'dtype', 'device', 'ndim', 'is_cuda', 'requires_grad', 'layout', 'T',
                'mT')


def _reads_shape(kind: str, target: Any, args: tuple) -> bool:
    """Whether a call that gives a non-tensor value reads only shapes / layout, or computes
    on values that are not tensors (shape arithmetic)."""
    if kind == 'call_method':
        return target in _SHAPE_METHODS
    if target is getattr:
        return args[1] in _SHAPE_ATTRS
    # e.g. operator.mul on a shape and an int, or a comparison of two shapes
    return not any(isinstance(a, torch.Tensor) for a in
                   (concrete_value(args) if isinstance(args, tuple) else ()))


def holds_tensor(value: Any) -> bool:
    """Whether ``value`` is a tensor or a (nested) container with one: what stays symbolic."""
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(holds_tensor(v) for v in value.values())
    return False


def concrete_shape(value: Any) -> Any:
    """The shape of a tensor value (a tuple), of each tensor of a tuple or list (a list), else
    None: what the channel graph reads of the concrete input (``node.meta['concrete_shape']``)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return [concrete_shape(v) for v in value]
    return None


def concrete_value(arg: Any) -> Any:
    """``arg`` with every proxy replaced by its concrete value."""
    return map_aggregate(arg, lambda a: a.concrete if isinstance(a, Proxy) else a)


class ConcreteProxy(Proxy):
    """A proxy that knows the value it stands for on the concrete input (:attr:`concrete`).

    Attributes that are not tensors (``shape``, ``dtype``, ``ndim``, ``device``) are that
    value; ``len``, ``bool``, iteration and ``int`` read it.
    """

    def __getattr__(self, k: str) -> Any:
        if k.startswith('__') or k in ('concrete', 'node', 'tracer'):
            raise AttributeError(k)
        value = getattr(self.concrete, k)
        if not callable(value) and not holds_tensor(value):
            return value
        return ConcreteAttribute(self, k)

    def __len__(self) -> int:
        return len(self.concrete)

    def __int__(self) -> int:
        self.tracer._value_read("a tensor's value as an int")
        return int(self.concrete)

    def __index__(self) -> int:
        self.tracer._value_read("a tensor's value as an index")
        return int(self.concrete)

    def __float__(self) -> float:
        self.tracer._value_read("a tensor's value as a float")
        return float(self.concrete)


class ConcreteAttribute(Attribute, ConcreteProxy):
    """``proxy.attr``: a method call (``x.view(...)``) or a tensor attribute (``x.T``)."""

    @property
    def concrete(self) -> Any:
        return getattr(self.root.concrete, self.attr)


class _TracingPatchesLifted:
    """Runs real module code inside a trace: ``nn.Module.__call__`` and ``__getattr__`` are
    the originals meanwhile (the tracer's versions would trace the call, and return proxies
    for the parameters)."""

    def __enter__(self) -> None:
        self.patched = (nn.Module.__call__, nn.Module.__getattr__)
        nn.Module.__call__, nn.Module.__getattr__ = _orig_module_call, _orig_module_getattr

    def __exit__(self, *exc) -> None:
        nn.Module.__call__, nn.Module.__getattr__ = self.patched


class ConcreteFxTracer(RecordingFxTracer):
    """MMRazor's FX tracer (with :class:`RecordingFxTracer`'s record), run on a concrete input.

    Args:
        inputs (dict): the concrete value of each placeholder of the traced forward, by
            argument name (e.g. ``{'inputs': tensor}``); a placeholder not named takes its
            default value.
        leaf_module (tuple): module types the tracer does not enter.
    """

    default_reason = ('its forward fails on traced tensors even with its Python control flow '
                      'run on the demo input (e.g. it checks isinstance(x, torch.Tensor), or '
                      'passes them to a compiled op)')

    def __init__(self, inputs: Dict[str, Any], leaf_module: Tuple = ()) -> None:
        super().__init__(leaf_module=leaf_module)
        #: Buffers read by a forward are ``get_attr`` nodes with their names, as parameters
        #: are (not anonymous constants): the channel graph can follow and slice a fixed
        #: position table (T2T's sinusoid embedding) as it does a learnt one.
        self.proxy_buffer_attributes = True
        self.inputs = dict(inputs)
        #: ``{module: what}``: where Python read a tensor's values (``if x.sum() > 0``,
        #: ``int(t)``): the graph holds the path the concrete input took there.
        self.value_reads: Dict[str, str] = {}

    def proxy(self, node) -> ConcreteProxy:
        return ConcreteProxy(node, self)

    def _run(self, kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
        """The value of one operation on the concrete values of its arguments."""
        if kind == 'placeholder':
            return self.inputs.get(str(target).lstrip('*'), args[0] if args else None)
        args, kwargs = concrete_value(args), concrete_value(kwargs)
        with torch.no_grad(), _TracingPatchesLifted():
            if kind == 'get_attr':
                value = self.root
                for atom in str(target).split('.'):
                    value = getattr(value, atom)
                return value
            if kind == 'call_function':
                return target(*args, **kwargs)
            if kind == 'call_method':
                return getattr(args[0], target)(*args[1:], **kwargs)
            if kind == 'call_module':
                return self.root.get_submodule(target)(*args, **kwargs)
        raise ValueError(f'unexpected FX node kind {kind!r}')

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict,
                     name: Optional[str] = None, type_expr: Any = None,
                     proxy_factory_fn: Optional[Callable] = None) -> Any:
        if kind == 'output':
            return super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                        proxy_factory_fn)
        value = self._run(kind, target, args, kwargs)
        if kind in ('call_function', 'call_method') and not holds_tensor(value):
            if not _reads_shape(kind, target, args):
                self._value_read(f'{getattr(target, "__name__", target)} gives a non-tensor '
                                 'value')
            return value  # a shape, a size, a flag: a constant of this input, not a node
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                     proxy_factory_fn)
        proxy.concrete = value
        proxy.node.meta['concrete_shape'] = concrete_shape(value)
        return proxy

    def _value_read(self, what: str) -> None:
        """Record a Python decision on a tensor's values (shapes are never proxies here)."""
        frame = inspect.currentframe()
        while frame is not None and frame.f_code.co_filename.endswith(_TRACING_FILES):
            frame = frame.f_back
        where = f'{frame.f_code.co_filename}:{frame.f_lineno}' if frame is not None else '?'
        module = next(reversed(self.module_stack.values()))[0] if self.module_stack else ''
        self.value_reads.setdefault(module, f'{what} at {where}')

    def to_bool(self, obj: Proxy) -> bool:
        self._value_read("a tensor's truth value")
        return bool(obj.concrete)

    def iter(self, obj: Proxy) -> Iterator:
        return iter([obj[i] for i in range(len(obj.concrete))])

    def keys(self, obj: Proxy) -> Any:
        return obj.concrete.keys()

    def trace(self, root: nn.Module, concrete_args: Optional[Dict[str, Any]] = None) -> Graph:
        self.root = root  # read by _run's get_attr before MMRazor's trace sets it
        graph = super().trace(root, concrete_args)
        drop_unused_values(graph)
        return graph


_IN_PLACE_OPERATORS = (operator.iadd, operator.isub, operator.imul, operator.itruediv,
                       operator.ifloordiv, operator.imod, operator.ipow, operator.iand,
                       operator.ior, operator.ixor, operator.ilshift, operator.irshift,
                       operator.imatmul)


def _in_place(node) -> bool:
    if node.target in _IN_PLACE_OPERATORS:
        return True
    target = getattr(node.target, '__name__', node.target)
    return isinstance(target, str) and target.endswith('_') and not target.endswith('__')


def drop_unused_values(graph: Graph) -> int:
    """Remove the tensor operations whose values nothing uses (e.g. ``x.sum() > 0`` that only
    decided a branch): MMRazor's channel graph would take an unused value for a model output
    and keep the widths it reads fixed. In-place operations stay. Returns how many went."""
    dropped = 0
    for node in reversed(list(graph.nodes)):
        if node.op in ('call_function', 'call_method') and not node.users and \
                not _in_place(node):
            graph.erase_node(node)
            dropped += 1
    return dropped
