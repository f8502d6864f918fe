# Copyright (c) mmdms contributors. All rights reserved.
"""The config that retrains (or tests) an exported subnet: the search config's data, schedule
and evaluator around a :class:`~mmdms.models.DMSSubnet` instead of the DMS search model."""
import copy
from typing import Any, Dict

from mmengine.config import Config

#: Hooks that only make sense during a search.
SEARCH_HOOKS = ('DMSImportanceHook', 'ResourceLossHook')
#: Parameter-name fragments of the search's structure parameters (optimizer custom keys).
STRUCTURE_KEYS = ('dms_ratio', 'mutator')
#: Where the exported files lie, relative to the written config (mmengine substitutes
#: ``{{ fileDirname }}`` when it reads the file, so the export directory can be moved).
HERE = '{{ fileDirname }}'


def _type_name(cfg: Dict) -> str:
    kind = cfg.get('type', '') if isinstance(cfg, dict) else ''
    return getattr(kind, '__name__', kind)


def strip_pretrained(cfg: Any) -> Any:
    """``cfg`` without ``init_cfg`` entries of type ``Pretrained`` (a supernet's pretrained
    weights do not fit the pruned layers; the export's ``pruned.pth`` carries the weights)."""
    if isinstance(cfg, dict):
        out = type(cfg)()
        for key, value in cfg.items():
            if key == 'init_cfg':
                if isinstance(value, dict) and _type_name(value) == 'Pretrained':
                    continue
                if isinstance(value, list):
                    value = [v for v in value if _type_name(v) != 'Pretrained'] or None
            out[key] = strip_pretrained(value)
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(strip_pretrained(v) for v in cfg)
    return cfg


def retrain_config(cfg: Config, reinit: bool = False) -> Config:
    """The search config ``cfg`` turned into the exported subnet's config.

    ``model`` becomes ``DMSSubnet(architecture=<the supernet>, subnet=<dir>/subnet.json)``; the
    search hooks (:data:`SEARCH_HOOKS`) and the optimizer's structure-parameter custom keys are
    dropped; ``load_from`` is ``<dir>/pruned.pth``, or nothing with ``reinit`` (DMS_np retrains
    from a fresh initialisation). Data, schedule, evaluators and runtime stay as they are.
    """
    cfg = copy.deepcopy(cfg)
    search = cfg.model
    model = dict(_scope_=search.get('_scope_', 'mmrazor'), type='DMSSubnet',
                 architecture=strip_pretrained(copy.deepcopy(search.architecture)),
                 subnet=f'{HERE}/subnet.json')
    if search.get('data_preprocessor') is not None:
        model['data_preprocessor'] = copy.deepcopy(search.data_preprocessor)
    cfg.model = model
    if cfg.get('custom_hooks') is not None:
        cfg.custom_hooks = [h for h in cfg.custom_hooks if _type_name(h) not in SEARCH_HOOKS]
    custom_keys = cfg.get('optim_wrapper', {}).get('paramwise_cfg', {}).get('custom_keys')
    if custom_keys:
        cfg.optim_wrapper.paramwise_cfg.custom_keys = {
            k: v for k, v in custom_keys.items() if not any(s in k for s in STRUCTURE_KEYS)}
    for key in ('mutator', 'architecture', 'work_dir'):
        cfg.pop(key, None)
    cfg.load_from = None if reinit else f'{HERE}/pruned.pth'
    cfg.resume = False
    return cfg
