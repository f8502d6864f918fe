# Copyright (c) mmdms contributors. All rights reserved.
"""Checks shared by the tests (importable because tests/ holds the root conftest.py)."""
import importlib.util
import os.path as osp
from types import ModuleType

import torch
from mmengine.model import BaseModel

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_script(*path: str) -> ModuleType:
    """A file of the repository that is not in a package (a benchmark, a tool, another test),
    imported as a module; ``path`` is relative to the repository root."""
    spec = importlib.util.spec_from_file_location(
        osp.splitext(path[-1])[0], osp.join(REPO, *path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def last_output(out):
    """A model's tensor output, or the last of a backbone's tuple of outputs."""
    return out[-1] if isinstance(out, (tuple, list)) else out


def assert_head_ratios_get_gradients(model, shape, count):
    """Every searched head and head-dim ratio of ``model``'s DMS search model (``count`` of them)
    gets a non-zero gradient from a random projection of the outputs of a random structure."""
    from mmdms.apis import set_random_structure
    from mmdms.models import DMS
    search = DMS(model, mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=tuple(shape), tracer_type='FxTracer'))).eval()
    g = torch.Generator().manual_seed(0)
    set_random_structure(search, g)
    out = last_output(search(torch.randn(shape, generator=g), mode='tensor'))
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    ratios = [(f'{name}.{part}', getattr(att, part).dms_ratio)
              for name, att in search.space.attentions.items()
              for part in ('heads', 'qk_dims', 'v_dims')
              if not getattr(getattr(att, part), 'fixed', False)]
    assert len(ratios) == count
    for name, ratio in ratios:
        assert ratio.grad is not None and ratio.grad.abs().sum() > 0, name


def run_tensor_mode(model, x):
    """Forward an OpenMMLab model in ``tensor`` mode, a plain module as is."""
    return last_output(model(x, mode='tensor') if isinstance(model, BaseModel) else model(x))


