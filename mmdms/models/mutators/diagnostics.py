# Copyright (c) mmdms contributors. All rights reserved.
"""What the mutator says when a search space cannot be built, or is thin: one message naming the
modules, their types and the way out, instead of a bare exception or silence."""
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Tuple

import torch.nn as nn



def fixes(path: str = '<import path>') -> str:
    """The ways out the messages name, for a module of type ``path``."""
    return (f"DMSMutator(leaf_modules=['{path}']) to keep the module's channels fixed, a family "
            'adapter (mmdms.models.adapters.FamilyAdapter: trace_forward, build_space, '
            'static_rule) or a layer rule (mmdms.models.layer_rules) to teach mmdms the module, '
            'and DMSMutator(block_types=...) for the depth of residual blocks')


class SearchSpaceBuildError(RuntimeError):
    """An exception inside :meth:`DMSMutator.prepare_from_supernet`, with the module it came
    from and the ways out."""


class SearchSpaceConfigError(ValueError):
    """The mutator's options or the model's parameters contradict the search (an unknown
    adapter in ``adapter_args``, a tied weight in a searched layer, an importance such as
    ``'l1'`` that some mutables have no weights for); says which and the fix. A ``ValueError``,
    raised as it is, not wrapped in :class:`SearchSpaceBuildError`."""


class ThinSearchSpaceError(ValueError):
    """The search space covers too few conv / linear weights (``DMSMutator(strict=True)``)."""


class ThinSearchSpaceWarning(UserWarning):
    """The search space covers too few conv / linear weights."""


class ResidualGraphWarning(UserWarning):
    """The forward that finds identity-residual blocks from the graph failed: depth is searched
    only in the blocks the family adapters and ``block_types`` name."""


class ValueDependentTraceWarning(UserWarning):
    """The model's Python code decided something on a tensor's values while it was traced on the
    demo input (``if x.sum() > 0``, ``int(t)``): the channel graph is that of the path the demo
    input took there."""


def type_path(module_type: type) -> str:
    return f'{module_type.__module__}.{module_type.__qualname__}'


def group_names(names: Iterable[str], limit: int = 6) -> str:
    """``names`` in at most ``limit`` groups by their longest shared prefix of module path
    parts: ``backbone.stages.* (36), head.fc``."""
    names = list(names)
    if len(names) <= limit:
        return ', '.join(names)
    depth = max(len(n.split('.')) for n in names)
    for d in range(depth - 1, 0, -1):
        groups: Dict[str, List[str]] = OrderedDict()
        for name in names:
            parts = name.split('.')
            key = '.'.join(parts[:d]) + '.*' if len(parts) > d else name
            groups.setdefault(key, []).append(name)
        if len(groups) <= limit:
            return ', '.join(k if len(v) == 1 and k == v[0] else f'{k} ({len(v)})'
                             for k, v in groups.items())
    return f'{", ".join(names[:limit])}, ... ({len(names) - limit} more)'


def culprit_module(error: BaseException,
                   model: nn.Module) -> Optional[Tuple[str, nn.Module]]:
    """The innermost module of ``model`` whose code (or the code handling it) raised ``error``:
    a frame's ``self``, or a local naming a module of ``model``."""
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items() if n}
    found = None
    tb = error.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        for key in ('self', 'module', 'm', 'mod', 'layer', 'name', 'module_name'):
            value = local.get(key)
            if isinstance(value, nn.Module) and id(value) in names:
                found = (names[id(value)], value)
                break
            if isinstance(value, str) and value and value in modules:
                found = (value, modules[value])
                break
        tb = tb.tb_next
    cause = error.__cause__ or error.__context__
    if found is None and cause is not None and cause is not error:
        return culprit_module(cause, model)
    return found


def build_error(error: BaseException, model: nn.Module, where: str) -> SearchSpaceBuildError:
    """One error for ``error`` raised while the mutator ran ``where``."""
    first = (str(error).strip().splitlines() or [''])[0]
    culprit = culprit_module(error, model)
    path = '<import path>'
    if getattr(error, 'module_name', ''):  # the error knows its module (ChannelTraceError)
        at, path = '', error.module_type
    elif culprit is not None:
        name, module = culprit
        path = type_path(type(module))
        at = f" (in module '{name}', {path})"
    else:
        at = f' (in no module of {type(model).__name__} that could be told apart)'
    return SearchSpaceBuildError(
        f'DMSMutator could not {where}: {type(error).__name__}: {first}{at}. Ways out: '
        f'{fixes(path)}.')
