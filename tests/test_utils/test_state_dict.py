# Copyright (c) mmdms contributors. All rights reserved.
"""``load_state_dict_strictly``: a model whose load hook drops keys it rebuilds (mmpretrain's
Swin-V2 drops its relative position tables) loads its own state dict; any other missing or
unexpected key is refused as a strict load refuses it."""
import pytest
import torch
import torch.nn as nn

from mmdms.utils import load_state_dict_strictly


class Rebuilt(nn.Module):
    """A layer and a table rebuilt at construction that a load pre-hook drops (Swin-V2's)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer('table', torch.arange(4.0))
        self._register_load_state_dict_pre_hook(self._drop_table)

    def _drop_table(self, state_dict, prefix, *args) -> None:
        state_dict.pop(prefix + 'table', None)


def test_keys_a_hook_drops_and_rebuilds_alike_are_accepted():
    source, target = Rebuilt(), Rebuilt()
    with pytest.raises(RuntimeError, match='Missing key'):
        target.load_state_dict(source.state_dict())  # what the export did
    load_state_dict_strictly(target, source.state_dict())
    torch.testing.assert_close(target.fc.weight, source.fc.weight)


def test_other_missing_unexpected_or_different_keys_are_refused():
    source, target = Rebuilt(), Rebuilt()
    state = source.state_dict()
    state['table'] = state['table'] + 1  # dropped by the hook, but not what the model holds
    with pytest.raises(RuntimeError, match='Missing key.*table'):
        load_state_dict_strictly(target, state)
    state = source.state_dict()
    del state['fc.bias']
    with pytest.raises(RuntimeError, match='Missing key.*fc.bias'):
        load_state_dict_strictly(target, state)
    with pytest.raises(RuntimeError, match='Unexpected key.*extra'):
        load_state_dict_strictly(target, dict(source.state_dict(), extra=torch.zeros(1)))


def test_rotary_tables_of_another_input_size_keep_the_models_own():
    from mmpretrain.models.utils import RotaryEmbeddingFast
    source, target = RotaryEmbeddingFast(8, 6), RotaryEmbeddingFast(8, 6)
    source(torch.randn(1, 2, 16, 8), (4, 4))  # recomputed for 4 x 4 patches
    assert source.freqs_cos.shape != target.freqs_cos.shape
    expected = target.freqs_cos.clone()
    load_state_dict_strictly(target, source.state_dict())
    torch.testing.assert_close(target.freqs_cos, expected)
    x = torch.randn(1, 2, 16, 8)
    torch.testing.assert_close(target(x, (4, 4)), source(x, (4, 4)))
