# Copyright (c) mmdms contributors. All rights reserved.
"""The once-per-iteration importance update, averaged across data-parallel ranks."""
from typing import Iterable

import torch
from mmengine import dist


def sync_importance(mutables: Iterable) -> int:
    """Update every DMS mutable's importance once, identically on all ranks.

    Call once per training iteration, after the optimiser step. Each mutable's statistic for the
    iteration (e.g. ``(m * dL/dm)^2``) differs per rank because each rank sees other data; they
    are averaged with **one** ``all_reduce`` over a single bucket holding every statistic plus one
    presence count per mutable (so a mutable that received no gradient on some rank is averaged
    over the ranks that have it, and every rank sends the same bucket shape). Then each ratio is
    projected back onto its allowed range.

    Args:
        mutables (Iterable[DMSTopkMixin]): the DMS mutables of the model.

    Returns:
        int: how many mutables changed importance.
    """
    mutables = list(mutables)
    if not mutables:
        return 0
    stats = [m.importance_statistic() for m in mutables]
    if dist.get_world_size() > 1:
        stats = _average_over_ranks(mutables, stats)
    updated = 0
    for mutable, stat in zip(mutables, stats):
        if stat is not None:
            mutable.apply_importance_statistic(stat)
            updated += 1
        mutable.project_ratio()
    return updated


def _average_over_ranks(mutables: list, stats: list) -> list:
    sizes = [m.num_elements for m in mutables]
    device = mutables[0].importance.device
    bucket = torch.zeros(sum(sizes) + len(mutables), device=device)
    values, counts = bucket[:sum(sizes)], bucket[sum(sizes):]
    offset = 0
    for i, (size, stat) in enumerate(zip(sizes, stats)):
        if stat is not None:
            values[offset:offset + size] = stat.detach().float().to(device)
            counts[i] = 1.0
        offset += size
    dist.all_reduce(bucket, op='sum')
    averaged, offset = [], 0
    for i, size in enumerate(sizes):
        count = float(counts[i])
        averaged.append(values[offset:offset + size] / count if count > 0 else None)
        offset += size
    return averaged
