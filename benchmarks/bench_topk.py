# Copyright (c) mmdms contributors. All rights reserved.
"""Rank normalisation + soft mask: the sort-based O(N log N) form against the O(N^2) form.

``python benchmarks/bench_topk.py [--device cpu] [--repeats 30]``

Both forms run alternately in one process; each figure is the median of ``--repeats`` timed
calls (forward and backward of the mask w.r.t. the ratio). Prints a markdown table.
"""
import argparse
import statistics
import time

import torch

from mmdms.ops import rank_normalize, rank_normalize_quadratic, soft_mask


def step(normalize, importance, ratio, lam):
    mask = soft_mask(normalize(importance), ratio, lam)
    mask.sum().backward()
    return mask


def timed(fn, device) -> float:
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 1024, 11008])
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f'device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}')
    print('| N | sort-based (µs) | N×N comparison (µs) | N×N / sort | N×N extra memory (MiB) |')
    print('|---|---|---|---|---|')
    for n in args.sizes:
        importance = torch.rand(n, device=args.device)
        ratio = torch.tensor(0.3, device=args.device, requires_grad=True)
        fast = lambda: step(rank_normalize, importance, ratio, float(n))  # noqa: E731
        slow = lambda: step(rank_normalize_quadratic, importance, ratio, float(n))  # noqa: E731
        for fn in (fast, slow):  # warm-up
            fn()
        assert torch.equal(fast().detach(), slow().detach())
        t_fast, t_slow = [], []
        for _ in range(args.repeats):
            t_fast.append(timed(fast, args.device))
            t_slow.append(timed(slow, args.device))
        f, s = statistics.median(t_fast), statistics.median(t_slow)
        matrix_mib = n * n / 2**20  # one bool per pair
        print(f'| {n} | {f * 1e6:.1f} | {s * 1e6:.1f} | {s / f:.1f}× | {matrix_mib:.1f} |')


if __name__ == '__main__':
    main()