def assert_hard_ones_reproduce(model, reference, mutables, shape, rtol=1e-5):
    """With every DMS mask fixed hard (all kept), ``model`` computes what ``reference`` does."""
    for mutable in mutables:
        if not mutable.is_fixed:
            mutable.fix_chosen()
    x = torch.randn(shape)
    with torch.no_grad():
        out, expected = run_tensor_mode(model, x), run_tensor_mode(reference, x)
    assert torch.allclose(out, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def build_search_model(config, size=None, **overrides):
    """The DMS search model of a config file, built as the Runner builds it, traced at
    ``size`` x ``size`` (default: the config's own ``demo_input``)."""
    import copy

    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(config)
    model_cfg = copy.deepcopy(cfg.model)
    if size is not None:
        model_cfg.mutator.parse_cfg.demo_input = (1, 3, size, size)
    model_cfg.update(overrides)
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return MODELS.build(model_cfg)


def randomize_structure(model, seed=0):
    """A random searched structure: random importance and kept count of every DMS mutable, and
    random BatchNorm statistics and affine parameters (so that slicing them is checked)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mutable in model.dms_mutables():
            mutable.importance.copy_(torch.rand(mutable.importance.shape, generator=g))
            low, high = mutable.min_elements, mutable.num_elements
            mutable.set_kept(int(torch.randint(low, high + 1, (1, ), generator=g)))
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5, generator=g)
                module.running_var.uniform_(0.5, 2.0, generator=g)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5, generator=g)
                    module.bias.uniform_(-0.5, 0.5, generator=g)
    return model


def digits_search_config(work_dir, epochs=2, width_only=1, samples=64, batch_size=16, **hooks):
    """configs/dms/demo/digits_search.py shrunk to ``samples`` training images per epoch
    (``samples / batch_size`` iterations) and ``epochs`` epochs, ``width_only`` of them
    width-only; validation on 40 images at the end only. ``hooks`` override the config's hook
    arguments by type, e.g. ``ResourceLossHook=dict(lambda_resource=2.0)``."""
    import os.path as osp

    from mmengine.config import Config
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    cfg = Config.fromfile(osp.join(repo, 'configs', 'dms', 'demo', 'digits_search.py'))
    cfg.train_dataloader.dataset.indices = samples
    cfg.train_dataloader.batch_size = batch_size
    cfg.val_dataloader.dataset.indices = 40
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    for hook in cfg.custom_hooks:
        if hook['type'] == 'ResourceLossHook':
            hook['width_only_epochs'] = width_only
        hook.update(hooks.get(hook['type'], {}))
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = work_dir
    return cfg


class MacsTimer:
    """A fake, deterministic latency timer (``timer(module, x) -> ms``) for the latency model.

    One call of ``module(x)`` "takes" ``ms_per_mac`` per multiply-add plus ``ms_per_layer`` for
    every conv / linear call in it; a whole model (the estimator's
    :class:`~mmdms.models.task_modules.latency_model.TensorModeForward`) takes ``unexplained``
    times that plus ``whole_per_layer`` per conv / linear call, as norms, activations and Python
    would add on a real device. Under this timer the per-layer latency model is exact
    (``a + b * x_in * x_out`` is in its basis) and the ``'per_layer'`` correction makes the
    estimator exact for every static subnet (``'scale'`` too when ``whole_per_layer`` is 0).
    """

    def __init__(self, ms_per_mac=1e-6, ms_per_layer=0.02, unexplained=1.5,
                 whole_per_layer=0.0):
        self.ms_per_mac = ms_per_mac
        self.ms_per_layer = ms_per_layer
        self.unexplained = unexplained
        self.whole_per_layer = whole_per_layer
        self.calls = 0

    def __call__(self, module, x):
        from mmdms.models.task_modules.latency_model import TensorModeForward
        total, count = [0.0], [0]

        def hook(layer, args, out):
            per_output = layer.weight[0].numel()  # C_in / groups x kernel (linear: C_in)
            total[0] += self.ms_per_mac * out.numel() * per_output + self.ms_per_layer
            count[0] += 1

        layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            with torch.no_grad():
                module(x)
        finally:
            for handle in handles:
                handle.remove()
        self.calls += 1
        if isinstance(module, TensorModeForward):
            return total[0] * self.unexplained + self.whole_per_layer * count[0]
        return total[0]

    def measure(self, model, input_shape):
        """The fake latency of a whole (static) OpenMMLab model in ``tensor`` mode."""
        from mmdms.models.task_modules.latency_model import TensorModeForward
        whole = TensorModeForward(model.eval(), lambda m, x: m(x, mode='tensor'))
        return self(whole, torch.zeros(tuple(input_shape)))


def spawn_ranks(fn, args=(), nprocs=2, timeout=180):
    """Run ``fn(rank, *args)`` in ``nprocs`` spawned processes (a gloo group is theirs to set
    up); fail the test if they do not all finish within ``timeout`` seconds."""
    import time

    import pytest
    import torch.multiprocessing as mp
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False,
                                 start_method='spawn')
    deadline = time.monotonic() + timeout
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f'the {nprocs}-rank gloo run did not finish within {timeout} s')


def mmpretrain_classifier(backbone, num_classes=10, in_channels=None, neck='GlobalAveragePooling'):
    """A small mmpretrain ``ImageClassifier`` of ``backbone`` (a config dict), eval mode."""
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    cfg = dict(type='ImageClassifier', backbone=backbone,
               neck=dict(type=neck) if neck else None,
               head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=in_channels))
    return PRETRAIN_MODELS.build(cfg).eval()


def search_and_export(make_model, shape, seed=0, structure=None, **mutator):
    """The DMS search model of ``make_model()`` traced at ``shape``, a random structure
    (then changed by ``structure(search)``, if given), and its static subnet (``make_model()``
    again, loaded with the search weights, pruned to the subnet): ``(search, subnet, static)``."""
    from mmdms.models import DMS, DMSSubnet
    from mmdms.structures import subnet_from_algorithm
    from mmdms.utils import load_state_dict_strictly
    search = DMS(make_model(), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=tuple(shape), tracer_type='FxTracer'), **mutator))
    randomize_structure(search.eval(), seed=seed)
    if structure is not None:
        structure(search)
    subnet = subnet_from_algorithm(search)
    architecture = make_model()
    load_state_dict_strictly(architecture, search.architecture.state_dict())
    return search, subnet, DMSSubnet(architecture, subnet).eval()


def assert_exact_export(search, subnet, static, shape, tol=1e-4):
    """The static subnet computes what the hard-masked search model does (``tol``), and
    mmengine's FlopAnalyzer counts the MACs and parameters ``subnet`` states (0.1%)."""
    from mmdms.apis import hard_mask_difference
    from mmdms.utils import count_macs, count_params
    assert subnet['macs'] < subnet['supernet']['macs']
    assert hard_mask_difference(search, static, (2, ) + tuple(shape[1:])) <= tol
    assert abs(count_macs(static, shape) / subnet['macs'] - 1) <= 1e-3
    assert count_params(static) == subnet['params']


def mask_norm_input(dms_norm, channels, kept, generator, step=1):
    """Register on ``dms_norm`` (a norm's DMS op) an input mask that keeps ``kept`` of its
    ``channels`` (rounded up to whole blocks of ``step``) by a random importance; returns the
    boolean mask of the kept channels."""
    from mmdms.models.layer_rules.masked_forward import DMSMaskContainer
    from mmdms.models.mutables import DMSMutableChannel
    mutable = DMSMutableChannel(channels, step=step)
    mutable.importance.copy_(torch.rand(mutable.num_elements, generator=generator))
    mutable.current_choice = min(kept, channels)
    mutable.fix_chosen()
    container = DMSMaskContainer(channels)
    container.register_mutable(mutable, 0, channels)
    dms_norm.register_mutable_attr('in_channels', container)
    return mutable.hard_mask.bool()
