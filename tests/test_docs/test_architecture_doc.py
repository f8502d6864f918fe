# Copyright (c) mmdms contributors. All rights reserved.
"""The worked examples of docs/architecture.md, run as written: a layer type (InstanceNorm2d)
and a model family (a user's residual block) defined outside the package search and export
exactly, and a resource type added by an estimator subclass counts what the exported model
computes."""
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn

import mmdms  # noqa: F401  (compat shims before mmrazor is imported)
from mmdms.apis import hard_mask_difference, set_random_structure
from mmdms.models import DMSSubnet
from mmdms.models.architectures import RemovedBlock
from mmdms.models.layer_rules import LAYER_RULES
from mmdms.structures import subnet_from_algorithm
from mmdms.utils import count_macs, count_params

DOC = osp.join(osp.dirname(__file__), '..', '..', 'docs', 'architecture.md')
SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope='module')
def doc():
    """The namespace the page's ```python blocks leave, run in order."""
    with open(DOC) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
    assert len(blocks) == 4
    namespace = {'__name__': 'architecture_doc'}
    for block in blocks:
        exec(compile(block, DOC, 'exec'), namespace)
    yield namespace
    from mmdms.registry import ADAPTERS
    ADAPTERS._module_dict.pop('StyleBlockAdapter', None)
    LAYER_RULES.pop(nn.InstanceNorm2d, None)


def search_of(doc, seed, **kwargs):
    torch.manual_seed(seed)
    search = doc['DMS'](doc['StyleNet'](), mutator=dict(type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=SHAPE, tracer_type='FxTracer')), **kwargs)
    g = torch.Generator().manual_seed(seed)
    set_random_structure(search, g)
    with torch.no_grad():
        for module in search.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.uniform_(-0.5, 0.5, generator=g)
    return search


def export(doc, search):
    subnet = subnet_from_algorithm(search)
    architecture = doc['StyleNet']()
    architecture.load_state_dict(search.architecture.state_dict())
    return subnet, DMSSubnet(architecture, subnet)


def test_the_new_layer_type_is_searched(doc):
    search = search_of(doc, 0)
    norms = [m for m in search.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(isinstance(m, doc['DMSInstanceNorm2d']) for m in norms)
    assert search.space.weight_coverage == 1.0
    assert list(search.space.stages) == ['stage.0-2']


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_searched_and_exported_exactly(doc, seed):
    search = search_of(doc, seed)
    subnet, static = export(doc, search)
    assert any(layer['kept_out'] is not None for layer in subnet['layers'].values())
    removed = subnet['removed_blocks']
    assert sum(isinstance(m, RemovedBlock) for m in static.modules()) == len(removed)
    assert count_macs(static.architecture, SHAPE) == subnet['macs']
    assert count_params(static.architecture) == subnet['params']
    assert hard_mask_difference(search, static, (2, ) + SHAPE[1:]) < 1e-5


def test_without_the_rule_the_layer_type_breaks_the_space(doc, monkeypatch):
    """The rule is what makes the layer type work: without it MMRazor's pruning check keeps no
    width through the norms (here: none at all) and the estimator does not count them."""
    monkeypatch.delitem(LAYER_RULES, nn.InstanceNorm2d)
    search = search_of(doc, 1)
    assert search.space.widths == {} and search.space.weight_coverage == 0.0
    subnet, static = export(doc, search)
    assert count_macs(static.architecture, SHAPE) > subnet['macs']


def test_the_new_resource_counts_the_exported_model(doc):
    search = search_of(doc, 2, resource_estimator=dict(type='ActivationEstimator'))
    counted = search.estimator.estimate('activations', hard=True).item()
    _, static = export(doc, search)
    elements = []
    hooks = [m.register_forward_hook(lambda mod, args, out: elements.append(out[0].numel()))
             for m in static.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    static.eval()(torch.zeros(SHAPE))
    for hook in hooks:
        hook.remove()
    assert counted == sum(elements)
    full = search.supernet_resource('activations')
    assert counted < full
    search.set_resource_constraint('activations', 0.5 * full)
    assert search.resource_loss()['loss_resource'].item() >= 0
