# Copyright (c) mmdms contributors. All rights reserved.
"""The static subnet of a random structure of each family's search config (configs/dms/*.py):
built by the family's retrain config from subnet.json alone (no search model, no tracing), it
computes what the hard-masked search model does, and mmengine's FlopAnalyzer counts the MACs
subnet.json states."""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from dms_test_utils import randomize_structure
from mmdms.apis import build_search_model, hard_mask_difference, load_config, static_subnet
from mmdms.models import DMSSubnet
from mmdms.structures import dump_subnet, subnet_from_algorithm
from mmdms.utils import count_macs, count_params

REPO = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
SIZE = 64
FAMILIES = ['resnet50', 'effnet_b0', 'mobilenet_v2', 'deit_tiny']


@pytest.mark.parametrize('name', FAMILIES)
def test_static_subnet_of_a_random_structure(name, tmp_path):
    cfg = load_config(osp.join(REPO, 'configs', 'dms', f'{name}.py'),
                      {'model.mutator.parse_cfg.demo_input': (1, 3, SIZE, SIZE)})
    search = randomize_structure(build_search_model(cfg), seed=7).eval()
    subnet = subnet_from_algorithm(search)
    assert subnet['removed_blocks'] and subnet['macs'] < 0.8 * subnet['supernet']['macs']
    path = str(tmp_path / 'subnet.json')
    dump_subnet(subnet, path)

    # the retrain config builds the model, as the Runner would, from subnet.json
    retrain = Config.fromfile(osp.join(REPO, 'configs', 'dms', f'{name}_retrain.py'))
    retrain.model.subnet = path
    retrain.model.setdefault('data_preprocessor', retrain.data_preprocessor)
    with DefaultScope.overwrite_default_scope(retrain.default_scope):
        model = MODELS.build(retrain.model)
    assert isinstance(model, DMSSubnet)
    model.load_state_dict(static_subnet(search, cfg, subnet).state_dict())  # strict

    diff = hard_mask_difference(search, model, (2, 3, SIZE, SIZE))
    macs = count_macs(model, subnet['input_shape'])
    print(f"\n{name}: json macs {subnet['macs']}, FlopAnalyzer {macs:.0f} "
          f"({macs / subnet['macs'] - 1:+.4%}), params {subnet['params']}, "
          f'max relative output difference {diff:.2e}')
    assert diff <= 1e-4
    assert abs(macs / subnet['macs'] - 1) <= 0.005
    assert count_params(model) == subnet['params']
