# Copyright (c) mmdms contributors. All rights reserved.
"""Latency model for the latency constraint (paper App. A.1.2, Eq. 9), and what makes its
target the measured latency of the exported model.

Each timed layer (convs and linears: their layer rules give the static layer to time) is timed
on the current device at a grid of input and output keep fractions, as the pruned static layer
on an input of its recorded shape; a smooth
``F(x_in, x_out) = c0 + c1 x_in + c2 x_out + c3 x_in x_out`` (a quadratic surface, as the paper
uses) is fitted to ``latency / latency_max`` by non-negative least squares, so that
``sum latency_max * F(x_in, x_out)`` never rewards a wider layer, however noisy the timings
(CPU timings of odd widths are not monotone).

That sum leaves out what the model spends outside its convs and linears: BatchNorm,
activations, residual adds, pooling, the Python of every module call. On the digits supernet on
CPU it is about half of the measured whole (``docs/benchmarks.md``). So the whole static
supernet is timed once too, and the sum corrected (:class:`LatencyModel`): with
``correction='per_layer'`` (the default of a search) a narrower static model of the same depth
is timed as well, and the unexplained time split into a part scaling with the layers' time and
a constant per timed layer call, gone with a removed block (:func:`per_layer_correction`); with
``'scale'`` all of it scales with the layers' time, with ``'offset'`` it is one constant
(:func:`latency_correction`). Each way the estimator's supernet latency equals the measured
one, and the target of a search is the wall-clock latency of the exported model, measured as
:func:`time_ms` measures.

Timing (:func:`time_ms`): ``torch.no_grad``, eval mode, ``warmup`` calls, then the median of
``repeats`` calls (synchronised on CUDA), with the process's ``torch.get_num_threads()``; the
batch and input size are the estimator's ``input_shape`` (one sample by default).
"""
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from scipy.optimize import nnls
from torch import Tensor

#: A timer: ``timer(module, x) -> ms`` for one call ``module(x)``. Tests pass a fake one.
Timer = Callable[[nn.Module, Tensor], float]

CORRECTIONS = ('per_layer', 'scale', 'offset', 'none')

#: Where a search checkpoint's ``meta`` keeps the fitted latency model (resume, export).
LATENCY_META_KEY = 'dms_latency_model'


def latency_basis(x, y) -> Tensor:
    """``[1, x, y, xy]``: the quadratic surface fitted per layer (App. A.1.2): overhead,
    input- and output-bound terms, compute-bound term."""
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    return torch.stack([torch.ones_like(x), x, y, x * y])


