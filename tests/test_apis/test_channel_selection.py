# Copyright (c) mmdms contributors. All rights reserved.
"""set_kept_channels: a channel selection made elsewhere (e.g. by Torch-Pruning) becomes the
search model's structure, and the export keeps exactly those channels of the supernet."""
import os.path as osp

import pytest
import torch
from mmengine.runner.checkpoint import _load_checkpoint

from mmdms.apis import (build_search_model, export_subnet, load_config, set_kept_channels,
                        width_producers)
from mmdms.structures import load_subnet

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MBV2 = osp.join(REPO, 'configs', 'dms', 'fmnist', 'mbv2_search.py')


@pytest.fixture(scope='module')
def search():
    return build_search_model(load_config(MBV2))


def random_selection(search, seed=0):
    g = torch.Generator().manual_seed(seed)
    kept = {}
    for key, layer in width_producers(search).items():
        n = search.space.widths[key].mutable.num_channels
        count = int(torch.randint(1, n + 1, (1, ), generator=g))
        kept[layer] = sorted(torch.randperm(n, generator=g)[:count].tolist())
    return kept


def test_the_export_keeps_exactly_the_selected_channels(search, tmp_path):
    kept = random_selection(search)
    set_kept_channels(search, kept)
    assert all(m.current_choice == m.num_elements for m in search.space.depth_mutables())
    path = str(tmp_path / 'state.pth')
    torch.save(dict(state_dict=search.state_dict()), path)
    result = export_subnet(MBV2, path, str(tmp_path / 'subnet'))  # checks static == masked
    subnet = load_subnet(result['files']['subnet.json'])
    for key, layer in width_producers(search).items():
        assert subnet['widths'][key]['indices'] == kept[layer]
    # the expand conv of a block keeps the selected rows of the supernet's weight
    state = _load_checkpoint(result['files']['pruned.pth'], map_location='cpu')['state_dict']
    name = 'backbone.layer2.1.conv.0.conv'
    expected = search.architecture.state_dict()[f'{name}.weight'][kept[name]]
    rows_in = kept['backbone.layer2.0.conv.2.conv']
    assert torch.equal(state[f'architecture.{name}.weight'], expected[:, rows_in])


def test_a_bad_selection_is_one_clear_error(search):
    kept = random_selection(search, seed=1)
    layer = 'backbone.conv2.conv'
    with pytest.raises(KeyError, match=f'produced by {layer}'):
        set_kept_channels(search, {k: v for k, v in kept.items() if k != layer})
    with pytest.raises(ValueError, match=r'distinct indices in \[0, 256\)'):
        set_kept_channels(search, dict(kept, **{layer: [0, 0, 1]}))
    with pytest.raises(ValueError, match=r'distinct indices in \[0, 256\)'):
        set_kept_channels(search, dict(kept, **{layer: [256]}))
