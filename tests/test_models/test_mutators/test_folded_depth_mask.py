# Copyright (c) mmdms contributors. All rights reserved.
"""Depth masks folded into the BatchNorm that ends an inverted residual's branch
(``DMSMutator(fold_depth_masks=True)``, the default): the same outputs, ratio gradients and
Taylor statistics as mixing the block's output with its input, with no forward hook on the
block, on the Fashion-MNIST MobileNetV2-style supernet at a random soft structure."""
import torch
from mmengine.config import Config
from mmpretrain.structures import DataSample

from mmdms.apis import build_search_model, load_config, set_random_structure
from oneshot_test_utils import REPO


def soft_step(fold: bool):
    cfg = load_config(Config.fromfile(f'{REPO}/configs/dms/fmnist/mbv2_search.py'),
                      {'model.mutator.fold_depth_masks': fold})
    torch.manual_seed(0)
    model = build_search_model(cfg).train()
    set_random_structure(model, torch.Generator().manual_seed(3))
    for stage in model.space.stages.values():  # soft depth masks strictly inside (0, 1)
        with torch.no_grad():
            stage.mutable.dms_ratio.fill_(0.3)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(4, 1, 28, 28, generator=g)
    samples = [DataSample().set_gt_label(i) for i in range(4)]
    loss = model.loss(inputs, samples)['loss']
    loss.backward()
    stages = [stage.mutable for stage in model.space.stages.values()]
    hooked = sum(len(model.architecture.get_submodule(b)._forward_hooks)
                 for stage in model.space.stages.values() for b in stage.blocks)
    return (loss.detach(), [m.dms_ratio.grad.clone() for m in stages],
            [m.pop_mask_grad_statistic() for m in stages], hooked,
            [float(m.block_masks.min()) for m in stages])


def test_folded_depth_masks_compute_what_the_mixed_ones_do():
    folded, mixed = soft_step(fold=True), soft_step(fold=False)
    assert folded[3] == 0 < mixed[3]  # no block is hooked when every mask is folded
    assert all(0 < low < 1 for low in mixed[4])  # the masks are soft: the fold is exercised
    torch.testing.assert_close(folded[0], mixed[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(folded[1] + folded[2], mixed[1] + mixed[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
