# Copyright (c) mmdms contributors. All rights reserved.
"""DMSMutator: finds every width and depth DMS can search in a real model."""
import copy
import math
import warnings
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmrazor.models.mutators import ChannelMutator
from mmrazor.models.mutables.mutable_channel.units.channel_unit import ChannelUnit
from mmrazor.registry import MODELS, TASK_UTILS

from mmdms.models.adapters.base import ResidualBlockAdapter, adapter_for
from mmdms.models.layer_rules import (leaf_layer_types, replace_with_dms_op, rule_for,
                                      searchable_layers)
from mmdms.models.layer_rules.batch_norm import DMSBatchNormMixin
from mmdms.models.mutables import (DMSChannelUnit, DMSMutableBlocks, check_weight_norm_sources,
                                   unit_channel_step)
from mmdms.models.search_space import SearchSpace, container_mask, no_mask
from mmdms.ops import depth_mix
from .channel_analyzer import ChannelTraceError, DMSChannelAnalyzer  # noqa: F401
from .channel_analyzer import free_param_ranges, step_misfit
from .diagnostics import (ResidualGraphWarning, SearchSpaceBuildError, SearchSpaceConfigError,
                          ThinSearchSpaceError, ThinSearchSpaceWarning,
                          ValueDependentTraceWarning, build_error, fixes, group_names)
from .norm_folding import fold_masks_into_norms
from .recording_tracer import RecordingFxTracer
from .residual_blocks import ResidualBlockMatcher, import_class
from .residual_graph import BlockRecord, graph_candidates, innermost, record_blocks


class UntraceableModuleError(RuntimeError):
    """MMRazor's tracer failed inside a module of the model."""


