# Copyright (c) mmdms contributors. All rights reserved.
import os

import pytest
import torch
from mmengine.registry import DefaultScope

# The tests run small models, whose ops are too short to gain from a second intra-op thread; on a
# busy 2-core machine two threads spin-wait for each other (measured: building the EfficientNet-B4
# search model 15 s with 2 threads, 4 s with 1; one forward 5 s vs 0.1 s). MMDMS_TEST_THREADS
# overrides.
torch.set_num_threads(int(os.environ.get('MMDMS_TEST_THREADS', '1')))


@pytest.fixture(autouse=True)
def no_leaked_default_scope():
    """A test must not rely on a default scope left behind by another (Runners set one)."""
    before = set(DefaultScope._instance_dict)
    yield
    for name in set(DefaultScope._instance_dict) - before:
        DefaultScope._instance_dict.pop(name)
