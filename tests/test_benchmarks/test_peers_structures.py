# Copyright (c) mmdms contributors. All rights reserved.
"""``benchmarks/peers_structures.py`` on the structures of both Fashion-MNIST supernets: a
stage's blocks are the supernet's blocks of that stage (the unsearched first one included), its
kept blocks are those the export did not remove, and its width fraction is the mean kept fraction
of the widths produced inside it."""
import json
import os.path as osp
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmdms  # noqa: F401
from mmdms.structures.subnet_spec import subnet_from_algorithm

from dms_test_utils import REPO, build_search_model, load_script, randomize_structure

peers_structures = load_script('benchmarks', 'peers_structures.py')


def _produced_in(width_key: str, child: str) -> bool:
    """Whether the layer producing a width is the backbone's ``child`` or inside it."""
    layer = width_key.split('_(')[0]
    return layer == f'backbone.{child}' or layer.startswith(f'backbone.{child}.')


@pytest.fixture(scope='module', params=['resnet', 'mbv2'])
def search(request):
    return build_search_model(
        osp.join(REPO, 'configs', 'dms', 'fmnist', f'{request.param}_search.py'))


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_summary_counts_blocks_and_widths_of_each_stage(search, seed):
    randomize_structure(search, seed)
    subnet = json.loads(json.dumps(subnet_from_algorithm(search)))  # as read from subnet.json
    summary = peers_structures.summarize(subnet)

    backbone = search.architecture.backbone
    assert set(summary) == {name for name, _ in backbone.named_children()
                            if any(_produced_in(key, name) for key in search.space.widths)}
    searched_stages = 0
    for name, (kept, total, fraction) in summary.items():
        if total > 1:
            searched_stages += 1
            removed = [b for b in subnet['removed_blocks'] if b.startswith(f'backbone.{name}.')]
            assert total == len(getattr(backbone, name))
            assert kept == total - len(removed) >= 1
        inside = [group.mutable for key, group in search.space.widths.items()
                  if _produced_in(key, name)]
        assert fraction == pytest.approx(
            statistics.mean(m.num_kept / m.num_elements for m in inside))
    assert searched_stages == len(search.space.stages)


def test_no_runs_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr('sys.argv', ['peers_structures.py', '--work-dir', str(tmp_path)])
    with pytest.raises(SystemExit, match='no subnet.json under'):
        peers_structures.main()