def shared_parameters(model: nn.Module) -> List[List[str]]:
    """The names of each parameter that several modules hold (tied weights), by parameter."""
    holders: Dict[int, List[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        holders.setdefault(id(param), []).append(name)
    return [names for names in holders.values() if len(names) > 1]


#: Errors of the mutator that already name the module and the way out: raised as they are.
_CLEAR_ERRORS = (UntraceableModuleError, ThinSearchSpaceError, SearchSpaceBuildError,
                 SearchSpaceConfigError)


@MODELS.register_module()
class DMSMutator(ChannelMutator):
    """Finds the DMS search space of a model and writes it into :attr:`space`
    (:class:`~mmdms.models.search_space.SearchSpace`); owns its mutables, one per width group
    and per stage depth.

    Widths come from MMRazor's ``ChannelAnalyzer`` (FX tracer by default): every group of
    dependent channels (residual adds, concats, depthwise convs) becomes a :class:`DMSChannelUnit`
    whose layers multiply their inputs by the group's soft mask. A module whose family adapter
    builds its space from its layout (:mod:`mmdms.models.adapters`, e.g. a ViT) is a leaf for
    the tracer and gets its widths from the adapter; an adapter with ``build_after_trace``
    (Swin's window attention: heads and head dims) adds widths inside a traced module after
    the traced widths. Depths come from identity-residual blocks
    ``g(x) = x + f(x)``: those the family adapters and ``block_types`` name
    (:mod:`.residual_blocks`), and, for every other type, the elements of a ``Sequential`` /
    ``ModuleList`` whose output reaches their input through additions in the executed graph
    (:mod:`.residual_graph`). A run of consecutive such blocks under one parent, each fed by the
    one before and of equal shapes, forms a stage with one :class:`DMSMutableBlocks`, and block
    ``i`` computes ``x + m_i (g(x) - x)`` through a forward hook, without touching its code.
    Nothing downstream reads the mutator: the estimator, the export, the hooks and the plot read
    :attr:`space`.

    Args:
        channel_unit_cfg (dict): MMRazor's unit config; ``default_args`` go to every
            :class:`DMSMutableChannel` (``step``, ``min_width``, ``importance``, ``normalize``).
            A width through layers pruned in blocks (a GroupNorm's groups,
            :meth:`~mmdms.models.layer_rules.LayerRule.channel_step`) gets the least common
            multiple of ``step`` and their blocks as its step (the summary says so), or stays
            fixed, with the reason, if that leaves it a single block.
        parse_cfg (dict): MMRazor's ``ChannelAnalyzer`` config; ``demo_input`` is the input shape
            of the tracing forward. ``ChannelAnalyzer`` means :class:`DMSChannelAnalyzer`
            (MMRazor's, plus channel splits and traceable forwards of known modules).
        search_width (bool): search channel widths. Defaults to True.
        search_depth (bool): search the depth of residual stages. Defaults to True.
        block_types (dict | list, optional): more identity-residual block types, by import path
            (see :class:`ResidualBlockMatcher`); they decide for their types, as the adapters do.
        blocks_from_graph (bool): also find identity-residual blocks of the types no adapter or
            ``block_types`` names from the executed graph of the demo input
            (:mod:`.residual_graph`). Defaults to True.
        depth_args (dict, optional): arguments of every :class:`DMSMutableBlocks`
            (``importance``, ``lambda_scale``, ``normalize``).
        min_blocks (int): blocks every stage keeps, counting its blocks that are not searchable
            (e.g. ResNet's first, downsampling block). Defaults to 1.
        allow_empty_stage (bool): allow a stage to lose all its blocks. Defaults to False.
        leaf_modules (Sequence[str]): import paths of module types the tracer must not enter
            (their channels are then left unsearched); the way out for an untraceable module.
        adapter_args (dict, optional): options of family adapters' ``build_space``, by adapter
            class name, e.g. ``dict(LlamaForCausalLMAdapter=dict(tie_layer_widths=True))``.
        strict (bool): refuse a thin search space (under :attr:`MIN_COVERAGE` of the conv /
            linear weights searched) with :class:`ThinSearchSpaceError` instead of one
            :class:`ThinSearchSpaceWarning`. Defaults to False.
        fold_norm_masks (bool): where a conv's input channels are ``act(bn(y))`` read by that
            conv alone, with ``act`` ReLU-like, let the BatchNorm's affine parameters apply the
            mask instead of the conv (same function, less work; see
            :mod:`~mmdms.models.mutators.norm_folding`). Defaults to True.
        fold_depth_masks (bool): where a block's adapter names the BatchNorm that ends its
            residual branch (MobileNetV2's and EfficientNet's inverted residuals), scale that
            norm's affine parameters by the block's depth mask (``x + m f(x)``) instead of
            mixing the block's output with its input (same function, no activation-sized work).
            Defaults to True.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 channel_unit_cfg: Dict = dict(type='DMSChannelUnit', default_args=dict()),
                 parse_cfg: Dict = dict(
                     type='ChannelAnalyzer', demo_input=(1, 3, 224, 224),
                     tracer_type='FxTracer'),
                 search_width: bool = True,
                 search_depth: bool = True,
                 block_types: Union[Dict[str, Optional[str]], List[str], None] = None,
                 blocks_from_graph: bool = True,
                 depth_args: Optional[Dict] = None,
                 min_blocks: int = 1,
                 allow_empty_stage: bool = False,
                 leaf_modules: Sequence[str] = (),
                 fold_norm_masks: bool = True,
                 fold_depth_masks: bool = True,
                 adapter_args: Optional[Dict[str, Dict]] = None,
                 strict: bool = False,
                 init_cfg: Optional[Dict] = None) -> None:
        channel_unit_cfg = dict(channel_unit_cfg)
        channel_unit_cfg.setdefault('type', 'DMSChannelUnit')
        channel_unit_cfg.setdefault('default_args', {})
        parse_cfg = dict(parse_cfg)
        parse_cfg.setdefault('_scope_', 'mmrazor')
        super().__init__(channel_unit_cfg=channel_unit_cfg, parse_cfg=parse_cfg,
                         init_cfg=init_cfg)
        if self.parse_cfg.get('type') == 'ChannelAnalyzer':
            self.parse_cfg['type'] = 'DMSChannelAnalyzer'
        if not issubclass(self.unit_class, DMSChannelUnit):
            raise TypeError(f'DMSMutator needs DMSChannelUnit units, got {self.unit_class}')
        self.search_width = search_width
        self.search_depth = search_depth
        self.block_matcher = ResidualBlockMatcher(block_types)
        self.blocks_from_graph = blocks_from_graph
        #: What the demo forward showed of each observed block (shapes, which feeds which).
        self.block_records: Dict[str, BlockRecord] = {}
        #: The blocks found from the graph (not named by an adapter or ``block_types``).
        self.graph_blocks: List[str] = []
        self.depth_args = dict(depth_args or {})
        self.min_blocks = min_blocks
        self.allow_empty_stage = allow_empty_stage
        self.leaf_modules = tuple(import_class(p) if isinstance(p, str) else p
                                  for p in leaf_modules)
        #: The record of the search space, written by :meth:`prepare_from_supernet`.
        self.space = SearchSpace()
        # The mutables as submodules, so that they are checkpointed (state-dict keys cannot
        # hold '.'): stage depths, and the widths adapters built (the units hold the others).
        self.stage_mutables = nn.ModuleDict()
        self.structured_mutables = nn.ModuleDict()
        self._depth_hooks: list = []
        self.fold_norm_masks = fold_norm_masks
        self.fold_depth_masks = fold_depth_masks
        self.adapter_args = {k: dict(v) for k, v in (adapter_args or {}).items()}
        self.strict = strict
        #: ``{layer: why}`` for conv / linear layers left out of the width search.
        self.unsearched_reasons: Dict[str, str] = {}
        #: The modules MMRazor's symbolic tracer could not enter; if any, the channel graph is
        #: the executed graph of the demo input (:class:`~.concrete_tracer.ConcreteFxTracer`).
        self.concretely_traced: List[str] = []

    #: Below this share of conv / linear weights searched, the space is thin: one warning (an
    #: error with ``strict=True``) naming the layers left out and why.
    MIN_COVERAGE = 0.5

    # preparation -----------------------------------------------------------------------------
    def prepare_from_supernet(self, supernet: nn.Module) -> None:
        """Find the widths and depths of ``supernet`` and make its layers apply the masks.

        Raises:
            UntraceableModuleError: a module with weights that the tracer cannot enter.
            ThinSearchSpaceError: with ``strict=True``, a thin space.
            SearchSpaceBuildError: any other exception, with the module it came from (the
                innermost module of ``supernet`` in its traceback) and the ways out.
        """
        try:
            self._prepare(supernet)
        except _CLEAR_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001  (re-raised with the module and the way out)
            raise build_error(e, supernet, f'prepare the search space of '
                              f'{type(supernet).__name__}') from e

    def _prepare(self, supernet: nn.Module) -> None:
        shared = shared_parameters(supernet)  # before any layer becomes its DMS op
        analyzer = TASK_UTILS.build(self.parse_cfg)
        block_shapes = self._find_blocks(supernet, analyzer) if self.search_depth else {}
        built = [(name, adapter) for name, adapter in
                 ((n, adapter_for(m, 'build_space')) for n, m in supernet.named_modules())
                 if adapter is not None] if self.search_width else []
        built = _outside_leaves(built)
        unknown = set(self.adapter_args) - {type(a).__name__ for _, a in built}
        if unknown:
            raise SearchSpaceConfigError(
                f'DMSMutator adapter_args names {sorted(unknown)}, but the adapters that build '
                f'this model\'s space are {sorted({type(a).__name__ for _, a in built})}'
                f'{"" if self.search_width else " (none: search_width=False)"}')
        if self.search_width:
            # a module whose adapter builds all its widths is a leaf of the trace; one whose
            # adapter adds widths inside a traced module (build_after_trace) is entered
            leaves = tuple(type(supernet.get_submodule(n)) for n, a in built
                           if not a.build_after_trace)
            self._prepare_traced_widths(supernet, analyzer, leaves)
            if self.fold_norm_masks:
                self.space.folded_convs = fold_masks_into_norms(
                    supernet, getattr(analyzer, 'norm_streams', []))
            for name, adapter in built:
                self._build_adapter_space(supernet, name, adapter)
        if self.search_depth:
            self._prepare_depth(supernet, block_shapes)
        self._check_shared_parameters(shared)
        named = {f'width {key}': group.mutable for key, group in self.space.widths.items()}
        named.update({f'depth {key}': stage.mutable for key, stage in self.space.stages.items()})
        try:
            check_weight_norm_sources(named)
        except ValueError as e:  # an option that does not fit this model: said as it is
            raise SearchSpaceConfigError(str(e)) from e
        self._report_coverage(supernet)
        print_log(self.summary(), logger='current')

    def _check_shared_parameters(self, shared: List[List[str]]) -> None:
        """Refuse a parameter held by several modules (tied weights) if the search reaches one
        of its holders: a searched layer becomes its DMS op with a parameter of its own (the
        tie would silently break), and its count would depend on which masks apply. Tied
        input / output embeddings whose layers are not searched (a Llama's) are fine."""
        for names in shared:
            searched = [n for n in names if n.rpartition('.')[0] in self.space.layers
                        or self.space.block_of(n) is not None]
            if searched:
                raise SearchSpaceConfigError(
                    f'{names} are one parameter (tied), and {searched} are searched (a width '
                    'or a depth mask reaches them). Untie the weights (e.g. '
                    'tie_word_embeddings=False), or keep their layers out of the search space '
                    '(leaf_modules, search_depth=False)')

    def _prepare_traced_widths(self, model: nn.Module, analyzer, extra_leaves: tuple) -> None:
        """MMRazor's ``ChannelMutator.prepare_from_supernet`` (tracer path) with ``analyzer``,
        the configured and the adapters' leaf modules; then the space records the units."""
        device = next(model.parameters()).device
        self._name2module = dict(model.named_modules())
        units = self._units_from_tracer(model, analyzer, extra_leaves)
        for i, unit in enumerate(units):
            units[i] = unit.to(device)
            units[i].prepare_for_pruning(model)
            self._name2unit[units[i].name] = units[i]
        self.units = nn.ModuleList(units)
        self._record_units(model)

    def _units_from_tracer(self, model: nn.Module, analyzer,
                           extra_leaves: tuple = ()) -> List[DMSChannelUnit]:
        if analyzer.tracer_type == 'FxTracer':
            analyzer.tracer = RecordingFxTracer(
                leaf_module=tuple(analyzer.tracer.leaf_module) + leaf_layer_types() + self.leaf_modules +
                extra_leaves)
        unit_configs = analyzer.analyze(model)
        self._check_untraced(model, getattr(analyzer.tracer, 'untraced', {}))
        if getattr(analyzer, 'traced_concretely', False):
            self._report_concrete_trace(analyzer)
        units = [ChannelUnit.init_from_cfg(model, cfg) for cfg in unit_configs.values()]
        self.unsearched_reasons.update(getattr(analyzer, 'layer_reasons', {}))
        return self._convert_channel_unit_to_mutable(self._without_expanded(units))

    def _without_expanded(self, units: List[ChannelUnit]) -> List[ChannelUnit]:
        """The units whose layers read each channel as a whole number of features. A layer
        may read a group's channels flattened with the positions, channel-major (VGG's
        classifier after ``flatten``: 512 channels as 25088 features; Swin's patch merging
        after ``unfold``): it reads the group's mask expanded
        (:class:`~mmdms.models.mutables.ExpandedMutableChannel`). A unit read any other way
        stays fixed, with the reason."""
        kept = []
        for unit in units:
            odd = [c for c in list(unit.input_related) + list(unit.output_related)
                   if c.num_channels % unit.num_channels]
            if not odd:
                kept.append(unit)
                continue
            reason = (f"its {unit.num_channels} channels are read as {odd[0].num_channels} "
                      f"features by '{odd[0].name}', not a whole number per channel, which DMS "
                      'does not search')
            for channel in list(unit.input_related) + list(unit.output_related):
                self.unsearched_reasons.setdefault(str(channel.name), reason)
        return kept

    def _convert_channel_unit_to_mutable(self, units: List[ChannelUnit]) -> List[DMSChannelUnit]:
        """MMRazor's conversion of traced units into :class:`DMSChannelUnit` s, with each
        width's step made a multiple of the blocks its layers are pruned in
        (:func:`~mmdms.models.mutables.unit_channel_step`); a width that would be one block
        is left out (fixed), with the reason."""
        mutable_units = []
        for unit in units:
            args = dict(self.unit_default_args)
            if 'init_args' in self.units_cfg.get(unit.name, {}):
                args = dict(self.units_cfg[unit.name]['init_args'])
            need = unit_channel_step(unit)
            note = ''
            if need.step > 1:
                configured = args.get('step', 1)
                need.step = configured * need.step // math.gcd(configured, need.step)
                why = step_misfit(need, unit.num_channels)
                if why is not None:
                    for channel in list(unit.input_related) + list(unit.output_related):
                        if isinstance(channel.module, nn.Module):
                            self.unsearched_reasons.setdefault(str(channel.name), why)
                    continue
                args['step'] = need.step
                note = need.describe() if configured == 1 else \
                    f'a multiple of the configured step {configured} in {need.describe()}'
            mutable_unit = self.unit_class.init_from_channel_unit(unit, args)
            mutable_unit.step_reason = note
            mutable_units.append(mutable_unit)
        return mutable_units

    def _prepare_from_tracer(self, model: nn.Module, parse_cfg: Dict) -> List[DMSChannelUnit]:
        # MMRazor's entry point, kept for callers of ChannelMutator's API
        return self._units_from_tracer(model, TASK_UTILS.build(parse_cfg))

    def _report_concrete_trace(self, analyzer) -> None:
        """Say that the channel graph is the executed graph of the demo input, and (one
        warning) where the model's code decided on tensor values."""
        self.concretely_traced = list(analyzer.hidden_modules)
        print_log('DMSMutator: MMRazor\'s tracer cannot enter '
                  f'{group_names(analyzer.hidden_modules)} (Python control flow on traced '
                  'values); the channel graph is the executed graph of the demo input '
                  f'{tuple(analyzer.demo_input.input_shape)} (ConcreteFxTracer)',
                  logger='current')
        reads = analyzer.tracer.value_reads
        if reads:
            lines = '\n'.join(f"  - '{module}': {what}" if module else f'  - {what}'
                              for module, what in reads.items())
            warnings.warn(
                'DMSMutator: the model decides on tensor values in Python while it is traced '
                f'on the demo input, so its channel graph is that of the path the demo input '
                f'took there:\n{lines}\nIf another input takes another path through layers '
                'with searched widths, keep such a module out of the width search with '
                "DMSMutator(leaf_modules=['<import path>']).", ValueDependentTraceWarning,
                stacklevel=3)

    def _check_untraced(self, model: nn.Module, untraced: Dict[str, tuple]) -> None:
        """One clear error for a module with weights that the tracer could not enter."""
        modules = dict(model.named_modules())
        for name, (module_type, reason) in untraced.items():
            module = modules.get(name)
            if module is None or next(searchable_layers(module), None) is None:
                continue  # nothing searchable is hidden inside it
            path = f'{module_type.__module__}.{module_type.__qualname__}'
            raise UntraceableModuleError(
                f"The channel tracer cannot trace module '{name}' ({path}): {reason}. "
                'Its layers would silently drop out of the '
                f"width search. Exclude it with DMSMutator(leaf_modules=['{path}']) (its "
                'channels then stay fixed), or make it traceable (e.g. a family adapter with a '
                'traceable forward, mmdms.models.adapters.FamilyAdapter.trace_forward, as mmdms '
                "has for mmyolo's CSPLayerWithTwoConv).")

    def _record_units(self, model: nn.Module) -> None:
        """Write the traced widths, the masks their layers read and the free parameters they
        slice (a class token, a layer scale: :mod:`.layout_nodes`) into the space."""
        names = set()
        for unit in self.units:
            if unit.is_mutable:
                self.space.add_width(unit.name, unit.mutable_channel, unit.layer_names(),
                                     getattr(unit, 'step_reason', ''))
        params = dict(model.named_parameters())
        params.update(model.named_buffers())  # a fixed position table (T2T)
        for name, ranges in free_param_ranges([u for u in self.units if u.is_mutable]).items():
            if name in params:
                self.space.add_param(name, free_param_mask(params[name].shape[-1], ranges))
        for unit in self.units:
            names.update(c.name for c in list(unit.input_related) + list(unit.output_related)
                         if isinstance(c.module, nn.Module))
        for name, module in model.named_modules():
            if name in names:
                in_mask = container_mask(module, 'in_channels')
                out_mask = container_mask(module, 'out_channels')
                self.space.set_layer_masks(name, in_mask if in_mask is not no_mask else None,
                                           out_mask if out_mask is not no_mask else None)
        self._record_stream_sublayers(model)

    def _record_stream_sublayers(self, model: nn.Module) -> None:
        """Give the layers inside a masked leaf that read or write its channels unchanged
        (:meth:`~mmdms.models.layer_rules.LayerRule.stream_sublayers`) the leaf's masks on
        those sides, and list them in the leaf's widths."""
        modules = dict(model.named_modules())
        for name in list(self.space.layers):
            rule = rule_for(modules[name])
            sublayers = rule.stream_sublayers(modules[name]) if rule is not None else {}
            if not sublayers:
                continue
            masks = self.space.layers[name]
            for sub, (on_input, on_output) in sublayers.items():
                self.space.set_layer_masks(
                    f'{name}.{sub}', masks.in_mask if on_input and masks.in_mask is not no_mask
                    else None, masks.out_mask if on_output and masks.out_mask is not no_mask
                    else None)
            for group in self.space.widths.values():
                if name in group.layers:
                    group.layers += [f'{name}.{sub}' for sub in sublayers
                                     if f'{name}.{sub}' not in group.layers]

    def _build_adapter_space(self, model: nn.Module, name: str, adapter) -> None:
        """Let ``adapter`` build module ``name``'s widths; own the mutables it made."""
        before = set(self.space.widths)
        adapter.build_space(model, name, self.space, dict(self.unit_default_args),
                            **self.adapter_args.get(type(adapter).__name__, {}))
        device = next(model.parameters()).device  # as the traced units and the depths
        for key, group in self.space.widths.items():
            if key not in before:
                self.structured_mutables[key.replace('.', '__')] = group.mutable.to(device)

    def _demo_forward(self, model: nn.Module, analyzer, prepare=None) -> None:
        """The demo input's forward in eval mode, without gradients unless ``prepare`` (which
        makes the inputs graph roots) is given."""
        inputs = analyzer.demo_input.get_data(model)
        if prepare is not None:
            inputs = prepare(inputs)
        was_training = model.training
        model.eval()
        try:
            with torch.set_grad_enabled(prepare is not None):
                if isinstance(inputs, dict):
                    inputs = dict(inputs, mode='tensor')
                    model(**inputs)
                else:
                    model(inputs)
        finally:
            model.train(was_training)

    def _find_blocks(self, model: nn.Module, analyzer) -> Dict[str, tuple]:
        """``{block: (input shape, output shape)}`` of every identity-residual block, from one
        forward: the blocks the rules of their types name (adapters, ``block_types``), and the
        others the graph shows (:mod:`.residual_graph`), innermost first."""
        decided = {name: self.block_matcher.decision(module)
                   for name, module in model.named_modules() if name}
        by_rule = [name for name, decision in decided.items() if decision]
        # (a module held under two names is asked about once, under its first)
        asked = [name for name in graph_candidates(model)
                 if name in decided and decided[name] is None] if self.blocks_from_graph else []
        try:
            records = record_blocks(model, by_rule + asked,
                                    lambda prepare: self._demo_forward(model, analyzer, prepare))
        except Exception as e:  # noqa: BLE001  (said, then the rules' blocks alone)
            if not asked:
                raise
            warnings.warn(
                f'DMSMutator: the forward that finds identity-residual blocks from the graph '
                f'failed ({type(e).__name__}: {e}); depth is searched only in the blocks the '
                'family adapters and block_types name. Name the model\'s block types in '
                "DMSMutator(block_types=['<import path>']), or set blocks_from_graph=False.",
                ResidualGraphWarning, stacklevel=3)
            asked = []
            records = record_blocks(model, by_rule,
                                    lambda prepare: self._demo_forward(model, analyzer))
        self.block_records = records
        by_rule = [name for name in by_rule if records[name].calls]  # run by this forward
        self.graph_blocks = innermost([n for n in asked if records[n].identity_residual],
                                      by_rule)
        if self.graph_blocks:
            types = sorted({type(model.get_submodule(n)).__name__ for n in self.graph_blocks})
            print_log(f'DMSMutator: {len(self.graph_blocks)} identity-residual block(s) found '
                      f'from the graph ({", ".join(types)})', logger='current')
        return {name: records[name].shapes for name in by_rule + self.graph_blocks}

    def _prepare_depth(self, model: nn.Module, block_shapes: Dict[str, tuple]) -> None:
        modules = dict(model.named_modules())
        for name, (in_shape, out_shape) in block_shapes.items():
            if in_shape is None or in_shape != out_shape:
                raise ValueError(
                    f"Block '{name}' ({type(modules[name]).__name__}) maps shape {in_shape} to "
                    f'{out_shape}: only identity-residual blocks, whose output has the shape of '
                    'their input, can be removed. Remove its type from block_types.')
        for stage, names, has_head in self._contiguous_stages(modules, set(block_shapes),
                                                              self.block_records):
            fixed = 1 if has_head else 0
            min_kept = 0 if self.allow_empty_stage else max(0, self.min_blocks - fixed)
            if len(names) <= min_kept:
                self.space.fixed_stages[stage] = \
                    f'{len(names)} block(s), all kept (min {min_kept})'
                continue
            mutable = DMSMutableBlocks(len(names), min_blocks=min_kept,
                                       allow_empty=min_kept == 0, **self.depth_args)
            mutable.to(next(model.parameters()).device)
            self.stage_mutables[stage.replace('.', '__')] = mutable
            self.space.add_stage(stage, mutable, names,
                                 [n for n in names if n in self.block_records and
                                  self.block_records[n].tuple_output])
            for index, name in enumerate(names):
                norm = self._branch_norm(model, name) if self.fold_depth_masks else None
                if norm is not None:
                    norm.dms_output_mask = _FoldedDepthMask(
                        mutable, index, norm.num_features, getattr(norm, 'dms_output_mask', None))
                    continue
                self._depth_hooks.append(modules[name].register_forward_hook(
                    _DepthMask(mutable, index), with_kwargs=True))

    @staticmethod
    def _branch_norm(model: nn.Module, name: str) -> Optional[nn.Module]:
        """The BatchNorm (as its DMS op) that ends block ``name``'s residual branch, where its
        adapter names one (:meth:`~mmdms.models.adapters.ResidualBlockAdapter.branch_norm`)."""
        adapter = adapter_for(model.get_submodule(name), 'is_residual_block')
        path = adapter.branch_norm(model.get_submodule(name)) \
            if isinstance(adapter, ResidualBlockAdapter) else None
        if path is None:
            return None
        norm = replace_with_dms_op(model, f'{name}.{path}')
        return norm if isinstance(norm, DMSBatchNormMixin) else None

    @staticmethod
    def _contiguous_stages(modules: Dict[str, nn.Module], searchable: set,
                           records: Optional[Dict[str, BlockRecord]] = None):
        """Runs of consecutive searchable sibling blocks: ``(stage_name, block_names, has_head)``.

        A run ends at a sibling that is not an identity block (e.g. a downsampling block, which
        starts the next paper-stage); ``has_head`` says such a block precedes the run, so the
        stage keeps at least that one whatever DMS removes. A run also ends where, by
        ``records``, a block is not fed by the one before it (parallel branches in one list) or
        has another input shape.
        """
        records = records or {}

        def continues(before: str, after: str) -> bool:
            a, b = records.get(before), records.get(after)
            if a is None or b is None:
                return True
            if a.shapes[0] is not None and b.shapes[0] is not None and \
                    a.shapes[0] != b.shapes[0]:
                return False
            return a.feeds(b) is not False

        parents = sorted({name.rpartition('.')[0] for name in searchable},
                         key=list(modules).index)
        for parent in parents:
            run: List[str] = []
            has_head = False
            children = [(f'{parent}.{n}' if parent else n) for n, _ in
                        modules[parent].named_children()]
            for child in children + [None]:
                if child is not None and child in searchable and \
                        (not run or continues(run[-1], child)):
                    run.append(child)
                    continue
                if run:
                    first, last = run[0].rpartition('.')[2], run[-1].rpartition('.')[2]
                    yield f'{parent}.{first}-{last}' if parent else f'{first}-{last}', run, has_head
                if child is not None and child in searchable:  # a break inside the blocks
                    run, has_head = [child], False
                else:
                    run, has_head = [], child is not None

    def _report_coverage(self, model: nn.Module) -> None:
        """Record the coverage; a thin space is one warning (an error with ``strict``) naming
        the layers left out, grouped by why."""
        self.space.set_coverage(model, list(searchable_layers(model)))
        unsearched = self.space.unsearched_layers
        if not self.search_width or not unsearched:
            return
        leaves = [n for n, m in model.named_modules() if isinstance(m, self.leaf_modules)]
        # layers whose rule keeps them whole (RepMLP's blocks) say why their layers are left out
        rule_leaves = {n: rule_for(m).inner_reason for n, m in model.named_modules()
                       if isinstance(m, leaf_layer_types())}
        by_reason: Dict[str, List[str]] = {}
        for name in unsearched:
            leaf = next((n for n in leaves if name.startswith(f'{n}.')), None)
            inner = next((why for n, why in rule_leaves.items() if name.startswith(f'{n}.')),
                         None)
            reason = self.unsearched_reasons.get(name) or inner or (
                f"it is inside '{leaf}', a leaf module the tracer does not enter"
                if leaf is not None else 'the tracer saw no call of it (no traced width)')
            by_reason.setdefault(reason, []).append(name)
        lines = '\n'.join(f'  - {group_names(names)}: {reason}'
                          for reason, names in sorted(by_reason.items(),
                                                      key=lambda item: -len(item[1])))
        coverage = self.space.weight_coverage
        head = (f'DMSMutator: {coverage:.1%} of the conv/linear weights of '
                f'{type(model).__name__} are searched; {len(unsearched)} conv/linear layer(s) '
                'have no searched width')
        if coverage >= self.MIN_COVERAGE:
            print_log(f'{head}:\n{lines}', logger='current')
            return
        message = (f'{head}, under the {self.MIN_COVERAGE:.0%} a useful search needs. Left '
                   f'out, by why:\n{lines}\nWays out: {fixes()}.')
        if self.strict:
            raise ThinSearchSpaceError(message)
        warnings.warn(message, ThinSearchSpaceWarning, stacklevel=2)

    # the search space, as the space records it -------------------------------------------------
    @property
    def width_mutables(self) -> list:
        return self.space.width_mutables()

    @property
    def depth_mutables(self) -> list:
        return self.space.depth_mutables()

    def dms_mutables(self) -> list:
        """Every DMS mutable: widths first, then stage depths."""
        return self.space.dms_mutables()

    @property
    def weight_coverage(self) -> float:
        """Fraction of conv/linear weights in layers with a searchable input or output width."""
        return self.space.weight_coverage

    @property
    def unsearched_layers(self) -> List[str]:
        return self.space.unsearched_layers

    @property
    def folded_convs(self) -> List[str]:
        return self.space.folded_convs

    @property
    def fixed_stages(self) -> Dict[str, str]:
        return self.space.fixed_stages

    @property
    def stage_blocks(self) -> Dict[str, List[str]]:
        """Blocks per stage, keyed like :attr:`stage_mutables`."""
        return {k.replace('.', '__'): s.blocks for k, s in self.space.stages.items()}

    def summary(self) -> str:
        """A readable table of the search space (logged when it is prepared)."""
        return 'DMSMutator: ' + self.space.summary()


def _outside_leaves(built: List[tuple]) -> List[tuple]:
    """``built`` (``(module name, adapter)`` with ``build_space``) without the modules inside
    one whose adapter builds all its widths (a leaf of the trace: a ViT builds its attentions
    itself), which an adapter with ``build_after_trace`` would build a second time."""
    leaves = [name for name, adapter in built if not adapter.build_after_trace]
    return [(name, adapter) for name, adapter in built
            if not adapter.build_after_trace or
            not any(leaf == '' or name.startswith(leaf + '.') for leaf in leaves)]


def free_param_mask(size: int, ranges: List[tuple]):
    """The mask function of a free parameter's last axis (``size`` entries) whose ranges
    ``[(start, end, unit), ...]`` the units' mutables mask (ones elsewhere)."""
    ranges = sorted(((s, e, u.mutable_channel) for s, e, u in ranges), key=lambda r: r[0])

    def mask(hard: bool) -> torch.Tensor:
        parts, last = [], 0
        for start, end, mutable in ranges:
            if start < last:
                continue  # a range already covered (the parameter is read twice)
            values = mutable.hard_mask if hard else mutable.soft_mask
            if start > last:
                parts.append(values.new_ones(start - last))
            parts.append(values)
            last = end
        if last < size:
            parts.append(parts[-1].new_ones(size - last))
        return torch.cat(parts)

    return mask


class _FoldedDepthMask:
    """The depth mask of a block ``x + f(x)`` whose branch ends with a BatchNorm, as that norm's
    output mask (``dms_output_mask``, scaling its ``gamma`` and ``beta``): ``x + m f(x)``, the
    value and gradients of ``x + m (g(x) - x)`` with no activation-sized work (a drop path after
    the norm is linear, so it commutes with ``m``)."""

    def __init__(self, mutable: DMSMutableBlocks, index: int, channels: int,
                 inner=None) -> None:
        self.mutable, self.index, self.channels, self.inner = mutable, index, channels, inner

    def __call__(self) -> torch.Tensor:
        mask = self.mutable.block_mask(self.index).expand(self.channels)
        return mask if self.inner is None else mask * self.inner()

    def __deepcopy__(self, memo):
        return _FoldedDepthMask(copy.deepcopy(self.mutable, memo), self.index, self.channels,
                                copy.deepcopy(self.inner, memo))


class _DepthMask:
    """Forward hook: turns block ``g`` into ``x + m (g(x) - x)`` with the stage's mask ``m``; of a
    block returning ``(g(x), *rest)`` (its further arguments passed through), into
    ``(x + m (g(x) - x), *rest)``."""

    def __init__(self, mutable: DMSMutableBlocks, index: int) -> None:
        self.mutable = mutable
        self.index = index

    def __call__(self, module, args, kwargs, output):
        x = args[0] if args else next(iter(kwargs.values()))
        if isinstance(output, tuple):
            return (self._mix(x, output[0]), *output[1:])
        return self._mix(x, output)

    def _mix(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        mask = self.mutable.block_mask(self.index).to(output.dtype)
        if x.dtype == output.dtype and x.shape == output.shape:
            # torch.lerp's values and gradients: exactly ``output`` at m = 1 and ``x`` at m = 0,
            # with no activation-sized work at m = 1 but the mask's gradient
            return depth_mix(x, output, mask)
        return x + mask * (output - x)

    def __deepcopy__(self, memo):
        return _DepthMask(copy.deepcopy(self.mutable, memo), self.index)
