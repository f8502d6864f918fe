# Copyright (c) mmdms contributors. All rights reserved.
import os

# Idle OpenMP threads sleep instead of spinning: with spinning, two processes of a distributed
# test (or any other load) on a 2-core machine slow torch down 10-100x. Set before torch loads;
# spawned worker processes inherit it.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

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
