# Copyright (c) mmdms contributors. All rights reserved.
"""Tearing down a gloo process group without torch's destructor deadlock."""
import gc

import torch.distributed as torch_dist


def release_process_group() -> None:
    """Destroy the default process group explicitly, after the caller dropped its DDP wrappers.

    If a process group is destroyed implicitly (by a DDP ``Reducer`` dropping the last reference,
    or at interpreter exit), gloo's worker threads are joined while the GIL is held, and a worker
    still freeing its last work item waits for the GIL: the process hangs, or aborts with SIGABRT
    during interpreter finalisation (pytorch#56297). Collecting the dropped wrappers (runners hold
    reference cycles) and calling ``destroy_process_group``, whose destructor releases the GIL,
    ends the run cleanly. A no-op without an initialised process group.
    """
    gc.collect()
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
