# Copyright (c) mmdms contributors. All rights reserved.
"""MMRazor's ChannelAnalyzer, plus channel splits and traceable forwards.

MMRazor 1.0's channel graph knows concatenation but not its inverse: a ``split`` / ``chunk`` along
the channel axis, and the ``getitem`` that picks one part, become nodes that pass all channels
through, so the part's consumer sees a width mismatch and the graph cuts it off (mmyolo's
``CSPLayerWithTwoConv``: main_conv's halves, the bottleneck chain and final_conv drop out of the
search). :class:`DMSChannelAnalyzer` converts such nodes into :class:`SplitChannelNode` (channels
``[s_i, s_i + n_i)`` of its input go to part ``i``) and :class:`SplitItemChannelNode` (picks part
``i``), so every part is a channel range of its own that follows its consumers, and installs the
traceable forwards of :mod:`.trace_forwards` on its private copy of the model.

MMRazor keeps a width only if a physically pruned copy of the model still runs; its pruned copy
knows a fixed set of layer types. A layer rule that names a ``check_op`` (an MMRazor dynamic op
that slices its parameters) adds its type to that set (:class:`RuleAwareCheckUnit`).

It also leaves out of the channel graph what only reads a tensor's batch or spatial sizes
(``b, _, h, w = x.shape`` then ``reshape(..., h * w)`` in YOLOv8's head): MMRazor treats such a
read as a consumer of all of ``x``'s channels, and the unused ``_`` as a model output, which ties
``x``'s width to the output and keeps it fixed. A read of the channel count that reaches a
consumer is kept as MMRazor has it (pruning ``x`` changes that value).

When MMRazor's channel graph fails on a node, :class:`ChannelTraceError` names the node and the
module whose forward made it; :attr:`DMSChannelAnalyzer.layer_reasons` says, for each layer of a
width MMRazor keeps fixed, why (read by the mutator's thin-space warning).
"""
import copy
import functools
import inspect
import operator
from typing import Dict, List, Optional, Tuple

import torch
import torch.fx
from mmengine.model.utils import revert_sync_batchnorm
import torch.nn as nn
from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin
from mmrazor.models.mutables import MutableChannelUnit, SequentialMutableChannelUnit
from mmrazor.models.mutables.mutable_channel.units.utils import find_mutable
from mmrazor.models.task_modules.tracer.channel_analyzer import ChannelAnalyzer
from mmrazor.registry import TASK_UTILS
from mmrazor.structures.graph.base_graph import BaseGraph
from mmrazor.structures.graph.channel_flow import ChannelTensor
from mmrazor.structures.graph.channel_graph import ChannelGraph
from mmrazor.structures.graph.channel_nodes import (ChannelDismatchError, ChannelNode,
                                                    PassUnionChannelNode, assert_channel,
                                                    default_channel_node_converter)
from mmrazor.structures.graph.module_graph import FxTracerToGraphConverter, ModuleNode
from mmrazor.structures.graph.pseudo_fx_graph import FxBaseNode
from torch.fx import Graph as FxGraph
from torch.fx import Node as FxNode

from mmdms.models.layer_rules import LAYER_RULES, ChannelStep, searchable_layers
from mmdms.models.mutables import unit_channel_step
from .channel_shuffle import ChannelShuffleNode, is_channel_shuffle, unshuffled_units
from .concrete_tracer import ConcreteFxTracer, concrete_shape
from .layout_nodes import (PARAM_PREFIX, FreeParamChannelNode, LayoutCatChannelNode,
                           axis_argument, free_param_of)
from .norm_folding import norm_streams
from .trace_forwards import install_trace_forwards

_SPLIT_METHODS = ('split', 'chunk')
_SPLIT_FUNCTIONS = (torch.split, torch.chunk, torch.Tensor.split, torch.Tensor.chunk)
_CHANNEL_DIM = 1  # MMRazor's channel graph follows channels on axis 1 (NCHW convs)


