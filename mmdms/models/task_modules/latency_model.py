# Copyright (c) mmdms contributors. All rights reserved.
"""Per-layer latency model for the latency constraint (paper App. A.1.2, Eq. 9).

Each timed layer (convs and linears: their layer rules give the static layer to time) is timed
on the current device at a grid of input and output keep fractions, as the pruned static layer
on an input of its recorded shape; a smooth
``F(x_in, x_out) = c0 + c1 x_in + c2 x_out + c3 x_in x_out`` (a quadratic surface, as the paper
uses) is fitted to ``latency / latency_max`` by non-negative least squares, so that
``r_c = sum latency_max * F(x_in, x_out)`` never rewards a wider layer, however noisy the timings
(CPU timings of odd widths are not monotone).
"""
import statistics
import time
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from scipy.optimize import nnls
from torch import Tensor


def latency_basis(x, y) -> Tensor:
    """``[1, x, y, xy]``: the quadratic surface fitted per layer (App. A.1.2): overhead,
    input- and output-bound terms, compute-bound term."""
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    return torch.stack([torch.ones_like(x), x, y, x * y])


def _time_ms(layer: nn.Module, x: Tensor, repeats: int, warmup: int) -> float:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            layer(x)
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            layer(x)
            sync()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def fit_layer(module: nn.Module, call, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
              repeats: int = 10, warmup: int = 2) -> Tuple[float, Tensor]:
    """Time ``module`` (as described by its recorded ``call``) over ``fractions`` x
    ``fractions`` of its input / output widths and fit ``F``.

    Returns:
        ``(latency_max_ms, coefficients)`` of ``F = c . [1, x, y, xy]``, all ``c >= 0``.
    """
    device = next(module.parameters()).device
    channelwise = call.rule.channelwise(call)  # a depthwise conv: one width
    groups = call.groups if not channelwise else 1
    points, times = [], []
    for x in fractions:
        for y in (fractions if not channelwise else [x]):
            c_in = max(groups, round(call.in_channels * x) // groups * groups)
            c_out = max(groups, round(call.out_channels * y) // groups * groups)
            layer = call.rule.latency_layer(module, call, c_in, c_out).to(device).eval()
            inputs = call.rule.latency_input(call, c_in, device)
            points.append((c_in / call.in_channels, c_out / call.out_channels))
            times.append(_time_ms(layer, inputs, repeats, warmup))
    latency_max = max(times[-1], 1e-6)
    basis = torch.stack([latency_basis(x, y) for x, y in points]).double().numpy()
    target = (torch.tensor(times, dtype=torch.float64) / latency_max).numpy()
    if channelwise:  # x == y: 1, x, x^2 along the diagonal
        solution, _ = nnls(basis[:, [0, 1, 3]], target)
        coeffs = [solution[0], solution[1], 0.0, solution[2]]
    else:
        coeffs, _ = nnls(basis, target)
    return latency_max, torch.tensor(coeffs, dtype=torch.float32)
