# Copyright (c) mmdms contributors. All rights reserved.
"""Re-parameterisable blocks (:mod:`mmdms.models.adapters.reparameterizable`): RepVGG, MobileOne
and mmyolo's RepVGG blocks (YOLOv6, PPYOLOE+) are searched and exported in their training form,
exactly, and the pruned model still converts to its deploy form (one fused conv per block) with
the same outputs."""
import pytest
import torch

from dms_test_utils import assert_exact_export, mmpretrain_classifier, search_and_export

QUARTER = [0.25] * 4
BACKBONES = {
    'RepVGG': (dict(type='RepVGG', arch=dict(num_blocks=[1, 2, 1, 1], width_factor=QUARTER,
                                             group_layer_map=None, se_cfg=None)), 128, 32),
    'MobileOne': (dict(type='MobileOne', arch=dict(
        num_blocks=[1, 1, 1, 1], width_factor=QUARTER, num_conv_branches=[2, 2, 2, 2],
        num_se_blocks=[0, 0, 0, 0])), 128, 32),
    'YOLOv6': (dict(type='mmyolo.YOLOv6EfficientRep', deepen_factor=0.33, widen_factor=0.125,
                    out_indices=(4, )), 128, 64),
    'PPYOLOE+': (dict(type='mmyolo.PPYOLOECSPResNet', deepen_factor=0.33, widen_factor=0.125,
                      out_indices=(4, )), 128, 64),
}


@pytest.mark.parametrize('family', sorted(BACKBONES))
def test_pruned_block_converts_to_its_deploy_form(family):
    if family.startswith(('YOLO', 'PPYOLOE')):
        pytest.importorskip('mmyolo')
        import mmyolo.models  # noqa: F401  (registers mmyolo's modules)
    backbone, channels, size = BACKBONES[family]
    shape = (1, 3, size, size)

    def build():
        torch.manual_seed(0)
        return mmpretrain_classifier(backbone, in_channels=channels)

    search, subnet, static = search_and_export(build, shape, seed=0)
    assert search.space.weight_coverage >= 0.9, search.space.unsearched_layers
    assert_exact_export(search, subnet, static, shape)
    x = torch.randn((2, ) + shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        trained_form = static(x, mode='tensor')
        for module in static.architecture.modules():  # every block, as the backbones do
            if type(module).__name__ in ('RepVGGBlock', 'MobileOneBlock'):
                module.switch_to_deploy()
        deploy_form = static(x, mode='tensor')
    assert not any(type(m).__name__ in ('RepVGGBlock', 'MobileOneBlock') and not m.deploy
                   for m in static.architecture.modules())
    torch.testing.assert_close(deploy_form, trained_form, rtol=1e-4,
                               atol=1e-4 * trained_form.abs().max().item())
