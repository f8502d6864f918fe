# Copyright (c) mmdms contributors. All rights reserved.
"""prune_to_subnet on small models: concatenated groups, depthwise convs, pruned attention, and
the errors of a subnet that does not fit."""
import copy
import json

import pytest
import torch
import torch.nn as nn

import mmdms  # noqa: F401  (compat shims before mmpretrain is imported)
from dms_test_utils import randomize_structure
from mmengine.model import BaseModel
from mmpretrain.models.utils.attention import MultiheadAttention
from mmdms.apis import hard_mask_difference
from mmdms.models import DMS, DMSSubnet
from mmdms.models.architectures import (PrunedCSPLayerWithTwoConv, PrunedMultiheadAttention,
                                       RemovedBlock)
from mmdms.models.mutables import DMSMutableChannel
from mmdms.models.adapters import FamilyAdapter
from mmdms.models.adapters.vision_transformer import DMSMultiheadAttention
from mmdms.registry import ADAPTERS
from mmdms.structures import (SubnetError, check_subnet_fits, dump_subnet,
                              load_subnet, prune_layer, prune_to_subnet, subnet_from_algorithm)
from mmdms.utils import count_macs, count_params


class Net(BaseModel):
    """Two concatenated branches, then a depthwise and a pointwise conv, pooling, a linear."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(14, 14, 3, padding=1, groups=14), nn.BatchNorm2d(14))
        self.pw = nn.Conv2d(14, 10, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(10, 4)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        y = self.pw(torch.relu(self.dw(torch.cat([self.a(inputs), self.b(inputs)], dim=1))))
        return self.head(self.pool(y).flatten(1))


def search_model(architecture):
    return DMS(architecture, mutator=dict(
        type='DMSMutator', parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 3, 16, 16),
                                          tracer_type='FxTracer')))


def test_concatenated_groups_and_depthwise_conv():
    torch.manual_seed(0)
    plain = Net()
    search = randomize_structure(search_model(copy.deepcopy(plain)), seed=5).eval()
    subnet = subnet_from_algorithm(search)
    assert subnet['layers']['pw']['kept_in'] is not None  # something to slice
    plain.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(plain, subnet).eval()
    dw = static.architecture.dw[0]
    assert dw.groups == dw.in_channels == dw.out_channels == \
        static.architecture.a[0].out_channels + static.architecture.b[0].out_channels
    assert count_params(static) == subnet['params']
    assert count_macs(static, subnet['input_shape']) == subnet['macs']
    for mutable in search.dms_mutables():
        mutable.fix_chosen()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(static(x), search(x), rtol=1e-5, atol=1e-6)


def test_pruned_attention_computes_the_hard_masked_attention():
    torch.manual_seed(0)
    attn = MultiheadAttention(embed_dims=12, num_heads=3).eval()
    masked = copy.deepcopy(attn)
    masked.__class__ = DMSMultiheadAttention
    mutables = [DMSMutableChannel(n) for n in (3, 4, 4)]  # heads, qk dims, v dims
    for mutable, kept in zip(mutables, (2, 3, 1)):
        mutable.importance.copy_(torch.rand(mutable.num_channels))
        mutable.set_kept(kept)
        mutable.fix_chosen()
    masked.set_dms_masks(*mutables)
    heads, qk, v = (m.hard_mask for m in mutables)
    qk_out, v_out = (heads[:, None] * qk).flatten(), (heads[:, None] * v).flatten()
    kept_out = torch.cat([qk_out, qk_out, v_out]).nonzero().flatten().tolist()
    prune_layer(attn.qkv, None, kept_out)
    prune_layer(attn.proj, v_out.nonzero().flatten().tolist(), None)
    pruned = PrunedMultiheadAttention.convert_from(attn, 2, 3, 1)
    assert pruned.scale == 4**-0.5  # the supernet's head dims
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), rtol=1e-5, atol=1e-6)
    assert count_macs(pruned, (1, 5, 12)) == 5 * 12 * 2 * (3 + 3 + 1) + 5 * 2 * 12 + \
        2 * 5 * 5 * (3 + 1)  # qkv + proj + heads * N^2 * (qk + v)


def test_removed_block_is_the_identity_of_its_first_input():
    x = torch.randn(3)
    assert RemovedBlock()(x, 'ignored', key=1) is x


def test_a_subnet_that_does_not_fit_names_every_mismatch(tmp_path):
    torch.manual_seed(0)
    search = randomize_structure(search_model(Net()), seed=1)
    subnet = subnet_from_algorithm(search)
    other = Net()
    other.pw = nn.Conv2d(14, 12, 1)
    other.head = nn.Linear(12, 4)
    del other.b
    with pytest.raises(SubnetError) as error:
        check_subnet_fits(other, subnet)
    message = str(error.value)
    assert "'pw' has (14, 12)" in message and "'head' has (12, 4)" in message
    assert "no layer 'b.0'" in message and 'another config' in message

    path = str(tmp_path / 'subnet.json')
    dump_subnet(subnet, path)
    assert load_subnet(path) == json.loads(json.dumps(subnet))
    with open(path, 'w') as f:
        json.dump(dict(macs=1), f)
    with pytest.raises(SubnetError, match='not a DMS subnet'):
        load_subnet(path)


def test_grouped_conv_is_refused():
    conv = nn.Conv2d(12, 12, 3, groups=3)
    with pytest.raises(SubnetError, match='grouped conv'):
        prune_layer(conv, [0, 1, 2], [0, 1, 2], 'conv')
    prune_layer(conv, None, None, 'conv')  # unpruned: fine


def test_static_rules_run_on_their_modules(monkeypatch):
    torch.manual_seed(0)
    search = randomize_structure(search_model(Net()), seed=2)
    subnet = subnet_from_algorithm(search)
    calls = []

    class PoolAdapter(FamilyAdapter):
        module_type = nn.AdaptiveAvgPool2d

        def static_rule(self, module, name, spec):
            calls.append((name, spec is subnet))

    monkeypatch.setitem(ADAPTERS._module_dict, 'PoolAdapter', PoolAdapter)
    prune_to_subnet(Net(), subnet)
    assert calls == [('pool', True)]


def test_a_static_model_that_fails_to_run_is_a_subnet_error():

    class Search(nn.Module):

        def dms_mutables(self):
            return []

        def forward(self, x, mode='tensor'):
            return x

    class Broken(nn.Module):

        def forward(self, x, mode='tensor'):
            raise RuntimeError('split_with_sizes expects split_sizes to sum exactly to 12')

    with pytest.raises(SubnetError, match='FamilyAdapter.static_rule'):
        hard_mask_difference(Search(), Broken(), (1, 3))


class CSPNet(BaseModel):
    """A stem conv, then mmyolo's CSPLayerWithTwoConv with two shortcut bottlenecks."""

    def __init__(self):
        super().__init__()
        from mmyolo.models.layers.yolo_bricks import CSPLayerWithTwoConv
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.csp = CSPLayerWithTwoConv(8, 12, num_blocks=2, add_identity=True)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.csp(self.stem(inputs))


