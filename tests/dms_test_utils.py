# Copyright (c) mmdms contributors. All rights reserved.
"""Checks shared by the tests (importable because tests/ holds the root conftest.py)."""
import torch
from mmengine.model import BaseModel


def last_output(out):
    """A model's tensor output, or the last of a backbone's tuple of outputs."""
    return out[-1] if isinstance(out, (tuple, list)) else out


def run_tensor_mode(model, x):
    """Forward an OpenMMLab model in ``tensor`` mode, a plain module as is."""
    return last_output(model(x, mode='tensor') if isinstance(model, BaseModel) else model(x))


def assert_hard_ones_reproduce(model, reference, mutables, shape, rtol=1e-5):
    """With every DMS mask fixed hard (all kept), ``model`` computes what ``reference`` does."""
    for mutable in mutables:
        if not mutable.is_fixed:
            mutable.fix_chosen()
    x = torch.randn(shape)
    with torch.no_grad():
        out, expected = run_tensor_mode(model, x), run_tensor_mode(reference, x)
    assert torch.allclose(out, expected, rtol=rtol, atol=rtol * expected.abs().max().item())
