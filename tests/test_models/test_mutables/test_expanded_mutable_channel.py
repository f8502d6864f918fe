# Copyright (c) mmdms contributors. All rights reserved.
"""An expanded width repeats each channel's mask entry ``ratio`` times, channel-major, and
follows its source."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdms.models.mutables import DMSMutableChannel, ExpandedMutableChannel


@settings(max_examples=25, deadline=None)
@given(channels=st.integers(1, 12), ratio=st.integers(1, 5), kept=st.integers(1, 12),
       seed=st.integers(0, 1000))
def test_expanded_masks_are_the_source_masks_channel_major(channels, ratio, kept, seed):
    source = DMSMutableChannel(channels)
    source.importance.copy_(torch.rand(channels, generator=torch.Generator().manual_seed(seed)))
    source.current_choice = min(kept, channels)
    expanded = source.expand_mutable_channel(ratio)
    assert expanded is source.expand_mutable_channel(ratio)  # one per ratio
    assert expanded.num_channels == channels * ratio
    for fn in (lambda m: m.hard_mask, lambda m: m.soft_mask, lambda m: m.current_mask):
        torch.testing.assert_close(fn(expanded), fn(source).repeat_interleave(ratio))
    assert expanded.current_choice == source.current_choice * ratio
    (expanded.soft_mask.sum()).backward()
    assert source.dms_ratio.grad is not None


def test_a_fractional_expansion_is_refused():
    with pytest.raises(ValueError, match='whole features per channel'):
        ExpandedMutableChannel(DMSMutableChannel(4), 2.5)