def test_csp_layer_splits_at_the_kept_widths_of_its_halves():
    torch.manual_seed(0)
    plain = CSPNet()
    search = randomize_structure(search_model(copy.deepcopy(plain)), seed=1).eval()
    subnet = subnet_from_algorithm(search)
    plain.load_state_dict(search.architecture.state_dict())
    static = DMSSubnet(plain, subnet).eval()
    csp = static.architecture.csp
    assert isinstance(csp, PrunedCSPLayerWithTwoConv)
    kept = subnet['layers']['csp.main_conv.conv']['kept_out']
    assert csp.split_sizes == (sum(i < 6 for i in kept), sum(i >= 6 for i in kept))
    assert csp.split_sizes[0] != csp.split_sizes[1]
    assert hard_mask_difference(search, static, (2, 3, 16, 16)) <= 1e-4
    assert count_macs(static, subnet['input_shape']) == subnet['macs']
    assert count_params(static) == subnet['params']
    assert static.state_dict().keys() == DMSSubnet(CSPNet(), subnet).state_dict().keys()
    with pytest.raises(ValueError, match='two non-empty halves'):
        PrunedCSPLayerWithTwoConv.convert_from(csp, (sum(csp.split_sizes), 0))


def test_removed_block_keeps_plain_attributes_and_names_what_it_lacks():
    """A parent may read a setting of its last block (VAN: ``block.out_channels``)."""
    block = nn.Conv2d(4, 8, 3, padding=1)
    removed = RemovedBlock.of(block, 'stages.1.3')
    assert (removed.out_channels, removed.kernel_size, removed.padding_mode) == \
        (8, (3, 3), 'zeros')
    with pytest.raises(AttributeError, match=r"'stages\.1\.3' \(Conv2d\) was removed by the "
                                             r"depth search .* no attribute 'weight'"):
        removed.weight
    assert getattr(removed, 'self_attn', None) is None  # getattr's default still works
    copied = copy.deepcopy(removed)
    assert copied.out_channels == 8 and not list(copied.parameters())
    x = torch.randn(2, 4)
    assert copied(x, (1, 2)) is x
