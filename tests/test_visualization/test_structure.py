# Copyright (c) mmdms contributors. All rights reserved.
"""The Fig. 4-style picture of a searched structure (digits search model, random structure)."""
import os.path as osp
import runpy
import sys

from dms_test_utils import build_search_model, randomize_structure
from mmdms.structures import dump_subnet, subnet_from_algorithm
from mmdms.visualization import layer_widths, plot_search_structure, stage_depths

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIGITS = osp.join(REPO, 'configs', 'dms', 'demo', 'digits_search.py')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def test_widths_depths_and_png(tmp_path, monkeypatch):
    search = randomize_structure(build_search_model(DIGITS), seed=1)
    subnet = subnet_from_algorithm(search)
    rows = {name: (total, kept) for name, total, kept in layer_widths(subnet)}
    assert rows['backbone.conv1'] == (16, len(subnet['layers']['backbone.conv1']['kept_out']))
    assert rows['head.fc'] == (10, 10)  # the classes are not searched
    for block in subnet['removed_blocks']:
        assert rows[f'{block}.conv1'][1] == 0
    assert ('backbone.layer1.0-2', 3, len(search.mutator.stage_mutables[
        'backbone__layer1__0-2'].kept_blocks())) in stage_depths(subnet)

    out = str(tmp_path / 'fig.png')
    assert plot_search_structure(search, out) == out
    with open(out, 'rb') as f:
        assert f.read(8) == PNG_MAGIC

    path = str(tmp_path / 'subnet.json')
    dump_subnet(subnet, path)
    monkeypatch.setattr(sys, 'argv', ['visualize_structure.py', path])
    runpy.run_path(osp.join(REPO, 'tools', 'visualize_structure.py'), run_name='__main__')
    assert osp.getsize(tmp_path / 'structure.png') > 10000
