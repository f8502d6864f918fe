# Copyright (c) mmdms contributors. All rights reserved.
"""The table of layer rules: everything DMS knows about one layer type, in one object.

A :class:`LayerRule` says, for the layer types it describes, how the layer reads a DMS mask
(its DMS op), what its channels are, how one call is recorded for counting, its MACs and
parameters as functions of the kept widths, how the static export slices it, and which static
layer is timed for the latency model. The resource estimator, the subnet export, the static
slicing and the latency model read the rule of a layer and nothing else about its type, so
adding a layer type is one rule in one file (like Torch-Pruning's ``BasePruningFunc``).

Rules are looked up by the layer's class or its nearest base class in the table
(:func:`rule_for`): register one for your own layer type with :func:`register_layer_rule`.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
from torch import Tensor


class SubnetError(ValueError):
    """A subnet that cannot be exported or does not fit the architecture it is applied to."""


@dataclass
class LayerCall:
    """One call of a layer in the recorded forward (per sample)."""
    name: str
    kind: str  # the rule's kind: conv | linear | bn | norm | attention | pool | ...
    in_channels: int
    out_channels: int
    positions: int  # output pixels (conv), tokens (linear, attention), elements / C (norms)
    kernel: int = 1  # k_h * k_w
    groups: int = 1
    affine: bool = True  # norms: has weight and bias
    bias: bool = False  # conv / linear: has a bias
    in_shape: tuple = ()  # per-sample input shape
    consumer: Optional[str] = None  # pool: the layer that reads its output (gives its channels)
    # (layer, its channels): the call runs once per channel of that layer's input (RepMLP's
    # fc3), its cost scaled by the channels kept (LayerRule.per_channel_sublayers)
    per_channel_of: Optional[Tuple[str, int]] = None
    # the size of the call's batch axis where its output's first axis is not it (a
    # sequence-first torch.nn.MultiheadAttention, whose output is a tuple)
    lead: Optional[int] = None
    rule: Optional['LayerRule'] = field(default=None, repr=False, compare=False)

    @property
    def depthwise(self) -> bool:
        return self.kind == 'conv' and self.groups == self.in_channels > 1


class MaskReader:
    """What a rule may read of the search space while counting: the masks of a layer and the
    expected (soft) or exact (hard) width a mask keeps.

    One reader serves one count: the width of each distinct mask tensor is summed once (a
    mutable's mask is shared by all the layers of its group), and hard widths are Python
    floats (exact integers), so a hard count runs no tensor arithmetic per layer.

    Args:
        space: the :class:`~mmdms.models.search_space.SearchSpace`.
        hard (bool): count with the 0/1 masks (exact, float64).
        full (bool): ignore every mask (the supernet).
    """

    def __init__(self, space, hard: bool = False, full: bool = False) -> None:
        self.space, self.hard, self.full = space, hard, full
        # id(mask) -> (mask, its sum); the mask is kept so that its id is not reused
        self._sums: Dict[int, tuple] = {}

    def mask(self, fn: Callable[[bool], Optional[Tensor]]) -> Optional[Tensor]:
        """The mask ``fn`` gives (``None``: every channel kept)."""
        if self.full:
            return None
        mask = fn(self.hard)
        return mask.double() if self.hard and mask is not None else mask

    def masked_width(self, fn: Callable[[bool], Optional[Tensor]]):
        """Channels the mask ``fn`` keeps (its sum), ``None`` where there is no mask."""
        if self.full:
            return None
        mask = fn(self.hard)
        return None if mask is None else self._sum(mask)

    def width(self, fn: Callable[[bool], Optional[Tensor]], full: Union[int, float]):
        """Channels the mask ``fn`` keeps (its sum), ``full`` where there is no mask."""
        width = self.masked_width(fn)
        return full if width is None else width

    def mutable_width(self, mutable) -> Any:
        """Elements one mutable keeps (all of a ``fixed`` one's, e.g. an attention's
        :class:`~mmdms.models.adapters.searched_attention.FixedDims`)."""
        if self.full or getattr(mutable, 'fixed', False):
            return mutable.num_channels
        return self._sum(mutable.hard_mask if self.hard else mutable.soft_mask)

    def _sum(self, mask: Tensor):
        found = self._sums.get(id(mask))
        if found is None or found[0] is not mask:
            # a 0/1 mask sums exactly in float32 below 2^24 channels
            total = float(mask.sum()) if self.hard else mask.sum()
            found = self._sums[id(mask)] = (mask, total)
        return found[1]

    def layer(self, name: str):
        """The :class:`~mmdms.models.search_space.LayerMasks` of layer ``name``."""
        return self.space.layer_masks(name)


def _select(tensor: Tensor, dim: int, indices: Optional[Sequence[int]]) -> Tensor:
    if indices is None:
        return tensor.detach().clone()
    index = torch.as_tensor(indices, dtype=torch.long, device=tensor.device)
    return tensor.detach().index_select(dim, index).clone()


def select_param(module: nn.Module, name: str, dim: int,
                 indices: Optional[Sequence[int]]) -> None:
    """Keep ``indices`` (``None``: all) of parameter or buffer ``name`` along ``dim``."""
    old = getattr(module, name)
    if old is None:
        return
    value = _select(old, dim, indices)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(module, name, value)


@dataclass
class ChannelStep:
    """What the layers of one width ask of its granularity (:func:`required_channel_step`).

    Attributes:
        step (int): the least common multiple of the layers' :meth:`LayerRule.channel_step`;
            pruning the width in aligned blocks of a multiple of it keeps every layer's blocks
            whole.
        layers (dict[str, int]): the layers asking for blocks of more than one channel, and
            their block sizes.
        misfit (str, optional): why no step can keep the blocks whole (a layer's blocks
            straddle the width's channel range), else ``None``.
    """
    step: int = 1
    layers: Dict[str, int] = field(default_factory=dict)
    misfit: Optional[str] = None

    def describe(self) -> str:
        """The layers and their blocks, for the space summary and the reasons."""
        return 'whole blocks of ' + ', '.join(f"{size} channels of '{name}'"
                                              for name, size in self.layers.items())


def required_channel_step(channels: Iterable[Tuple[str, Any, int, int]]) -> ChannelStep:
    """The channel step a width needs so that it prunes every layer it passes through at that
    layer's :meth:`~LayerRule.channel_step`.

    Args:
        channels: ``(layer name, module, start, end)`` per layer channel range of the width (a
            width is channels ``[start, end)`` of each of its layers); ranges of anything that
            is not a module with a rule are ignored.

    Returns:
        ChannelStep: ``step`` is the lcm of the layers' steps; ``misfit`` says why pruning
        whole blocks is impossible, when a range does not start at a block boundary or is not
        a whole number of blocks.
    """
    need = ChannelStep()
    for name, module, start, end in channels:
        rule = rule_for(module) if isinstance(module, nn.Module) else None
        block = 1 if rule is None else rule.channel_step(module)
        if block <= 1:
            continue
        need.layers[name] = block
        if start % block or (end - start) % block:
            need.misfit = need.misfit or (
                f"'{name}' ({type(module).__name__}) is pruned in whole blocks of {block} "
                f'channels, and the width is its channels [{start}, {end}), not whole blocks')
        need.step = need.step * block // math.gcd(need.step, block)
    return need


def channelwise_indices(kept_in, kept_out, name: str) -> Optional[Sequence[int]]:
    """The one index list of a channel-wise layer (a norm, a depthwise conv)."""
    if kept_in is not None and kept_out is not None and list(kept_in) != list(kept_out):
        raise SubnetError(f"'{name}' is channel-wise but keeps different input and output "
                          'channels')
    return kept_out if kept_out is not None else kept_in


class LayerRule:
    """Base of the rules: what DMS knows about the layer types in :attr:`module_types`.

    Attributes:
        module_types: the layer classes described (subclasses too, unless a nearer class has
            its own rule).
        kind (str): a short name of the kind of layer, recorded in each call.
        dms_ops (dict): layer class -> the DMS op (masked forward) that replaces it in a
            searched group, looked up by the layer's class or its nearest base class; a layer
            type without one is never masked.
        searchable_weight (bool): the layer's weight counts towards the search space's coverage
            (conv and linear layers).
        owns_params (bool): the layer's parameters are counted by :meth:`params`.
        channels_from_consumer (bool): the layer's channels are those of the layer that reads
            its output (a pooling); the estimator links each call to that consumer.
        timed (bool): the latency model times the layer (:meth:`latency_layer`).
        produces_channels (bool): each output channel is computed from the layer's own weights
            (:meth:`output_weight_norms`; convs, linears), as opposed to passed through.
        check_op (type, optional): for a layer type MMRazor does not know, the MMRazor dynamic
            op (slicing its parameters by MMRazor's channel mask) that its channel analyzer may
            use in the pruned copy it runs to check each width; without one, a width through
            such a layer with parameters is left unsearched.
        leaf (bool): the tracer keeps the layer whole (one ``call_module`` node), although it
            is not a ``torch.nn`` class that FX keeps whole by itself; for a layer whose own
            forward FX cannot trace.
        inner_reason (str): for a leaf with conv / linear layers inside, why they have no
            searched width (the thin-space warning says it).
        scales_own_products (bool): the matrix products computed in the layer's own forward
            (counted at fixed sizes, :mod:`~mmdms.models.task_modules.functional_macs`) are
            scaled like its :meth:`per_channel_sublayers` (MViT-V2's per-head products).
        counts_functional_ops (bool): the layer's MACs include the matrix products and
            upsamplings its forward computes with functions (an attention's ``q @ k``); False
            for a leaf whose cost is its inner layers', recorded on their own: the estimator
            then records those functions inside it as anywhere else (HorNet's global filter
            interpolates its weight).
    """

    module_types: Tuple[type, ...] = ()
    kind: str = ''
    dms_ops: Dict[type, type] = {}
    searchable_weight = False
    owns_params = True
    channels_from_consumer = False
    timed = False
    produces_channels = False
    check_op: Optional[type] = None
    leaf = False
    inner_reason = ''
    scales_own_products = False
    counts_functional_ops = True

    # structure ------------------------------------------------------------------------------
    def dms_op_for(self, layer: nn.Module) -> Optional[type]:
        """The DMS op class for ``layer`` (``None``: it is never masked)."""
        for cls in type(layer).__mro__:
            if cls in self.dms_ops:
                return self.dms_ops[cls]
        return None

    def channels(self, module: nn.Module) -> Optional[Tuple[int, int]]:
        """``(input, output)`` channels of the layer (``None``: it has no channel axis)."""
        return None

    def channel_step(self, module: nn.Module) -> int:
        """The granularity at which the layer's channels can be pruned: its channels fall
        into consecutive blocks of this many (``[0, s)``, ``[s, 2s)``, ...), each kept or
        pruned whole (a GroupNorm's groups). 1 (the default): any channel."""
        return 1

    def per_channel_sublayers(self, module: nn.Module) -> Tuple[str, ...]:
        """Layers inside the layer (names relative to it) that run once per input channel of
        it, their batch being its channels (RepMLP's partition perceptron): the estimator
        scales their MACs by the fraction of those channels kept. Default: none."""
        return ()

    def per_channel_source(self, module: nn.Module, name: str) -> Tuple[str, int]:
        """``(layer, channels)`` whose kept fraction scales the :meth:`per_channel_sublayers`
        (the layer's input mask, else its output mask): by default the layer itself and its
        input channels; an attention whose pooling runs once per head names the layer that
        reads its heads (MViT-V2's ``proj``)."""
        return name, self.channels(module)[0]

    def sliced_sublayers(self, module: nn.Module) -> Tuple[str, ...]:
        """Conv / linear layers inside the layer (names relative to it) whose weights its
        :meth:`prune` slices by its widths (``torch.nn.MultiheadAttention``'s ``out_proj``,
        which it calls as a function): searched whenever the layer is, for the coverage.
        Default: none."""
        return ()

    def stream_sublayers(self, module: nn.Module) -> Dict[str, Tuple[bool, bool]]:
        """Layers inside a leaf layer (names relative to it) whose input and / or output
        channels are the leaf's own, unchanged: ``{name: (input, output)}``. The mutator gives
        them the leaf's masks on those sides (and their width's coverage), so the estimator
        counts and the export slices them as layers of their own (HorNet's ``gnConv``:
        ``proj_in``'s input, ``proj_out``'s output). Default: none."""
        return {}

    # counting ------------------------------------------------------------------------------
    def counted(self, name: str, space) -> bool:
        """Whether the estimator records calls of layer ``name`` at all."""
        return True

    def record(self, name: str, module: nn.Module, x: Tensor, out: Tensor) -> LayerCall:
        """One call of the layer in the recorded forward (input ``x``, output ``out``)."""
        raise NotImplementedError

    def record_call(self, name: str, module: nn.Module, args: tuple, kwargs: dict,
                    out) -> LayerCall:
        """One call from all its arguments; by default :meth:`record` of the first one
        (passed by position or by keyword). A rule whose cost depends on another argument
        (Twins' attentions read the feature map's ``hw_shape``) overrides this."""
        return self.record(name, module, first_input(args, kwargs), out)

    def channelwise(self, call: LayerCall) -> bool:
        """Whether one mask covers the layer's input and output channels."""
        return False

    def widths(self, call: LayerCall, reader: MaskReader) -> tuple:
        """The kept widths the cost depends on; by default ``(c_in, c_out)`` from the layer's
        input and output masks (one mask, whichever side carries it, if channel-wise)."""
        masks = reader.layer(call.name)
        c_in, c_out = reader.masked_width(masks.in_mask), reader.masked_width(masks.out_mask)
        if self.channelwise(call) and (c_in is not None or c_out is not None):
            c_in = c_out = c_in if c_in is not None else c_out
        return (call.in_channels if c_in is None else c_in,
                call.out_channels if c_out is None else c_out)

    def macs(self, call: LayerCall, widths: tuple):
        """Multiply-adds of one call at ``widths``, as mmengine's ``FlopAnalyzer`` counts them
        for the pruned static layer."""
        return 0

    def params(self, call: LayerCall, widths: tuple):
        """Parameters of the pruned static layer at ``widths``."""
        return 0

    def output_weight_norms(self, module: nn.Module, start: int, end: int) -> Tensor:
        """``sum |W|`` of the weights computing each output channel in ``[start, end)`` (the
        ``l1`` importance); only for rules with :attr:`produces_channels`."""
        raise NotImplementedError

    # export ---------------------------------------------------------------------------------
    def prune(self, module: nn.Module, kept_in: Optional[Sequence[int]],
              kept_out: Optional[Sequence[int]], name: str) -> None:
        """Slice ``module`` in place to input channels ``kept_in`` and output channels
        ``kept_out`` (``None``: all)."""
        raise SubnetError(f"'{name}' ({type(module).__name__}) has no rule to slice it")

    # latency --------------------------------------------------------------------------------
    def latency_layer(self, module: nn.Module, call: LayerCall, c_in: int,
                      c_out: int) -> Optional[nn.Module]:
        """The static layer to time at widths ``(c_in, c_out)`` (``None``: not timed)."""
        return None

    def latency_input(self, call: LayerCall, c_in: int, device) -> Tensor:
        """A random input of the layer with ``c_in`` channels."""
        raise NotImplementedError


def first_input(args: tuple, kwargs: dict):
    """A call's first input, passed by position or (HF attention) by keyword."""
    return args[0] if args else next(iter(kwargs.values()))


#: Layer class -> its rule.
LAYER_RULES: Dict[type, LayerRule] = {}


def register_layer_rule(rule_cls: Type[LayerRule]) -> Type[LayerRule]:
    """Class decorator: make an instance of ``rule_cls`` the rule of its ``module_types``."""
    rule = rule_cls()
    for module_type in rule_cls.module_types:
        LAYER_RULES[module_type] = rule
    return rule_cls


def rule_for(layer: Union[nn.Module, type]) -> Optional[LayerRule]:
    """The rule of ``layer``'s class or of its nearest base class in the table."""
    cls = layer if isinstance(layer, type) else type(layer)
    for base in cls.__mro__:
        rule = LAYER_RULES.get(base)
        if rule is not None:
            return rule
    return None


def leaf_layer_types() -> Tuple[type, ...]:
    """The layer types whose rule asks the tracer to keep them whole (:attr:`LayerRule.leaf`)."""
    return tuple(t for t, rule in LAYER_RULES.items() if rule.leaf)


def layer_channels(module: nn.Module) -> Optional[Tuple[int, int]]:
    """``(input, output)`` channels of a layer with a rule; ``None`` for other modules."""
    rule = rule_for(module)
    return None if rule is None else rule.channels(module)


def searchable_layers(model: nn.Module) -> Iterable[Tuple[str, nn.Module]]:
    """The layers whose weights a search space should cover (conv and linear layers)."""
    for name, module in model.named_modules():
        rule = rule_for(module)
        if rule is not None and rule.searchable_weight:
            yield name, module


def replace_with_dms_op(model: nn.Module, name: str) -> nn.Module:
    """Swap layer ``name`` of ``model`` for its DMS op, keeping weights, buffers and mode.

    MMRazor's own ``convert_from`` builds a freshly initialised layer (it expects weights to be
    loaded afterwards); DMS keeps the supernet's, e.g. a pretrained one for DMS_p. A layer that
    already is a dynamic op, or has no DMS op, is returned unchanged.
    """
    from mmrazor.models.architectures.dynamic_ops import DynamicChannelMixin
    parent_name, _, attr = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    layer = getattr(parent, attr)
    rule = rule_for(layer)
    dms_type = None if rule is None else rule.dms_op_for(layer)
    if dms_type is None or isinstance(layer, DynamicChannelMixin):
        return layer
    param = next(layer.parameters(), None)
    # built where the layer is (on the meta device nothing is allocated), then given the
    # layer's own tensors (no copy; their dtype kept, e.g. a bfloat16 checkpoint's)
    with torch.device(param.device if param is not None else 'cpu'):
        new = dms_type.convert_from(layer)
    new.load_state_dict(layer.state_dict(), strict=False, assign=True)
    if param is not None:
        new.to(param.device)
    new.train(layer.training)
    for param_name, p in layer.named_parameters(recurse=False):
        getattr(new, param_name).requires_grad_(p.requires_grad)
    setattr(parent, attr, new)
    return new

