# Copyright (c) mmdms contributors. All rights reserved.
"""The resource ``r_c`` of a DMS search model as a differentiable function of its masks.

Shapes come from one recorded forward at ``input_shape``; each layer's cost is then a function
of the expected widths (sums of the soft masks) of its input and output channels, weighted by
the soft mask of the block it lies in (paper Eq. 5-6, App. A.1.2). The layer's rule
(:mod:`mmdms.models.layer_rules`) records the call and gives its MACs and parameters; with hard
masks they are the exact counts of the pruned static model, as mmengine's ``FlopAnalyzer``
counts them (one multiply-add as one "flop"): convs (depthwise ones linear in C), linears,
searched attentions, norms and adaptive average pooling.

* matrix products that no layer makes (``q @ k.transpose(-2, -1)`` in an attention's own code,
  ``F.scaled_dot_product_attention`` of an attention whose heads are not searched,
  ``torch.einsum``, YOLOv8's head's DFL ``matmul`` with ``proj``) are recorded by
  :class:`~.functional_macs.MatmulRecorder` during the same forward, at fixed sizes, weighted
  by their block's depth mask;
* upsamplings (``F.interpolate``, nearest or bilinear), as FlopAnalyzer counts them (one or
  four per output element), at the kept output width of the recorded layer they read (through
  activations and adds); element-wise ops and max pooling are not counted (FlopAnalyzer skips
  them).

Hard-mask counts are accumulated in float64, so that they are exact integers also beyond 2^24.

Parameters: every parameter of the model, each layer's counted from its expected widths, and
parameters owned by no layer (class token, position embedding) scaled on a searched last axis.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmrazor.registry import TASK_UTILS
from torch import Tensor

from mmdms.models.layer_rules import LayerCall, MaskReader, rule_for
from mmdms.models.layer_rules.base import first_input
from mmdms.models.search_space import no_mask
from mmdms.models.adapters.network_forward import network_forward
from mmdms.utils.data_samples import tensor_mode_data_samples
from .cost_polynomial import CompiledCost, compile_cost
from .functional_macs import MatmulRecorder
from .latency_model import (LatencyModel, TensorModeForward, Timer, fit_layer, latency_basis,
                            latency_correction, per_layer_correction, time_ms)

RESOURCE_TYPES = ('macs', 'params', 'latency')


@TASK_UTILS.register_module()
class DMSResourceEstimator:
    """MACs, parameters and latency of a DMS search model from its soft (or hard) masks.

    A resource type is a method ``resource(hard=False)`` named in :attr:`resource_types`; a
    subclass adds one (``docs/architecture.md``).

    Args:
        input_shape (Sequence[int]): the input of the recorded forward, ``(1, 3, H, W)``; the
            counts are per sample at this resolution.
    """

    #: The resources :meth:`estimate` can count.
    resource_types: tuple = RESOURCE_TYPES

    def __init__(self, input_shape: Sequence[int] = (1, 3, 224, 224)) -> None:
        self.input_shape = tuple(input_shape)
        self.calls: List[LayerCall] = []
        self.space = None
        self._fixed_params = 0
        #: ``(module, MACs)`` of the matrix products no layer makes (fixed sizes).
        self.products: List[tuple] = []
        #: ``(module, MACs per channel, source layer, channels)`` of the upsamplings, counted
        #: at their source layer's kept output width.
        self.upsamplings: List[tuple] = []
        self._out_channels: Dict[str, int] = {}
        self._block_params: Dict[str, int] = {}
        self._free_params: List[tuple] = []
        #: The fitted :class:`~mmdms.models.task_modules.latency_model.LatencyModel`.
        self.latency_model: Optional[LatencyModel] = None
        self._full = False
        #: soft counts compiled into polynomials of the widths (None: not compilable), by
        #: resource; rebuilt by :meth:`prepare`
        self._compiled: Dict[str, Optional[CompiledCost]] = {}
        #: per count (:meth:`estimate`): each stage's block masks, split once
        self._depth_memo: Optional[dict] = None
        self._forward: Callable[[nn.Module, Tensor], object] = _tensor_mode

    # recording ---------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, space,
                forward: Optional[Callable[[nn.Module, Tensor], object]] = None) -> None:
        """Record every layer's shapes with one forward of ``model`` on zeros of
        ``input_shape`` (``forward(model, x)``; default ``model(x, mode='tensor')``), for the
        masks of ``space`` (:class:`~mmdms.models.search_space.SearchSpace`)."""
        self.space = space
        self._compiled = {}
        forward = forward or _tensor_mode
        self._forward = forward
        self.calls = []
        handles = []
        pool_outputs: List[tuple] = []  # (output tensor, its pool call)
        ruled = set()  # layers whose rule counts the functions their forward calls
        batch = self.input_shape[0]
        per_channel: Dict[str, Tuple[str, int]] = {}  # layer -> (layer whose channels, count)
        #: module -> (layer whose channels, count) scaling the products of its own forward
        self._scaled_products: Dict[str, Tuple[str, int]] = {}
        for name, module in model.named_modules():
            rule = rule_for(module)
            if rule is None:
                continue
            for sub in rule.per_channel_sublayers(module):
                per_channel[f'{name}.{sub}'] = rule.per_channel_source(module, name)
            if rule.scales_own_products:
                self._scaled_products[name] = rule.per_channel_source(module, name)
            if not rule.counted(name, space):
                continue
            if rule.counts_functional_ops:
                ruled.add(name)

            def hook(mod, args, kwargs, out, name=name, rule=rule):
                add_call(name, rule, mod, first_input(args, kwargs), out,
                         rule.record_call(name, mod, args, kwargs, out))

            handles.append(module.register_forward_hook(hook, with_kwargs=True))

        def add_call(name: str, rule, mod: nn.Module, x: Tensor, out,
                     call: Optional[LayerCall] = None) -> None:
            call = call if call is not None else rule.record(name, mod, x, out)
            call.rule = rule
            # rules count per element of the first axis; a layer run on windows or patches
            # (Swin's attention on (B * windows, N, C), TNT's pixel embedding) has more of
            # them than the forward has samples
            lead = call.lead if call.lead is not None else \
                out.shape[0] if isinstance(out, Tensor) and out.dim() > 0 else batch
            if lead != batch and lead % batch == 0:
                call.positions = call.positions * (lead // batch)
            call.per_channel_of = per_channel.get(name)
            self.calls.append(call)
            if rule.channels_from_consumer:
                pool_outputs.append((out, call))
            elif rule.searchable_weight or rule.channelwise(call):
                # a norm reads a pooling's output too (LeViT's head: BatchNorm1d, linear)
                _match_pool_consumer(name, x, call.in_channels, pool_outputs)

        param = next(model.parameters())
        was_training = model.training
        model.eval()
        recorder = MatmulRecorder(model, ruled.__contains__)
        try:
            with torch.no_grad(), recorder:
                forward(model, torch.zeros(self.input_shape, device=param.device))
        except Exception as e:  # noqa: BLE001  (re-raised with where and why)
            samples = tensor_mode_data_samples(model, torch.zeros(self.input_shape))
            given = 'no data samples' if samples is None else \
                f'{type(samples[0]).__name__}s of the input\'s geometry'
            raise CountingForwardError(
                f"The resource estimator's counting forward of {type(model).__name__} (tensor "
                f'mode, zeros of shape {tuple(self.input_shape)}, {given}) failed: '
                f'{type(e).__name__}: {(str(e).strip().splitlines() or [""])[0]} (raised at '
                f'{_raised_at(e)}). MACs are counted from that one forward: a model whose '
                'tensor mode needs other data samples than mmdms.utils.tensor_mode_data_samples '
                'gives, or another input, cannot be counted (pass the estimator a forward: '
                'prepare(model, space, forward=...)); check the mutator\'s '
                'parse_cfg.demo_input, which sets the shape.') from e
        finally:
            model.train(was_training)
            recorder.remove()
            for handle in handles:
                handle.remove()
        for name, layer, x, out in recorder.layer_calls:  # F.linear on a layer's weight
            add_call(name, rule_for(layer), layer, x, out)
        self.products = recorder.products
        self.upsamplings = recorder.upsamplings
        self._out_channels = {c.name: c.out_channels for c in self.calls}
        self._split_params(model)

    def _split_params(self, model: nn.Module) -> None:
        """Parameters of the recorded layers are counted by rule; the others as they are
        (weighted by the depth mask of their block, if any)."""
        recorded = {c.name for c in self.calls if c.rule.owns_params}
        self._fixed_params = 0
        self._free_params = []
        self._param_widths: Dict[str, int] = {}
        self._param_masks: Dict[str, Callable] = dict(self.space.params)
        self._block_params: Dict[str, int] = {}
        for name, p in model.named_parameters():
            owner = name.rpartition('.')[0]
            if any(owner == r or owner.startswith(r + '.') for r in recorded):
                continue
            uncalled = self._uncalled_channelwise_mask(owner, p)
            if uncalled is not None:  # e.g. DeiT-3's ln2, which its forward never calls
                self._param_masks[name] = uncalled
            if name in self._param_masks:
                axis = self.space.param_axis(name)
                self._free_params.append((name, p.numel() // p.shape[axis]))
                self._param_widths[name] = p.shape[axis]
            elif self.space.block_of(name) is not None:
                self._block_params[name] = p.numel()
            else:
                self._fixed_params += p.numel()
        self._fixed_params -= self._shared_excess(model, recorded)

    def _uncalled_channelwise_mask(self, owner: str, param: nn.Parameter) -> Optional[Callable]:
        """The mask of a 1-D parameter of a masked layer that the forward never calls: the
        export slices it (it is in the search space) though no call records it."""
        masks = self.space.layers.get(owner)
        if masks is None or param.dim() != 1:
            return None
        for fn in (masks.in_mask, masks.out_mask):
            mask = fn(True)
            if mask is not None and mask.numel() == param.numel():
                return fn
        return None

    def _shared_excess(self, model: nn.Module, recorded: set) -> int:
        """Elements of parameters shared by several modules (tied input and output
        embeddings) that the split above counts more than once: once per recorded layer that
        holds them, and once more if their first holder is not a recorded layer.

        Raises:
            ValueError: a shared parameter is searched (a width or a depth mask reaches one of
                its holders): its count would depend on which holder's masks apply.
        """
        holders: Dict[int, List[str]] = {}
        shared: Dict[int, nn.Parameter] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            holders.setdefault(id(p), []).append(name)
            shared[id(p)] = p
        def recorded_holders(param_name: str) -> set:
            owner = param_name.rpartition('.')[0]
            return {r for r in recorded if owner == r or owner.startswith(r + '.')}

        excess = 0
        for key, names in holders.items():
            if len(names) < 2:
                continue
            counted = set().union(*(recorded_holders(n) for n in names))
            # the first name is the one named_parameters() yields: counted unless recorded
            times = len(counted) + (not recorded_holders(names[0]))
            searched = [n for n in names
                        if n in self.space.params or self.space.block_of(n) is not None]
            searched += [r for r in counted if r in self.space.layers]
            if searched and times > 1:
                raise ValueError(
                    f'{names} are one parameter (tied), and {searched} are searched: its '
                    'count would depend on which masks apply. Untie the weights (e.g. '
                    'tie_word_embeddings=False) or keep its layers out of the search space')
            excess += (times - 1) * shared[key].numel()
        return excess

    # counting ----------------------------------------------------------------------------------
    def _reader(self, hard: bool) -> MaskReader:
        return MaskReader(self.space, hard=hard, full=self._full)

    def _depth_weight(self, name: str, hard: bool):
        """The mask of the block ``name`` lies in (1 outside depth-searched stages); hard: a
        Python float."""
        found = self.space.block_of(name)
        if found is None or self._full:
            return 1.0
        mutable, index = found
        memo = self._depth_memo
        key = (id(mutable), hard)
        masks = memo.get(key) if memo is not None else None
        if masks is None:
            # one mask per block, split once per count instead of one select per layer
            masks = mutable.element_hard_mask().tolist() if hard else \
                mutable.block_masks.unbind()
            if memo is not None:
                memo[key] = masks
        return masks[index]

    def call_macs(self, call: LayerCall, hard: bool = False,
                  reader: Optional[MaskReader] = None) -> Tensor:
        """Expected multiply-adds of one recorded call, its block's depth mask aside."""
        reader = reader or self._reader(hard)
        return torch.as_tensor(_call_macs(call, reader), dtype=self._dtype(hard))

    def macs(self, hard: bool = False) -> Tensor:
        """Expected multiply-adds per sample (exact with ``hard`` masks)."""
        return self._count('macs', self._macs_terms, hard)

    def params(self, hard: bool = False) -> Tensor:
        """Expected number of parameters (exact with ``hard`` masks)."""
        return self._count('params', self._params_terms, hard)

    def _count(self, resource: str, terms_of: Callable, hard: bool) -> Tensor:
        """The sum of ``terms_of(reader, depth)``: soft counts through their compiled
        polynomial (:mod:`.cost_polynomial`) where the rules allow it."""
        if not hard and not self._full:
            if resource not in self._compiled:
                self._compiled[resource] = compile_cost(self.space, terms_of,
                                                        self.space.block_of)
            compiled = self._compiled[resource]
            if compiled is not None:
                return compiled.evaluate()
        reader = self._reader(hard)
        return self._total(terms_of(reader, lambda name: self._depth_weight(name, hard)), hard)

    def _macs_terms(self, reader: MaskReader, depth: Callable[[str], object]) -> list:
        return [_weighted(_call_macs(call, reader), depth(call.name)) for call in self.calls] + \
            [_weighted(self._product_macs(reader, name, macs), depth(name))
             for name, macs in self.products] + \
            [_weighted(per_channel * self._source_width(reader, source, channels), depth(name))
             for name, per_channel, source, channels in self.upsamplings]

    def _product_macs(self, reader: MaskReader, name: str, macs: int):
        """A recorded product's MACs, scaled by its module's kept fraction where its rule says
        so (:attr:`~mmdms.models.layer_rules.LayerRule.scales_own_products`)."""
        source = self._scaled_products.get(name)
        return macs if source is None else macs * _kept_fraction(reader, *source)

    def _source_width(self, reader: MaskReader, source: Optional[str], channels: int):
        """Kept output channels of an upsampling's source layer (``channels`` where it has
        no output mask or another channel count)."""
        if source is None:
            return channels
        if self._out_channels.get(source) != channels:
            return channels
        return reader.width(reader.layer(source).out_mask, channels)

    def _params_terms(self, reader: MaskReader, depth: Callable[[str], object]) -> list:
        terms, seen = [float(self._fixed_params)], set()
        for call in self.calls:
            if not call.rule.owns_params or call.name in seen:
                continue
            seen.add(call.name)
            params = call.rule.params(call, call.rule.widths(call, reader))
            terms.append(_weighted(params, depth(call.name)))
        for name, rows in self._free_params:
            width = reader.width(self._param_masks[name], self._param_widths[name])
            terms.append(_weighted(rows * width, depth(name)))
        for name, numel in self._block_params.items():
            terms.append(_weighted(numel, depth(name)))
        return terms

    def _dtype(self, hard: bool) -> torch.dtype:
        return torch.float64 if hard or self._full else torch.float32

    def _total(self, terms: list, hard: bool) -> Tensor:
        """The sum of per-layer costs. Numbers (every hard count) are added exactly in Python;
        tensors (soft counts) in one stacked sum: one autograd node, not one per layer."""
        dtype = self._dtype(hard)
        tensors = [t.to(dtype) for t in terms if isinstance(t, Tensor)]
        total = math.fsum(t for t in terms if not isinstance(t, Tensor))
        if tensors:
            return torch.stack([t.reshape(()) for t in tensors]).sum() + total
        return torch.tensor(total, dtype=dtype)

    def latency(self, hard: bool = False) -> Tensor:
        """Expected latency in ms: the fitted per-layer model's sum, corrected to the measured
        whole model (``overhead_ms + scale * sum``; see
        :class:`~mmdms.models.task_modules.latency_model.LatencyModel`)."""
        if self.latency_model is None:
            raise RuntimeError('Latency has not been measured: call fit_latency(model) first '
                               '(ResourceLossHook does it before a latency-constrained search)')
        fitted = self.latency_model
        if len(fitted.layers) != len(self.calls):
            raise RuntimeError(f'The latency model has {len(fitted.layers)} layers for '
                               f'{len(self.calls)} recorded calls: it was fitted on another '
                               'model; call fit_latency(model) again')
        total, layers, reader = 0., 0., self._reader(hard)
        for call, (layer_max, coeffs) in zip(self.calls, fitted.layers):
            if coeffs is None:
                continue
            c_in, c_out = call.rule.widths(call, reader)
            x, y = c_in / call.in_channels, c_out / call.out_channels
            depth = self._depth_weight(call.name, hard)
            total = total + layer_max * latency_basis(x, y) @ coeffs * depth
            layers = layers + depth
        corrected = fitted.overhead_ms + fitted.scale * total + fitted.per_layer_ms * layers
        return torch.as_tensor(corrected, dtype=torch.float32)

    def estimate(self, resource: str = 'macs', hard: bool = False, full: bool = False) -> Tensor:
        """``r_c`` for ``resource`` in :attr:`resource_types`; with ``full``, the supernet's
        cost (every mask ignored)."""
        if resource not in self.resource_types:
            raise ValueError(f"Unknown resource type '{resource}': {type(self).__name__} counts "
                             f'{self.resource_types}')
        self._full = full
        self._depth_memo = {}
        try:
            return getattr(self, resource)(hard)
        finally:
            self._full = False
            self._depth_memo = None

    def fit_latency(self, model: nn.Module, supernet: Optional[nn.Module] = None,
                    correction: Optional[str] = None, timer: Optional[Timer] = None,
                    supernet_repeats: int = 30,
                    reduced: Optional[Callable[[], nn.Module]] = None, reduce_to: float = 0.5,
                    **layer_args) -> None:
        """Measure each layer whose rule gives a latency layer (convs, linears) over a grid of
        widths on the model's device and fit ``F(x_in, x_out)`` (see
        :func:`mmdms.models.task_modules.latency_model.fit_layer`); then, given the static
        ``supernet``, time it whole and correct the sum so that the supernet's estimated
        latency is the measured one (:mod:`~mmdms.models.task_modules.latency_model`).

        Args:
            model (nn.Module): the search model's architecture (the layers to time).
            supernet (nn.Module, optional): the same architecture without DMS ops (e.g.
                :meth:`DMS.build_plain_architecture`), timed whole on the estimator's input
                with the recorded forward (``tensor`` mode), in eval mode.
            correction (str, optional): ``'per_layer'`` (needs ``reduced``), ``'scale'``,
                ``'offset'`` or ``'none'``. Defaults to ``'per_layer'`` with ``reduced``,
                ``'scale'`` with only a ``supernet``, ``'none'`` without one.
            timer (Timer, optional): ``timer(module, x) -> ms``; defaults to
                :func:`~mmdms.models.task_modules.latency_model.time_ms`.
            supernet_repeats (int): timed calls of a whole model (default timer).
            reduced (callable, optional): builds the static model of the search space's
                current hard masks (for ``'per_layer'``); it is called with every width set to
                ``reduce_to`` of its elements and the depth kept, and the ratios are restored.
            reduce_to (float): the keep fraction of the narrower model.
            **layer_args: ``fractions``, ``repeats``, ``warmup`` of :func:`fit_layer`.
        """
        if correction is None:
            correction = 'none' if supernet is None else \
                'scale' if reduced is None else 'per_layer'
        if supernet is None and correction != 'none':
            raise ValueError(f"Latency correction '{correction}' needs the measured whole "
                             'model: pass supernet=<the architecture without DMS ops> (or '
                             "correction='none')")
        if correction == 'per_layer' and reduced is None:
            raise ValueError("Latency correction 'per_layer' also times a narrower static "
                             'model: pass reduced=<a function building the static model of the '
                             "current masks> (or correction='scale')")
        latency_correction(1.0, 1.0, correction)  # an unknown name fails before the timing
        modules = dict(model.named_modules())
        device = next(model.parameters()).device
        layers = [fit_layer(modules[c.name], c, timer=timer, **layer_args)
                  if c.rule.timed else (0., None) for c in self.calls]
        fitted = LatencyModel(layers, device=str(device))
        self.latency_model = fitted
        fitted.layers_ms = float(self.estimate('latency', full=True))
        fitted.correction = correction
        if supernet is None:
            return
        warmup = layer_args.get('warmup', 2)
        timer = timer or (lambda m, x: time_ms(m, x, supernet_repeats, max(warmup, 3)))
        x = torch.randn(self.input_shape, generator=torch.Generator().manual_seed(0))
        x = x.to(device)

        def measure(static: nn.Module) -> float:
            return float(timer(TensorModeForward(static.to(device).eval(), self._forward), x))

        fitted.supernet_ms = measure(supernet)
        if correction != 'per_layer':
            fitted.scale, fitted.overhead_ms = latency_correction(
                fitted.layers_ms, fitted.supernet_ms, correction)
            return
        reduced_sum, static = self._at_reduced_width(reduce_to, reduced)
        fitted.reduced_ms = (reduced_sum, measure(static))
        num_layers = sum(1 for _, coeffs in layers if coeffs is not None)
        fitted.scale, fitted.per_layer_ms = per_layer_correction(
            fitted.layers_ms, fitted.supernet_ms, *fitted.reduced_ms, num_layers)

    def _at_reduced_width(self, fraction: float, build: Callable[[], nn.Module]):
        """The (uncorrected) per-layer sum and the static model with every width at
        ``fraction`` of its elements, the ratios restored afterwards."""
        mutables = self.space.width_mutables()
        saved = [m.dms_ratio.detach().clone() for m in mutables]
        try:
            for m in mutables:
                m.set_kept(min(m.num_elements, max(m.min_elements, 1,
                                                   round(fraction * m.num_elements))))
            return float(self.estimate('latency', hard=True)), build()
        finally:
            with torch.no_grad():
                for m, ratio in zip(mutables, saved):
                    m.dms_ratio.copy_(ratio)