class ChannelTraceError(RuntimeError):
    """MMRazor's channel graph failed on a node of the traced model."""


def _node_module(fx_node: Optional[FxNode]) -> Tuple[str, str]:
    """Name and type path of the innermost module whose forward made ``fx_node`` (empty for
    the model itself)."""
    stack = (fx_node.meta.get('nn_module_stack') or {}) if fx_node is not None else {}
    if not stack:
        return '', ''
    name, module_type = list(stack.values())[-1]
    if isinstance(module_type, type):
        module_type = f'{module_type.__module__}.{module_type.__qualname__}'
    return name, str(module_type)


def _failing_node(error: BaseException) -> Optional[str]:
    """The name of the innermost MMRazor graph node in ``error``'s traceback."""
    name, tb = None, error.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get('self')
        if isinstance(node, (ModuleNode, ChannelNode)):
            name = node.name
        tb = tb.tb_next
    return name


def fixed_width_reason(unit) -> str:
    """Why MMRazor keeps the width of ``unit`` fixed (``unit.is_mutable`` is False)."""
    if not unit.output_related or not unit.input_related:
        return 'no layer produces or no layer reads its channels in the traced graph'
    for channel in list(unit.input_related) + list(unit.output_related):
        name, module = str(channel.name), channel.module
        if name in ('input_placeholder', 'output_placeholder'):
            side = 'input' if name.startswith('input') else 'output'
            return (f"its channels are tied to the model's {side} in the traced graph (they "
                    f"are the {side} channels, or an op MMRazor's tracer does not know joins "
                    'them to those: see its "can\'t find match type" log lines)')
        if isinstance(module, nn.Module) and not isinstance(module, DynamicChannelMixin) and \
                next(module.parameters(), None) is not None:
            return (f"its channels pass through '{name}' ({type(module).__name__}), a layer "
                    "with parameters that MMRazor's pruning check did not make prunable (no "
                    'layer rule with a check_op for its type, or MMRazor left it as it is)')
    return 'MMRazor keeps its channels fixed'


def hidden_searchable_modules(model: nn.Module, tracer) -> List[str]:
    """The modules ``tracer`` (a :class:`~.recording_tracer.RecordingFxTracer`) could not
    enter that hold searchable layers (their channels would drop out of the search)."""
    modules = dict(model.named_modules())
    return [name for name in getattr(tracer, 'untraced', {})
            if name in modules and next(searchable_layers(modules[name]), None) is not None]


