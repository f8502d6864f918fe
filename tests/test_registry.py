# Copyright (c) mmdms contributors. All rights reserved.
"""``import mmdms`` registers its modules where OpenMMLab configs look for them."""
import mmdms  # noqa: F401


def test_dataset_in_mmpretrain_registry():
    from mmpretrain.registry import DATASETS
    assert DATASETS.get('DigitsDataset') is mmdms.datasets.DigitsDataset


def test_mutables_and_importance_in_mmrazor_registries():
    from mmrazor.registry import MODELS, TASK_UTILS
    from mmdms.models import DMSMutableBlocks, DMSMutableChannel
    assert MODELS.get('DMSMutableChannel') is DMSMutableChannel
    assert MODELS.get('DMSMutableBlocks') is DMSMutableBlocks
    for name in ('TaylorImportance', 'L1Importance', 'IndexImportance'):
        assert TASK_UTILS.get(name) is not None


def test_custom_imports_in_a_config(tmp_path):
    from mmengine.config import Config
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("custom_imports = dict(imports=['mmdms'], allow_failed_imports=False)\n")
    assert Config.fromfile(str(cfg_file)).custom_imports.imports == ['mmdms']


def test_algorithm_mutator_and_ops_in_mmrazor_registry():
    from mmrazor.registry import MODELS
    for name in ('DMS', 'DMSMutator', 'DMSChannelUnit', 'DMSConv2d', 'DMSLinear',
                 'DMSLayerNorm', 'DMSMaskContainer', 'DMSSubnet', 'PrunedCSPLayerWithTwoConv',
                 'PrunedMultiheadAttention', 'RemovedBlock'):
        assert MODELS.get(name) is not None, name


def test_hook_reachable_from_every_scope():
    from mmengine.registry import HOOKS
    from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS
    from mmrazor.registry import HOOKS as RAZOR_HOOKS
    for registry in (HOOKS, PRETRAIN_HOOKS, RAZOR_HOOKS):
        assert registry.get('DMSImportanceHook') is mmdms.engine.DMSImportanceHook


def test_backbone_in_mmpretrain_registry():
    from mmpretrain.registry import MODELS
    assert MODELS.get('ScalableMobileNetV2') is mmdms.models.ScalableMobileNetV2
