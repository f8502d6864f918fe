# Copyright (c) mmdms contributors. All rights reserved.
"""The static subnet of a random structure of each family's search config (configs/dms/*.py):
built by the family's retrain config from subnet.json alone (no search model, no tracing), it
computes what the hard-masked search model does (every output; a detector's per-level lists),
and mmengine's FlopAnalyzer counts the MACs subnet.json states."""
import os.path as osp

import pytest
import torch.fx
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from dms_test_utils import randomize_structure
from mmdms.apis import build_search_model, hard_mask_difference, load_config, static_subnet
from mmdms.models import DMSMutator, DMSSubnet, PrunedCSPLayerWithTwoConv, RemovedBlock
from mmdms.structures import dump_subnet, kept_section_widths, subnet_from_algorithm
from mmdms.structures.subnet_spec import layer_channels
from mmdms.utils import count_macs, count_params

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
SIZE = 64
FAMILIES = ['resnet50', 'effnet_b0', 'mobilenet_v2', 'deit_tiny', 'yolov8_n']


def _no_tracing(*args, **kwargs):
    raise AssertionError('DMSSubnet must be built from subnet.json without tracing')


@pytest.mark.parametrize('name', FAMILIES)
def test_static_subnet_of_a_random_structure(name, tmp_path, monkeypatch):
    cfg = load_config(osp.join(REPO, 'configs', 'dms', f'{name}.py'),
                      {'model.mutator.parse_cfg.demo_input': (1, 3, SIZE, SIZE)})
    search = randomize_structure(build_search_model(cfg), seed=7).eval()
    subnet = subnet_from_algorithm(search)
    assert subnet['removed_blocks'] and subnet['macs'] < 0.8 * subnet['supernet']['macs']
    path = str(tmp_path / 'subnet.json')
    dump_subnet(subnet, path)

    # the retrain config builds the model, as the Runner would, from subnet.json
    retrain = Config.fromfile(osp.join(REPO, 'configs', 'dms', f'{name}_retrain.py'))
    assert retrain.model.architecture == cfg.model.architecture  # the search supernet
    retrain.merge_from_dict({'model.subnet': path})  # as --cfg-options model.subnet=... does
    retrain.model.setdefault('data_preprocessor', retrain.get('data_preprocessor'))
    with monkeypatch.context() as patch:
        patch.setattr(torch.fx.Tracer, 'trace', _no_tracing)
        patch.setattr(DMSMutator, 'prepare_from_supernet', _no_tracing)
        with DefaultScope.overwrite_default_scope(retrain.default_scope):
            model = MODELS.build(retrain.model)
    assert isinstance(model, DMSSubnet)
    modules = dict(model.architecture.named_modules())
    assert all(isinstance(modules[n], RemovedBlock) for n in subnet['removed_blocks'])
    for layer_name, layer in subnet['layers'].items():
        if layer_name in modules:  # not in a removed block
            assert layer_channels(modules[layer_name]) == tuple(
                len(kept) if kept is not None else full for kept, full in (
                    (layer['kept_in'], layer['in_channels']),
                    (layer['kept_out'], layer['out_channels'])))
    if name == 'yolov8_n':  # main_conv's halves keep their own widths, split where they end
        csp_layers = {n: m for n, m in modules.items()
                      if isinstance(m, PrunedCSPLayerWithTwoConv)}
        assert any(m.split_sizes[0] != m.split_sizes[1] for m in csp_layers.values())
        for csp_name, csp in csp_layers.items():
            assert csp.split_sizes == kept_section_widths(
                subnet['layers'][f'{csp_name}.main_conv.conv']['kept_out'],
                (csp.mid_channels, csp.mid_channels))
    model.load_state_dict(static_subnet(search, cfg, subnet).state_dict())  # strict

    diff = hard_mask_difference(search, model, (2, 3, SIZE, SIZE))
    macs = count_macs(model, subnet['input_shape'])
    print(f"\n{name}: json macs {subnet['macs']}, FlopAnalyzer {macs:.0f} "
          f"({macs / subnet['macs'] - 1:+.4%}), params {subnet['params']}, "
          f'max relative output difference {diff:.2e}')
    assert diff <= 1e-4
    assert abs(macs / subnet['macs'] - 1) <= 0.005
    assert count_params(model) == subnet['params']
