# Copyright (c) mmdms contributors. All rights reserved.
"""mmdms's own registry: the family adapters (:mod:`mmdms.models.adapters`).

Everything else registers in the OpenMMLab registries it belongs to (mmrazor's ``MODELS`` and
``TASK_UTILS``, mmengine's ``HOOKS``, mmpretrain's ``DATASETS``).
"""
from mmengine.registry import Registry

#: Family adapters: one registered class per module type that needs more than the layer rules.
ADAPTERS = Registry('dms family adapter', scope='mmdms')
