# Copyright (c) mmdms contributors. All rights reserved.
"""MMRazor's GroupFisher (run from the installed package) pruned to a DMS budget: the channels
it keeps, carried into the DMS search model, export a static subnet that computes what
GroupFisher's pruned model computes, at the budget's MACs as FlopAnalyzer counts them."""
import pytest
import torch
from mmengine.config import Config
from mmpretrain.structures import DataSample
from oneshot_test_utils import REPO, tiny_evolution_config

from mmdms.apis import (build_architecture, build_search_model, dmcp_search, group_fisher_prune,
                        load_config, static_subnet)
from mmdms.utils import count_macs


def tiny_search_config():
    cfg = Config.fromfile(f'{REPO}/configs/dms/fmnist/mbv2_search.py')
    cfg.model.architecture = tiny_evolution_config().model.architecture
    return load_config(cfg)


def batches(size=8):
    g = torch.Generator().manual_seed(0)
    while True:
        yield dict(inputs=[torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=g)
                           for _ in range(size)],
                   data_samples=[DataSample().set_gt_label(i % 10) for i in range(size)])


def test_group_fisher_subnet_is_exact_at_the_budget():
    cfg = tiny_search_config()
    search, architecture = build_search_model(cfg), build_architecture(cfg)
    target = 0.6 * search.estimator.estimate('macs', hard=True).item()
    found = group_fisher_prune(search, architecture, batches(), target,
                               lambda params: torch.optim.SGD(params, lr=0.01), interval=1,
                               tolerance=0.01, demo_input=(1, 1, 28, 28))
    assert found['pruned'] == found['iters'] > 0
    assert target * 0.95 <= found['macs'] <= target * 1.01
    static = static_subnet(search, cfg).eval()
    assert count_macs(static, (1, 1, 28, 28)) == found['macs']
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = found['algorithm'].architecture(x, mode='tensor')
        actual = static(x, mode='tensor')
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    kept = [len(k) for k in found['kept'].values()]
    full = [g.mutable.num_channels for g in search.space.widths.values()]
    assert sum(kept) == sum(full) - found['pruned']  # one channel per pruning


def test_an_unreached_budget_says_so_also_after_an_mmpretrain_runner():
    from mmengine.registry import DefaultScope
    cfg = tiny_search_config()
    search, architecture = build_search_model(cfg), build_architecture(cfg)
    # a Runner of an mmpretrain config leaves mmpretrain the default scope, where MMRazor's
    # algorithms did not find their mutators by name
    with DefaultScope.overwrite_default_scope('mmpretrain'), \
            pytest.raises(RuntimeError, match='above the target'):
        group_fisher_prune(search, architecture, batches(), 1.0,
                           lambda params: torch.optim.SGD(params, lr=0.01), interval=1,
                           demo_input=(1, 1, 28, 28), max_iters=3)


def test_dmcp_expected_widths_scaled_onto_the_budget():
    from mmengine.registry import DefaultScope
    cfg = tiny_search_config()
    search, architecture = build_search_model(cfg), build_architecture(cfg)
    target = 0.5 * search.estimator.estimate('macs', hard=True).item()
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # as after a Runner
        found = dmcp_search(search, architecture, batches(), target, iters=6,
                            weight_optimizer=lambda params: torch.optim.SGD(params, lr=0.01),
                            arch_start_train=2, arch_train_freq=2, distillation_times=4,
                            demo_input=(1, 1, 28, 28))
    assert found['algorithm'].arch_train  # the architecture parameters were trained
    assert abs(found['macs'] / target - 1) <= 0.02
    assert count_macs(static_subnet(search, cfg), (1, 1, 28, 28)) == found['macs']
    for key, group in search.space.widths.items():
        kept = group.mutable.kept_channel_indices()
        assert sorted(kept) == list(range(len(kept)))  # DMCP keeps the first channels
        assert 1 <= found['expected'][key] <= group.mutable.num_channels
    assert all(m.num_kept == m.num_elements for m in search.space.depth_mutables())


def test_dmcp_log_l1_flops_loss_pulls_below_the_target_so_l1_is_the_default():
    """MMRazor 1.0.0's ``log_l1`` compares FLOPs with ``0.95 * target_flops`` in MFLOPs: at half
    the target its gradient still lowers the FLOPs; ``l1`` raises them back."""
    import inspect
    from types import SimpleNamespace

    from mmrazor.models.algorithms.pruning.dmcp import DMCP
    grads = {}
    for kind in ('log_l1', 'l1'):
        flops = torch.tensor(0.5e6, requires_grad=True)  # half of the 1 MFLOPs target
        own = SimpleNamespace(target_flops=1.0, flops_loss_type=kind, flop_loss_weight=1.0)
        DMCP._compute_flops_loss(own, flops).backward()
        grads[kind] = flops.grad.item()
    assert grads['log_l1'] > 0 > grads['l1']  # descent: log_l1 lowers, l1 raises the FLOPs
    assert inspect.signature(dmcp_search).parameters['flops_loss_type'].default == 'l1'