def time_ms(module: nn.Module, x: Tensor, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall-clock milliseconds of ``module(x)`` over ``repeats`` calls after ``warmup``
    calls, under ``torch.no_grad`` (the module's mode as it is; callers put it in eval mode)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            module(x)
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            module(x)
            sync()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def fit_layer(module: nn.Module, call, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
              repeats: int = 10, warmup: int = 2,
              timer: Optional[Timer] = None) -> Tuple[float, Tensor]:
    """Time ``module`` (as described by its recorded ``call``) over ``fractions`` x
    ``fractions`` of its input / output widths and fit ``F``.

    Args:
        module (nn.Module): the layer in the (search) model.
        call (LayerCall): its recorded call (with its ``rule``).
        fractions (Sequence[float]): the keep fractions of the grid; the last must be 1.
        repeats (int): timed calls per grid point (of the default timer).
        warmup (int): untimed calls before them.
        timer (Timer, optional): ``timer(layer, x) -> ms``; defaults to :func:`time_ms`.

    Returns:
        ``(latency_max_ms, coefficients)`` of ``F = c . [1, x, y, xy]``, all ``c >= 0``.
    """
    timer = timer or (lambda layer, x: time_ms(layer, x, repeats, warmup))
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
            times.append(float(timer(layer, inputs)))
    latency_max = max(times[-1], 1e-6)
    basis = torch.stack([latency_basis(x, y) for x, y in points]).double().numpy()
    target = (torch.tensor(times, dtype=torch.float64) / latency_max).numpy()
    if channelwise:  # x == y: 1, x, x^2 along the diagonal
        solution, _ = nnls(basis[:, [0, 1, 3]], target)
        coeffs = [solution[0], solution[1], 0.0, solution[2]]
    else:
        coeffs, _ = nnls(basis, target)
    return latency_max, torch.tensor(coeffs, dtype=torch.float32)


def latency_correction(layers_ms: float, measured_ms: float,
                       correction: str = 'scale') -> Tuple[float, float]:
    """``(scale, overhead_ms)`` such that ``overhead_ms + scale * layers_ms == measured_ms``.

    Args:
        layers_ms (float): the per-layer model's latency of the whole supernet (the sum).
        measured_ms (float): the measured latency of the whole static supernet.
        correction (str): ``'scale'``: the unexplained time scales with the layers'
            (``overhead_ms = 0``); ``'offset'``: it is a constant (``scale = 1``); ``'none'``:
            the sum as it is (``(1, 0)``, the measurement ignored). (``'per_layer'`` needs a
            second measurement: :func:`per_layer_correction`.)

    Returns:
        tuple: ``(scale, overhead_ms)``.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"Unknown latency correction '{correction}': use one of "
                         f'{", ".join(CORRECTIONS)}')
    if correction == 'none':
        return 1.0, 0.0
    if not (layers_ms > 0 and measured_ms > 0):
        raise ValueError(f'Cannot correct the latency model: the per-layer sum '
                         f'({layers_ms:.4g} ms) and the measured supernet latency '
                         f'({measured_ms:.4g} ms) must both be positive')
    if correction in ('scale', 'per_layer'):
        return measured_ms / layers_ms, 0.0
    return 1.0, measured_ms - layers_ms


def per_layer_correction(layers_ms: float, measured_ms: float, reduced_layers_ms: float,
                         reduced_measured_ms: float, num_layers: float) -> Tuple[float, float]:
    """``(scale, per_layer_ms)`` of ``latency = scale * sum + per_layer_ms * layers`` from two
    measured static models of the same depth: the supernet and a narrower one.

    The time the per-layer sum does not explain, ``measured_ms - layers_ms``, is split into a
    part that scales with the layers' time (``scale - 1``: norms and activations on larger
    tensors) and a constant per timed layer call (``per_layer_ms``: the Python and dispatch of
    the layer's norm, activation and block, gone with a removed block, not with a narrower
    layer). The narrower model tells them apart: ``scale`` is the slope of measured against
    summed latency between the two, clipped to ``[1, measured_ms / layers_ms]`` (noise can put
    it anywhere), so that the supernet's estimate is always exactly ``measured_ms``.

    Args:
        layers_ms (float): the per-layer sum at the supernet.
        measured_ms (float): the measured supernet.
        reduced_layers_ms (float): the per-layer sum at the narrower structure.
        reduced_measured_ms (float): the measured narrower static model.
        num_layers (float): the number of timed layer calls (the same in both).

    Returns:
        tuple: ``(scale, per_layer_ms)``.
    """
    if not (layers_ms > 0 and measured_ms > 0 and num_layers > 0):
        raise ValueError('Cannot correct the latency model: the per-layer sum, the measured '
                         'supernet latency and the number of timed layers must be positive, '
                         f'got {layers_ms:.4g} ms, {measured_ms:.4g} ms, {num_layers}')
    full_scale = measured_ms / layers_ms
    if full_scale <= 1 or layers_ms <= reduced_layers_ms:
        return full_scale, 0.0
    slope = (measured_ms - reduced_measured_ms) / (layers_ms - reduced_layers_ms)
    scale = min(max(slope, 1.0), full_scale)
    return scale, (measured_ms - scale * layers_ms) / num_layers


@dataclass
class LatencyModel:
    """The fitted latency model an estimator's ``latency()`` reads.

    ``latency = overhead_ms + sum_layers (scale * latency_max * F(x_in, x_out) + per_layer_ms)
    * depth_mask`` (the sum over the timed layer calls).

    Attributes:
        layers (list): per recorded call, ``(latency_max_ms, coefficients)`` (``(0., None)``
            for a call that is not timed).
        scale (float): factor on the sum (:func:`latency_correction`).
        overhead_ms (float): constant added to it.
        per_layer_ms (float): constant per timed layer call, weighted by its depth mask.
        correction (str): how ``scale`` / ``overhead_ms`` were set.
        layers_ms (float, optional): the sum at the full supernet (before correction).
        supernet_ms (float, optional): the measured latency of the whole static supernet.
        reduced_ms (tuple, optional): for ``'per_layer'``: the narrower static model's
            per-layer sum and measured latency.
        threads (int): ``torch.get_num_threads()`` during the timing.
        device (str): where it was timed.
    """

    layers: List[Tuple[float, Optional[Tensor]]]
    scale: float = 1.0
    overhead_ms: float = 0.0
    per_layer_ms: float = 0.0
    correction: str = 'none'
    layers_ms: Optional[float] = None
    supernet_ms: Optional[float] = None
    reduced_ms: Optional[Tuple[float, float]] = None
    threads: int = field(default_factory=torch.get_num_threads)
    device: str = 'cpu'

    def to_dict(self) -> Dict:
        """Plain Python values (for a checkpoint's ``meta`` and ``subnet.json``)."""
        return dict(layers=[[float(m), None if c is None else [float(v) for v in c]]
                            for m, c in self.layers],
                    scale=self.scale, overhead_ms=self.overhead_ms,
                    per_layer_ms=self.per_layer_ms, correction=self.correction,
                    layers_ms=self.layers_ms, supernet_ms=self.supernet_ms,
                    reduced_ms=None if self.reduced_ms is None else list(self.reduced_ms),
                    threads=self.threads, device=self.device)

    @classmethod
    def from_dict(cls, data: Dict) -> 'LatencyModel':
        """The inverse of :meth:`to_dict`."""
        data = dict(data)
        data['layers'] = [(float(m), None if c is None else torch.tensor(c, dtype=torch.float32))
                          for m, c in data['layers']]
        if data.get('reduced_ms') is not None:
            data['reduced_ms'] = tuple(data['reduced_ms'])
        return cls(**data)

    def summary(self) -> Dict:
        """What ``subnet.json`` records about the fit (no per-layer coefficients)."""
        return dict(correction=self.correction, scale=self.scale, overhead_ms=self.overhead_ms,
                    per_layer_ms=self.per_layer_ms, layers_ms=self.layers_ms,
                    supernet_measured_ms=self.supernet_ms,
                    reduced_ms=None if self.reduced_ms is None else list(self.reduced_ms),
                    threads=self.threads, device=self.device)


class TensorModeForward(nn.Module):
    """``forward(model, x)`` as a module, so a :data:`Timer` can time a whole model."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Tensor], object]):
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, x: Tensor):
        return self._forward(self.model, x)
