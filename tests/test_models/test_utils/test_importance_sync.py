# Copyright (c) mmdms contributors. All rights reserved.
"""Taylor importance: once per iteration, and identical on every data-parallel rank."""
import os

import pytest
import torch
import torch.distributed as torch_dist
import torch.nn as nn

from mmdms.models import DMSMutableBlocks, DMSMutableChannel, sync_importance
from mmdms.utils import release_process_group
from dms_test_utils import spawn_ranks


class MaskedMLP(nn.Module):
    """One hidden width shared by three consumers, and a depth mask on a residual block."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(6, width)
        self.heads = nn.ModuleList(nn.Linear(width, 3) for _ in range(3))
        self.block = nn.Linear(3, 3)
        self.width = DMSMutableChannel(width)
        self.depth = DMSMutableBlocks(1, min_blocks=0, allow_empty=True)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        y = sum(head(h * self.width.soft_mask) for head in self.heads)
        return y + self.depth.block_mask(0) * self.block(y)

    def mutables(self):
        return [self.width, self.depth]


def make_batch(seed: int, n: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randn(n, 3, generator=g)


def test_importance_updated_once_per_iteration_with_eq4():
    torch.manual_seed(0)
    model = MaskedMLP()
    x, y = make_batch(1)
    expected = torch.zeros(16)
    for it in range(3):
        # independent reference: dL/dm with the mask as a leaf, summed over the three consumers
        m_leaf = model.width.element_soft_mask().detach().clone().requires_grad_(True)
        h = torch.relu(model.fc1(x))
        out = sum(head(h * m_leaf) for head in model.heads)
        out = out + model.depth.block_mask(0).detach() * model.block(out)
        (g, ) = torch.autograd.grad(nn.functional.mse_loss(out, y), m_leaf)
        expected = 0.99 * expected + 0.01 * (m_leaf.detach() * g)**2

        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        assert model.width._grad_stat_count == 1  # one hook call for three consumers
        assert sync_importance(model.mutables()) == 2
        assert torch.allclose(model.width.importance, expected, rtol=1e-5, atol=1e-12)
        assert model.width._grad_stat_count == 0
        model.zero_grad()
    # no backward since the last update: nothing to fold in, importance unchanged
    before = model.width.importance.clone()
    assert sync_importance(model.mutables()) == 0
    assert torch.equal(model.width.importance, before)


def test_mask_is_computed_once_per_forward_and_refreshed_after_backward():
    model = MaskedMLP()
    x, y = make_batch(2)
    m1 = model.width.soft_mask
    assert model.width.soft_mask is m1  # shared by all consumers of this forward
    nn.functional.mse_loss(model(x), y).backward()
    assert model.width.soft_mask is not m1  # the backward consumed it


def test_ratio_moves_under_the_task_loss():
    """Pruning channels the task needs raises the loss: the task gradient lowers ``a``."""
    torch.manual_seed(0)
    model = MaskedMLP()
    x, _ = make_batch(3, n=256)
    with torch.no_grad():
        h = torch.relu(model.fc1(x))
        target = sum(head(h) for head in model.heads)  # the full-width network, block removed
        model.width.importance.copy_(torch.rand(16))
        model.width.dms_ratio.fill_(0.5)
        model.depth.dms_ratio.fill_(0.0)
    model.depth.fix_chosen(0)  # depth out of the way: only the width is learnt
    optimizer = torch.optim.SGD([model.width.dms_ratio], lr=0.05)
    losses, ratios = [], []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        sync_importance([model.width])
        losses.append(loss.item())
        ratios.append(float(model.width.dms_ratio))
    assert ratios[-1] < 0.5 - 0.05 and losses[-1] < losses[0]
    assert model.width.current_choice > 8


def _train_on_rank(rank: int, world: int, out_dir: str, synced: bool) -> None:
    # File rendezvous: no TCP port to pick or collide on.
    torch_dist.init_process_group('gloo', init_method=f'file://{out_dir}/rendezvous', rank=rank,
                                  world_size=world)
    torch.manual_seed(0)  # same initial weights on both ranks
    model = MaskedMLP()
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
    for it in range(6):
        x, y = make_batch(seed=100 * rank + it)  # different data per rank
        optimizer.zero_grad()
        nn.functional.mse_loss(ddp(x), y).backward()
        optimizer.step()
        if synced:
            sync_importance(model.mutables())
        else:
            for m in model.mutables():
                m.update_importance()
    torch.save({'importance': model.width.importance, 'hard': model.width.hard_mask,
                'ratio': model.width.dms_ratio.detach(),
                'depth_importance': model.depth.importance},
               os.path.join(out_dir, f'rank{rank}.pth'))
    del ddp, model, optimizer
    release_process_group()


@pytest.mark.parametrize('synced', [True, False])
def test_two_gloo_ranks_hold_identical_importance(tmp_path, synced):
    spawn_ranks(_train_on_rank, args=(2, str(tmp_path), synced))
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1))
    assert r0['importance'].abs().sum() > 0
    assert torch.equal(r0['ratio'], r1['ratio'])  # DDP averages the ratio's gradient
    if synced:
        assert torch.equal(r0['importance'], r1['importance'])
        assert torch.equal(r0['depth_importance'], r1['depth_importance'])
        assert torch.equal(r0['hard'], r1['hard'])
    else:  # the control: local updates diverge, which is what the sync prevents
        assert not torch.equal(r0['importance'], r1['importance'])
