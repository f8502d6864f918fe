# Copyright (c) mmdms contributors. All rights reserved.
import pytest
import torch
from mmrazor.registry import MODELS

from mmdms.models import DMSMutableBlocks


def test_defaults_follow_the_paper():
    blocks = MODELS.build(dict(_scope_='mmrazor', type='DMSMutableBlocks', num_blocks=6))
    assert isinstance(blocks, DMSMutableBlocks)
    assert blocks.lambda_ == 24  # 4N for depths
    assert blocks.current_choice == 6 and blocks.kept_blocks() == list(range(6))


def test_keeps_one_block_unless_empty_stages_are_allowed():
    blocks = DMSMutableBlocks(4)
    with torch.no_grad():
        blocks.dms_ratio.fill_(1.0)
    assert blocks.num_kept == 1
    with pytest.raises(ValueError, match='allow_empty=True'):
        DMSMutableBlocks(4, min_blocks=0)
    empty = DMSMutableBlocks(4, min_blocks=0, allow_empty=True)
    with torch.no_grad():
        empty.dms_ratio.fill_(1.0)
    assert empty.num_kept == 0


def test_block_masks_and_export():
    blocks = DMSMutableBlocks(5)
    blocks.importance.copy_(torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7]))
    blocks.current_choice = 3
    assert blocks.kept_blocks() == [0, 2, 4]  # network order
    masks = blocks.block_masks
    assert all(masks[i] > 0.5 for i in (0, 2, 4)) and all(masks[i] < 0.5 for i in (1, 3))
    assert blocks.dump_chosen().meta['kept_blocks'] == [0, 2, 4]
    blocks.fix_chosen()
    assert torch.equal(blocks.block_masks, torch.tensor([1.0, 0, 1, 0, 1]))
