# Copyright (c) mmdms contributors. All rights reserved.
"""tools/demo_llm.py's pieces that are cheap to check: the missing-corpus message and the
search config it derives from configs/dms/demo/llama_demo_search.py."""
import os.path as osp
import sys

import pytest

pytest.importorskip('transformers')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools'))
import demo_llm  # noqa: E402


def test_missing_corpus_stops_with_the_install_command(tmp_path):
    missing = str(tmp_path / 'no_text_here')
    with pytest.raises(SystemExit) as stop:
        demo_llm.ensure_text(missing)
    assert missing in str(stop.value) and 'apt-get install -y python3-doc' in str(stop.value)
    demo_llm.ensure_text(str(tmp_path))  # present: nothing happens


def test_search_config_sets_supernet_schedule_and_tied_widths():
    cfg = demo_llm.search_config('/some/supernet', iters=20, seed=3, target_ratio=0.6,
                                 tied=True)
    assert cfg.model.architecture.pretrained_path == '/some/supernet'
    assert cfg.train_cfg.max_iters == 20 and cfg.randomness.seed == 3
    hook = next(h for h in cfg.custom_hooks if h['type'] == 'ResourceLossHook')
    assert hook['target_ratio'] == 0.6 and hook['width_only_iters'] == 6
    assert cfg.model.mutator.adapter_args == dict(
        LlamaForCausalLMAdapter=dict(tie_layer_widths=True))
    assert not cfg.model.mutator.search_depth
    assert demo_llm.search_config('/s', 20, 0, search_depth=True).model.mutator.search_depth