class SplitSpec:
    """How a split divides its input channels: explicit ``sections``, parts of ``split_size``
    (the last one shorter), or ``chunks`` parts (``torch.chunk``'s rule)."""

    def __init__(self, sections: Optional[List[int]] = None, split_size: Optional[int] = None,
                 chunks: Optional[int] = None) -> None:
        self.sections, self.split_size, self.chunks = sections, split_size, chunks

    def part_sizes(self, channels: int) -> List[int]:
        if self.sections is not None:
            return list(self.sections)
        size = self.split_size if self.split_size is not None else -(-channels // self.chunks)
        size = max(size, 1)
        return [min(size, channels - start) for start in range(0, channels, size)]

    @classmethod
    def from_fx_node(cls, node: FxNode) -> Optional['SplitSpec']:
        """The spec of a static channel-axis ``split`` / ``chunk`` FX node, else None."""
        if node.op == 'call_method' and node.target in _SPLIT_METHODS:
            kind = node.target
        elif node.op == 'call_function' and node.target in _SPLIT_FUNCTIONS:
            kind = node.target.__name__
        else:
            return None
        arg_name = 'chunks' if kind == 'chunk' else 'split_size_or_sections'
        how = node.args[1] if len(node.args) > 1 else \
            node.kwargs.get(arg_name, node.kwargs.get('split_size'))
        dim = axis_argument(node, 2, default=0)
        if dim != _CHANNEL_DIM:
            return None
        if kind == 'chunk':
            return cls(chunks=how) if isinstance(how, int) and how > 0 else None
        if isinstance(how, int) and how > 0:
            return cls(split_size=how)
        if isinstance(how, (list, tuple)) and all(isinstance(s, int) for s in how):
            return cls(sections=list(how))
        return None  # sizes computed at run time: left to MMRazor's default nodes


class _PartsChannelTensor(ChannelTensor):
    """The output of a split: the whole input for any consumer, plus its ``parts``."""

    def __init__(self, parts: List[ChannelTensor]) -> None:
        super().__init__(0)
        self.elems = [elem for part in parts for elem in part.elems]
        self.parts = parts


class SplitChannelNode(ChannelNode):
    """``torch.split`` / ``chunk`` along the channel axis.

    Part ``i`` is a new channel tensor bound one-to-one to the input channels
    ``[s_i, s_i + n_i)``. Its own tensor also keeps the parts apart when MMRazor groups channels
    (it groups by the set of tensors a channel is bound to): without it, two parts that no other
    layer binds would look like one group.
    """

    def __init__(self, name: str, val, module_name: str = '',
                 spec: Optional[SplitSpec] = None) -> None:
        super().__init__(name, val, module_name)
        self.spec = spec
        self._failed_check = False

    @classmethod
    def copy_from(cls, node: ModuleNode, spec: Optional[SplitSpec] = None) -> 'SplitChannelNode':
        return cls(node.name, node.val, node.module_name, spec)

    def channel_forward(self, channel_tensors: List[ChannelTensor]) -> ChannelTensor:
        assert len(channel_tensors) == 1, f'{self}'
        tensor = channel_tensors[0]
        parts, start = [], 0
        for size in self.spec.part_sizes(len(tensor)):
            part = ChannelTensor(size)
            part.union(tensor[start:start + size])
            parts.append(part)
            start += size
        self.in_channel_tensor = tensor
        self.out_channel_tensor = tensor
        return _PartsChannelTensor(parts)

    def check_channel(self) -> None:
        # MMRazor answers a failed check by feeding the node from a new input and checking it
        # again, while it still fails; a split that does not add up failed every time (its
        # sizes are its own), and HorNet's gnconv split took more than 300 s of such rounds.
        # It fails once: its input is then a fixed one, and its widths with it.
        if self._failed_check:
            return
        try:
            super().check_channel()
            assert_channel(sum(self.spec.part_sizes(self.in_channels)) == self.in_channels, self)
        except ChannelDismatchError:
            self._failed_check = True
            raise

    def __repr__(self) -> str:
        return super().__repr__() + '_split'


class SplitItemChannelNode(ChannelNode):
    """``parts[index]`` of a split: its channels are that part's."""

    def __init__(self, name: str, val, module_name: str = '', spec: Optional[SplitSpec] = None,
                 index: int = 0) -> None:
        super().__init__(name, val, module_name)
        self.spec = spec
        self.index = index

    @classmethod
    def copy_from(cls, node: ModuleNode, spec: Optional[SplitSpec] = None,
                  index: int = 0) -> 'SplitItemChannelNode':
        return cls(node.name, node.val, node.module_name, spec, index)

    def _get_out_channel_by_in_channels(self, in_channels: int) -> int:
        sizes = self.spec.part_sizes(in_channels)
        if not 0 <= self.index < len(sizes):
            # e.g. the node lost its split (no input): MMRazor names the node in its error
            return -1
        return sizes[self.index]

    def channel_forward(self, channel_tensors: List[ChannelTensor]) -> ChannelTensor:
        assert len(channel_tensors) == 1, f'{self}'
        part = channel_tensors[0].parts[self.index]
        self.in_channel_tensor = part
        self.out_channel_tensor = part
        return part

    def __repr__(self) -> str:
        return super().__repr__() + f'_item({self.index})'


class LayerNormChannelNode(PassUnionChannelNode):
    """A LayerNorm over the last axis: its channels pass through, and it has
    ``normalized_shape[-1]`` of them (MMRazor's default node takes the count from its input
    node, which need not know it)."""

    @property
    def _in_channels(self) -> int:
        return self.val.normalized_shape[-1]

    @property
    def _out_channels(self) -> int:
        return self.val.normalized_shape[-1]

    def __repr__(self) -> str:
        return super().__repr__() + '_ln'


class GroupNormChannelNode(PassUnionChannelNode):
    """A GroupNorm of several groups: its channels pass through one to one, and it has
    ``num_channels`` of them. MMRazor's ``GroupNormNode`` instead binds channel ``i`` of every
    group together (a width of ``C / G`` channels, each read as ``G`` strided ones: pruning would
    shrink every group); mmdms prunes whole groups (the width's step,
    :meth:`~mmdms.models.layer_rules.GroupNormRule.channel_step`)."""

    @property
    def _in_channels(self) -> int:
        return self.val.num_channels

    @property
    def _out_channels(self) -> int:
        return self.val.num_channels

    def __repr__(self) -> str:
        return super().__repr__() + '_gn'


def split_aware_node_converter(node: ModuleNode, fx_nodes: Dict[str, FxNode],
                               model: Optional[nn.Module] = None) -> ChannelNode:
    """MMRazor's node converter, with channel splits, the parts picked from them, channel
    shuffles, LayerNorms over the last axis, GroupNorms of several groups, parameters read by a
    forward (with ``model``) and concatenations of positions (where the concrete tracer
    recorded the shapes); see :mod:`.layout_nodes`."""
    if isinstance(node.val, nn.LayerNorm) and len(node.val.normalized_shape) == 1:
        return LayerNormChannelNode.copy_from(node)
    if isinstance(node.val, nn.GroupNorm) and node.val.num_groups > 1:
        return GroupNormChannelNode.copy_from(node)
    fx_node = fx_nodes.get(node.name)
    if fx_node is not None and is_channel_shuffle(fx_node):
        return ChannelShuffleNode.copy_from(node)
    if fx_node is not None:
        param = free_param_of(fx_node, model) if model is not None else None
        if param is not None:
            return FreeParamChannelNode.copy_from(node, str(fx_node.target), param.shape[-1])
        cat = LayoutCatChannelNode.from_fx_node(node, fx_node)
        if cat is not None:
            return cat
        spec = SplitSpec.from_fx_node(fx_node)
        if spec is not None:
            return SplitChannelNode.copy_from(node, spec)
        if fx_node.op == 'call_function' and fx_node.target is operator.getitem:
            source, index = fx_node.args
            spec = SplitSpec.from_fx_node(source) if isinstance(source, FxNode) else None
            if spec is not None and isinstance(index, int):
                return SplitItemChannelNode.copy_from(node, spec, index)
    return default_channel_node_converter(node)


def _is_shape_read(node: FxNode) -> bool:
    return ((node.op == 'call_function' and node.target is getattr and node.args[1:] == ('shape',))
            or (node.op == 'call_method' and node.target == 'size'))


def _reads_no_channel_count(node: FxNode) -> bool:
    """Whether a shape read is known to give only batch / spatial sizes (axis >= 0, not 1)."""
    if node.op == 'call_method':  # x.size(d)
        dim = axis_argument(node, 1)
    elif node.op == 'call_function' and node.target is operator.getitem:  # x.shape[d]
        dim = node.args[1]
    else:
        return False
    return isinstance(dim, int) and dim >= 0 and dim != _CHANNEL_DIM


def shape_only_nodes(fx_graph: FxGraph) -> set:
    """FX nodes computed from tensor shapes only that carry no channel dependency.

    Shape-derived nodes are shape reads (``x.shape``, ``x.size()``) and the nodes computed only
    from them. One carries a channel count if it is the whole shape, a channel-axis (or
    negative-axis) read, or computed from a carrier. Kept: the carriers that reach a node outside
    this set, and every shape-derived node one of them is computed from. The other shape-derived
    nodes (batch / spatial sizes, unused values) are returned.
    """
    derived, derived_set, carries = [], set(), set()
    for node in fx_graph.nodes:
        inputs = node.all_input_nodes
        if _is_shape_read(node):
            whole = node.op == 'call_function' or (len(node.args) < 2 and 'dim' not in node.kwargs)
            carrier = whole or not _reads_no_channel_count(node)
        elif node.op in ('call_function', 'call_method') and inputs and \
                all(i in derived_set for i in inputs):
            source = node.args[0] if node.args else None
            if node.target is operator.getitem and isinstance(source, FxNode) and \
                    source.op == 'call_function' and _is_shape_read(source):
                carrier = not _reads_no_channel_count(node)  # an axis of the whole shape
            else:
                carrier = any(i in carries for i in inputs)
        else:
            continue
        derived.append(node)
        derived_set.add(node)
        if carrier:
            carries.add(node)
    keep = set()
    for node in reversed(derived):  # a node's users come after it
        if (node in carries and any(u not in derived_set for u in node.users)) or \
                any(u in keep for u in node.users):
            keep.add(node)
    return derived_set - keep


def parse_fx_graph(fx_graph: FxGraph, drop: set) -> BaseGraph:
    """MMRazor's ``parse_torch_graph`` without the nodes in ``drop``."""
    graph = BaseGraph[FxBaseNode]()
    nodes = {}
    for fx_node in fx_graph.nodes:
        if fx_node not in drop:
            nodes[fx_node] = graph.add_or_find_node(FxBaseNode(fx_node.name, fx_node))
    for fx_node, node in nodes.items():
        for pre in fx_node.all_input_nodes:
            if pre in nodes:
                graph.connect(nodes[pre], node)
    return graph


def _mmcv_wrapper_ops() -> Dict[type, type]:
    """MMRazor's dynamic ops for mmcv's ``Linear`` and ``Conv2d`` wrappers (mmcv's ``FFN`` is
    built of its ``Linear``). MMRazor's check replaces layers by their exact type, so without
    these every width through an mmcv FFN (Swin, Twins, TNT, ...) was left unsearched. The
    wrappers compute what ``nn.Linear`` / ``nn.Conv2d`` do on non-empty inputs."""
    try:
        from mmcv.cnn.bricks.wrappers import Conv2d, Linear
    except ImportError:
        return {}
    from mmrazor.models.architectures.dynamic_ops import DynamicConv2d, DynamicLinear
    return {Linear: DynamicLinear, Conv2d: DynamicConv2d}


def step_misfit(need: ChannelStep, num_channels: int) -> Optional[str]:
    """Why a width of ``num_channels`` cannot be pruned at the channel step its layers
    ``need`` (``None`` if it can): blocks that straddle its range, or a step that leaves a
    single block."""
    if need.misfit is not None:
        return need.misfit
    if need.step > 1 and need.step >= num_channels:
        return (f'its {num_channels} channels are one block of the {need.step} it must be '
                f'pruned in ({need.describe()})')
    return None


class RuleAwareCheckUnit(SequentialMutableChannelUnit):
    """The unit of MMRazor's pruning check, with the ``check_op`` of every layer rule that has
    one next to MMRazor's own dynamic ops.

    MMRazor's check keeps a prefix of each width (90% of its channels); where the unit's layers
    are pruned in blocks (:meth:`~mmdms.models.layer_rules.LayerRule.channel_step`, a
    GroupNorm's groups), the prefix is a whole number of blocks, and less than the whole width,
    so that the check runs the layers pruned as DMS will prune them.
    """

    def prepare_for_pruning(self, model: torch.nn.Module) -> None:
        #: What the unit's layers ask of its granularity (read before they become dynamic ops).
        self.channel_step = unit_channel_step(self)
        if self.channel_step.step > 1 and step_misfit(self.channel_step,
                                                      self.num_channels) is None:
            self.divisor = self.min_value = self.channel_step.step
        self._prepare_dynamic_ops(model)

    def _get_valid_int_choice(self, choice) -> int:
        number = super()._get_valid_int_choice(choice)
        if isinstance(choice, float) and choice < 1 and self.divisor > 1 and \
                number >= self.num_channels:
            number = self.num_channels - self.divisor  # MMRazor's rounding kept every channel
        return number

    @staticmethod
    def could_prune(unit_config: Dict, modules: Dict[str, torch.nn.Module]) -> bool:
        """Whether a unit's channels name a layer that :meth:`prepare_for_pruning` turns into
        a dynamic op (a conv, linear or batch norm, or a layer rule's ``check_op`` type):
        without one, MMRazor's ``is_mutable`` is False."""
        types = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm) + \
            tuple(t for t, rule in LAYER_RULES.items()
                  if getattr(rule, 'check_op', None) is not None)
        return any(isinstance(modules.get(channel['name']), types)
                   for side in unit_config.get('channels', {}).values() for channel in side
                   if isinstance(channel.get('name'), str))

    def _prepare_dynamic_ops(self, model: torch.nn.Module) -> None:
        extra = {t: rule.check_op for t, rule in LAYER_RULES.items()
                 if getattr(rule, 'check_op', None) is not None}
        extra.update(_mmcv_wrapper_ops())
        if extra:
            self._replace_with_dynamic_ops(model, extra)
        super().prepare_for_pruning(model)


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs an FX graph on the demo input and records each node's output shape, as the
    concrete tracer does while it traces (``node.meta['concrete_shape']``)."""

    def __init__(self, module: torch.fx.GraphModule, inputs: Dict) -> None:
        super().__init__(module)
        self.inputs = inputs

    def placeholder(self, target, args, kwargs):
        name = str(target).lstrip('*')
        return self.inputs.get(name, args[0] if args else None)

    def run_node(self, node: FxNode):
        result = super().run_node(node)
        node.meta['concrete_shape'] = concrete_shape(result)
        return result


def record_shapes(fx_graph: FxGraph, model: nn.Module, data) -> bool:
    """Record the shape of every node of ``fx_graph`` (MMRazor's symbolic trace of ``model``)
    on the demo input ``data`` (a tensor, or the model's keyword arguments). The channel graph
    reads them (:class:`~.layout_nodes.LayoutCatChannelNode`); a graph that cannot run as a
    ``GraphModule`` keeps none (MMRazor's reading, by channel counts only). Returns whether
    the shapes were recorded."""
    if isinstance(data, dict):
        inputs = dict(data, mode='tensor')
    else:
        first = next(iter(inspect.signature(model.forward).parameters))
        inputs = {first: data}
    try:
        module = torch.fx.GraphModule(model, fx_graph)
        with torch.no_grad():
            _ShapeRecorder(module, inputs).run()
    except Exception:  # noqa: BLE001  (the shapes are an aid: without them, MMRazor's graph)
        for node in fx_graph.nodes:
            node.meta.pop('concrete_shape', None)
        return False
    return True


def free_param_ranges(units) -> Dict[str, List[tuple]]:
    """``{parameter: [(start, end, unit), ...]}``: the ranges of its last axis that belong to
    each unit, for every free parameter (:class:`~.layout_nodes.FreeParamChannelNode`) in
    ``units``' channel records."""
    ranges: Dict[str, List[tuple]] = {}
    for unit in units:
        for channel in list(unit.output_related) + list(unit.input_related):
            name = str(channel.name)
            if name.startswith(PARAM_PREFIX):
                entry = (channel.start, channel.end, unit)
                if entry not in ranges.setdefault(name[len(PARAM_PREFIX):], []):
                    ranges[name[len(PARAM_PREFIX):]].append(entry)
    return ranges


def _sliced_getter(attr: str, ranges: List[tuple]):
    def get(module: nn.Module) -> torch.Tensor:
        full = module._parameters[attr] if attr in module._parameters else \
            module._buffers[attr]
        keep = torch.ones(full.shape[-1], dtype=torch.bool, device=full.device)
        for start, end, unit in ranges:
            mask = unit.mutable_channel.current_mask
            if mask.numel() == end - start:
                keep[start:end] = mask.to(keep.device)
        return full[..., keep]
    return get


def slice_free_params(model: nn.Module, units) -> None:
    """In MMRazor's pruned copy of the model, make every free parameter read by a forward
    (a class token, a layer scale) keep the channels its units keep, as the static model's
    will: each owner module gets a subclass whose attribute is the parameter sliced on its
    last axis by the units' current masks."""
    by_owner: Dict[str, Dict[str, List[tuple]]] = {}
    for name, ranges in free_param_ranges(units).items():
        owner, _, attr = name.rpartition('.')
        by_owner.setdefault(owner, {})[attr] = ranges
    for owner_name, attrs in by_owner.items():
        owner = model.get_submodule(owner_name) if owner_name else model
        props = {attr: property(_sliced_getter(attr, ranges)) for attr, ranges in attrs.items()}
        owner.__class__ = type(f'FreeParamsSliced{type(owner).__name__}', (type(owner), ), props)


@TASK_UTILS.register_module()
class DMSChannelAnalyzer(ChannelAnalyzer):
    """MMRazor's ``ChannelAnalyzer`` that also follows channel splits (FX tracer).

    Same arguments and result as MMRazor's (the configs of the channel units); ``DMSMutator``
    uses it wherever a config names ``ChannelAnalyzer``. With the backward tracer it is MMRazor's.
    """

    def analyze(self, model):
        if self.tracer_type != 'FxTracer':
            return super().analyze(model)
        # MMRazor's ChannelAnalyzer.analyze (FX branch), without shape-only nodes and with the
        # split-aware node converter.
        model = revert_sync_batchnorm(copy.deepcopy(model))
        model.eval()
        install_trace_forwards(model)
        fx_graph = self._fx_trace(model)
        #: The modules with searchable layers MMRazor's tracer could not enter; if any, the
        #: graph is :class:`ConcreteFxTracer`'s (:attr:`traced_concretely`).
        self.hidden_modules = hidden_searchable_modules(model, self.tracer)
        self.traced_concretely = bool(self.hidden_modules)
        if self.traced_concretely:
            self.tracer = ConcreteFxTracer({}, leaf_module=tuple(self.tracer.leaf_module))
            fx_graph = self._fx_trace(model)
        fx_graph.owning_module = model
        if not self.traced_concretely:
            record_shapes(fx_graph, model, self.demo_input.get_data(model))
        #: The streams whose readers' input masks their BatchNorms can apply (DMSMutator).
        self.norm_streams = norm_streams(fx_graph, model)
        base_graph = parse_fx_graph(fx_graph, shape_only_nodes(fx_graph))
        module_graph = FxTracerToGraphConverter(base_graph, model).graph
        module_graph._model = model
        module_graph.refresh_module_name()
        module_graph.check(fix=True)
        module_graph.check()

        fx_nodes = {node.name: node for node in fx_graph.nodes}
        try:
            channel_graph = ChannelGraph.copy_from(
                module_graph, functools.partial(split_aware_node_converter, fx_nodes=fx_nodes,
                                                model=model))
            channel_graph.check(fix=True)
            channel_graph.check()
            channel_graph.forward(self.demo_input.input_shape[1])
        except Exception as e:  # noqa: BLE001  (re-raised with the node's module)
            node = _failing_node(e)
            first = (str(e).strip().splitlines() or [''])[0]
            name, module_type = _node_module(fx_nodes.get(node))
            error = ChannelTraceError(
                f"MMRazor's channel graph fails at node '{node}' of "
                + (f"module '{name}' ({module_type})" if name else 'the model itself')
                + f': {type(e).__name__}: {first}')
            error.module_name, error.module_type = name, module_type
            raise error from e
        #: ``{layer: why its width is fixed}`` for the layers of widths MMRazor keeps fixed.
        self.layer_reasons: Dict[str, str] = {}
        units_config, shuffled = unshuffled_units(channel_graph.generate_units_config(),
                                                  channel_graph,
                                                  lambda n: _node_module(fx_nodes.get(n)))
        modules = dict(model.named_modules())
        for cfg, why in shuffled:
            for channel in (c for side in cfg['channels'].values() for c in side):
                if channel.get('name') in modules:
                    self.layer_reasons.setdefault(channel['name'], why)
        return self._find_mutable_units(model, units_config)

    def _fx_trace(self, model: nn.Module) -> FxGraph:
        """MMRazor's ``_fx_trace``; a :class:`ConcreteFxTracer` also gets the demo input as
        the concrete value of the forward's input."""
        if not isinstance(self.tracer, ConcreteFxTracer):
            return super()._fx_trace(model)
        args = self.demo_input.get_data(model)
        if isinstance(args, dict):
            self.tracer.inputs = {'inputs': args.pop('inputs')}
            args['mode'] = 'tensor'
            return self.tracer.trace(model, concrete_args=args)
        first = next(iter(inspect.signature(model.forward).parameters))
        self.tracer.inputs = {first: args}
        return self.tracer.trace(model)

    def _find_mutable_units(self, model, units_config: Dict) -> Dict:
        """MMRazor's check that each width can be pruned (a pruned copy must run and keep its
        output shapes), with :class:`RuleAwareCheckUnit`.

        Units none of whose channels is a layer the check can prune
        (:meth:`RuleAwareCheckUnit.could_prune`) are never mutable and are dropped first. With
        none left (a model whose widths its family adapter builds, such as a Hugging Face Llama,
        a leaf of the trace) nothing runs: the check would copy the whole model (27 GB for
        Llama-7B), and cannot run on the meta device."""
        modules = dict(model.named_modules())
        units_config = {key: cfg for key, cfg in units_config.items()
                        if RuleAwareCheckUnit.could_prune(cfg, modules)}
        if not units_config:
            return {}
        model = copy.deepcopy(model).cpu()
        units = [RuleAwareCheckUnit.init_from_cfg(model, cfg) for cfg in units_config.values()]
        for unit in units:
            unit.prepare_for_pruning(model)
        slice_free_params(model, units)
        misfits = {unit: step_misfit(unit.channel_step, unit.num_channels) for unit in units}
        mutable_units = [unit for unit in units if unit.is_mutable and misfits[unit] is None]
        self._record_reasons([(u, fixed_width_reason(u)) for u in units if not u.is_mutable])
        self._record_reasons([(u, misfits[u]) for u in units
                              if u.is_mutable and misfits[u] is not None])
        inputs = self.demo_input.get_data(model)
        model.eval()
        if isinstance(inputs, dict):
            template_output = None
            for mode in ['loss', 'tensor', 'predict']:
                try:
                    inputs['mode'] = mode  # find_mutable runs the mode that worked
                    template_output = model(**inputs)
                    break
                except Exception:  # noqa: BLE001  (MMRazor tries the modes in this order)
                    continue
        else:
            template_output = model(inputs)
        if template_output is None:
            raise RuntimeError('The channel analyzer could not run the model on its demo input '
                               f'{self.demo_input}: check the mutator\'s parse_cfg.demo_input')
        checked = find_mutable(model, mutable_units, units, inputs, template_output)
        self._record_reasons([(u, "it failed MMRazor's pruning check (a pruned copy of the "
                               'model did not run, or changed an output shape)')
                              for u in mutable_units if u not in checked])
        mutable_units = checked
        return {unit.name: MutableChannelUnit.config_template(unit, with_channels=True,
                                                               with_init_args=True)
                for unit in mutable_units}

    def _record_reasons(self, units_and_reasons) -> None:
        for unit, reason in units_and_reasons:
            for channel in list(unit.input_related) + list(unit.output_related):
                if isinstance(channel.module, nn.Module):
                    self.layer_reasons.setdefault(str(channel.name), reason)