def test_units_map_onto_every_width_of_a_supernet_with_several_residual_stages():
    """The traced graph's residual adds (``'<built-in function add>'``, one per unit of every
    residual stage) are not layers: they map onto no width and do not collide."""
    from mmengine.registry import DefaultScope
    from mmrazor.implementations.pruning.group_fisher import GroupFisherChannelMutator

    from mmdms.apis import kept_channels_of_units, width_producers
    cfg = load_config(f'{REPO}/configs/dms/fmnist/mbv2_search.py')
    search, architecture = build_search_model(cfg), build_architecture(cfg)
    with DefaultScope.overwrite_default_scope('mmrazor'):
        mutator = GroupFisherChannelMutator(parse_cfg=dict(
            type='ChannelAnalyzer', demo_input=(1, 1, 28, 28), tracer_type='FxTracer'))
        mutator.prepare_from_supernet(architecture)
    adds = [c for u in mutator.units for c in u.output_related if 'add' in c.name]
    assert len(adds) >= 2
    kept = kept_channels_of_units(search, mutator.units)
    assert set(kept) == set(width_producers(search).values())
    assert all(kept[layer] == list(range(group.mutable.num_channels))
               for layer, group in zip(width_producers(search).values(),
                                       search.space.widths.values()))


@pytest.mark.parametrize('batch_stats', [True, False])
def test_dmcp_architecture_step_normalises_with_the_batch(batch_stats):
    """Running statistics that do not fit the largest network (as a sandwich's mixed widths
    leave them) are what MMRazor's eval-mode architecture step normalises with; with
    ``arch_step_batch_stats`` the step's loss is that of the network normalised with the
    batch's statistics, and the running statistics are left as they were."""
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    from mmengine.registry import DefaultScope
    from torch.nn.modules.batchnorm import _BatchNorm
    cfg = tiny_search_config()
    search, architecture = build_search_model(cfg), build_architecture(cfg)
    target = 0.5 * search.estimator.estimate('macs', hard=True).item()
    sgd = lambda params: torch.optim.SGD(params, lr=0.01)  # noqa: E731
    with DefaultScope.overwrite_default_scope('mmrazor'):
        algorithm = dmcp_search(search, architecture, batches(), target, iters=1,
                                weight_optimizer=sgd, arch_start_train=10,
                                arch_step_batch_stats=batch_stats,
                                demo_input=(1, 1, 28, 28))['algorithm']
        norms = [m for m in algorithm.architecture.modules() if isinstance(m, _BatchNorm)]
        for norm in norms:  # statistics of other widths: far from the largest network's
            norm.running_mean.fill_(3.0)
            norm.running_var.fill_(1e-2)
        data = algorithm.data_preprocessor(next(batches()), True)
        algorithm.set_subnet('max', arch_train=False)
        reference = {}
        with torch.no_grad():
            algorithm.eval()
            reference['running'] = algorithm.architecture(
                data['inputs'], data['data_samples'], mode='loss')['loss'].item()
            for norm in norms:
                norm.train()
                norm.momentum = 0.0
            reference['batch'] = algorithm.architecture(
                data['inputs'], data['data_samples'], mode='loss')['loss'].item()
            for norm in norms:
                norm.momentum = 0.1
        arch = list(algorithm.mutator.arch_params.parameters())
        wrappers = OptimWrapperDict(architecture=OptimWrapper(sgd(architecture.parameters())),
                                    mutator=OptimWrapper(torch.optim.Adam(arch, lr=0.5)))
        algorithm.train()
        losses = algorithm._update_arch_params(data['inputs'], data['data_samples'], wrappers)
    assert abs(reference['running'] - reference['batch']) > 0.1  # the statistics matter here
    expected = reference['batch' if batch_stats else 'running']
    assert losses['arch.loss'].item() == pytest.approx(expected, rel=1e-5)
    assert algorithm.training and all(norm.training for norm in norms)
    assert all(norm.momentum == 0.1 for norm in norms)
    assert all((norm.running_mean == 3.0).all() and (norm.running_var == 1e-2).all()
               for norm in norms)


def test_widths_scaled_to_a_budget_step_into_the_band_where_the_factor_jumps_over_it():
    """Planned widths of 2 channels round together (``round(f * 2)`` is 0, 1 or 2 in every group
    at once), so no factor lands between the all-1 and all-2 structures; one element at a time
    does."""
    from mmdms.apis.mmrazor_pruning import scale_widths_to
    search = build_search_model(tiny_search_config())
    widths = {key: 2 for key, group in search.space.widths.items()
              if group.mutable.num_elements >= 2}

    def cost_with_all(kept):
        for key in widths:
            search.space.widths[key].mutable.set_kept(kept)
        return float(search.estimator.estimate('macs', hard=True))

    for mutable in search.space.depth_mutables():
        mutable.set_kept(mutable.num_elements)
    low, high = cost_with_all(1), cost_with_all(2)
    target = (low + high) / 2
    assert min(abs(low - target), abs(high - target)) > 0.02 * target
    macs = scale_widths_to(search, widths, target, tolerance=0.02)
    assert abs(macs - target) <= 0.02 * target
    assert macs == float(search.estimator.estimate('macs', hard=True))  # the structure set
    kept = [search.space.widths[key].mutable.num_kept for key in widths]
    assert set(kept) <= {1, 2, 3} and max(kept) - min(kept) <= 2
