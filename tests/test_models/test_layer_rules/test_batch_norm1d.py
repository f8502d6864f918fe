# Copyright (c) mmdms contributors. All rights reserved.
"""``BatchNorm1d``'s layer rule: MMRazor's pruning check slices it (its pruned copy knew only
BatchNorm2d, so every width through a BatchNorm1d was left unsearched: LeViT's linear +
BatchNorm1d layers, 1% of its weights searched), and the export slices its statistics."""
import torch
import torch.nn as nn

from mmdms.models.layer_rules import BatchNorm1dRule, rule_for
# after mmdms, whose shims let mmpretrain and mmrazor import on this torch
from mmpretrain.models.backbones.levit import MLP  # noqa: E402,I100
from mmrazor.models.architectures.dynamic_ops import DynamicBatchNorm1d  # noqa: E402
from mmrazor.registry import MODELS  # noqa: E402


class TokenMLP(nn.Module):
    """A patch embedding and one residual LeViT MLP (linear + BatchNorm1d on ``(B * N, C)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.mlp = MLP(16, 2)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = x + self.mlp(x)
        return self.head(x.mean(dim=1))


def test_batch_norm1d_has_a_rule_with_mmrazors_check_op():
    rule = rule_for(nn.BatchNorm1d(8))
    assert isinstance(rule, BatchNorm1dRule) and rule.check_op is DynamicBatchNorm1d
    assert not isinstance(rule_for(nn.BatchNorm2d(8)), BatchNorm1dRule)


def test_widths_through_linear_and_batch_norm1d_are_searched():
    torch.manual_seed(0)
    model = TokenMLP().eval()
    reference = TokenMLP().eval()
    reference.load_state_dict(model.state_dict())
    mutator = MODELS.build(dict(_scope_='mmrazor', type='DMSMutator', parse_cfg=dict(
        type='ChannelAnalyzer', demo_input=(1, 3, 16, 16), tracer_type='FxTracer')))
    mutator.prepare_from_supernet(model)
    layers = {name for width in mutator.space.widths.values() for name in width.layers}
    # the stream (embed, linear2 + its BatchNorm1d) and the hidden width (linear1 + its norm)
    assert {'embed', 'mlp.linear1.linear', 'mlp.linear1.bn', 'mlp.linear2.linear',
            'mlp.linear2.bn', 'head'} <= layers, mutator.summary()
    for mutable in mutator.dms_mutables():
        mutable.fix_chosen()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_batch_norm1d_on_tokens_is_sliced_to_its_kept_channels():
    g = torch.Generator().manual_seed(0)
    norm = nn.BatchNorm1d(6).eval()
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1, generator=g)
        norm.running_var.uniform_(0.5, 2, generator=g)
        norm.weight.uniform_(0.5, 1.5, generator=g)
        norm.bias.uniform_(-1, 1, generator=g)
    x = torch.randn(2 * 5, 6, generator=g)  # LeViT's (B * N, C) tokens
    expected = norm(x)[:, [0, 2, 5]]
    pruned = nn.BatchNorm1d(6).eval()
    pruned.load_state_dict(norm.state_dict())
    rule_for(pruned).prune(pruned, [0, 2, 5], [0, 2, 5], 'bn')
    assert pruned.num_features == 3
    with torch.no_grad():
        torch.testing.assert_close(pruned(x[:, [0, 2, 5]]), expected)