class CountingForwardError(RuntimeError):
    """The estimator's one recorded forward failed."""


def _raised_at(error: BaseException) -> str:
    """``file:line in function`` of the innermost frame of ``error``'s traceback."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return 'an unknown place'
    code = tb.tb_frame.f_code
    path = code.co_filename.split('site-packages/')[-1]
    return f'{path}:{tb.tb_lineno} in {code.co_name}'


def _tensor_mode(model: nn.Module, x: Tensor):
    """``model``'s tensor mode on a bare batch: mmdms's network forward
    (:func:`~mmdms.models.adapters.network_forward.network_forward`)."""
    return network_forward(model, x)


def _match_pool_consumer(name: str, x: Tensor, channels: int, pool_outputs: List[tuple]) -> None:
    """Make layer ``name`` the consumer of the pooling whose output (or a view of it) it reads,
    so the pooling counts the channels of the layer's input mask."""
    for out, call in pool_outputs:
        if call.consumer is None and (x is out or x._base is out) \
                and call.in_channels == channels:
            call.consumer = name
            return


def known_resource_types() -> tuple:
    """Every resource type that :class:`DMSResourceEstimator` or a registered subclass counts."""
    types = list(RESOURCE_TYPES)
    for cls in TASK_UTILS.module_dict.values():
        if isinstance(cls, type) and issubclass(cls, DMSResourceEstimator):
            types += [t for t in cls.resource_types if t not in types]
    return tuple(types)


def _call_macs(call: LayerCall, reader: MaskReader):
    """MACs of one recorded call at the widths ``reader`` gives; a call run once per channel
    of another layer (:attr:`LayerCall.per_channel_of`) scaled by the fraction kept."""
    macs = call.rule.macs(call, call.rule.widths(call, reader))
    if call.per_channel_of is None:
        return macs
    return macs * _kept_fraction(reader, *call.per_channel_of)


def _kept_fraction(reader: MaskReader, layer: str, channels: int):
    """The fraction of ``layer``'s ``channels`` its input mask (else its output mask) keeps."""
    masks = reader.layer(layer)
    # an unset side is ``no_mask`` (a function giving None), never None itself
    mask = masks.in_mask if masks.in_mask is not no_mask else masks.out_mask
    return reader.width(mask, channels) / channels


def _weighted(cost, depth):
    """``cost`` times a block's depth mask; no operation where the layer is in no searched
    block (``depth`` is the number 1)."""
    if not isinstance(depth, Tensor) and depth == 1:
        return cost
    return cost * depth
