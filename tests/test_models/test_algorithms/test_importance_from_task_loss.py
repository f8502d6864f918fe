# Copyright (c) mmdms contributors. All rights reserved.
"""``DMS(importance_from_task_loss=True)``: the Taylor importance statistic is the task loss's
alone, while the structure ratios still get the resource loss's gradient; by default the
statistic includes the resource loss's ``dL/dm`` (so the option changes something)."""
import torch
from mmengine.config import Config
from mmpretrain.structures import DataSample

from mmdms.apis import build_search_model, load_config
from oneshot_test_utils import REPO, tiny_evolution_config


def step(task_only: bool, with_resource: bool):
    """Statistics and ratio gradients of one loss + backward of a tiny Fashion-MNIST search."""
    cfg = Config.fromfile(f'{REPO}/configs/dms/fmnist/mbv2_search.py')
    cfg.model.architecture = tiny_evolution_config().model.architecture
    cfg = load_config(cfg, {'model.importance_from_task_loss': task_only})
    torch.manual_seed(0)
    model = build_search_model(cfg).train()
    if with_resource:
        model.resource_target = 0.25 * model.estimator.estimate('macs', hard=True).item()
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(8, 1, 28, 28, generator=g)
    samples = [DataSample().set_gt_label(i % 10) for i in range(8)]
    losses = model.loss(inputs, samples)
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    mutables = model.dms_mutables()
    return ([m.pop_mask_grad_statistic() for m in mutables],
            [m.dms_ratio.grad.clone() for m in mutables])


def test_task_only_importance_ignores_the_resource_loss_but_the_ratios_do_not():
    task_stats, task_grads = step(task_only=True, with_resource=False)
    only_stats, only_grads = step(task_only=True, with_resource=True)
    both_stats, both_grads = step(task_only=False, with_resource=True)
    for task, only in zip(task_stats, only_stats):
        torch.testing.assert_close(only, task)
    assert any(not torch.allclose(both, task) for both, task in zip(both_stats, task_stats))
    for only, both in zip(only_grads, both_grads):
        torch.testing.assert_close(only, both)  # the resource loss trains the ratios alike
    assert any(not torch.allclose(only, task) for only, task in zip(only_grads, task_grads))
