# Copyright (c) mmdms contributors. All rights reserved.
"""A soft resource count compiled once into a polynomial of the search space's widths.

The estimator's soft count is a sum over every recorded layer of a polynomial in expected widths
and depth masks (a conv: ``k * positions * c_in * c_out * m_block``). Evaluated layer by layer
it is several tensor operations per layer, and as many autograd nodes in the backward: on
MobileNetV2 and ResNet-152 more time than all the masked layers' own DMS work. The polynomial
does not change during a search, only the widths do, so it is built once, by running the layer
rules on symbols instead of widths (:class:`Polynomial`), and then evaluated each step as one
vector expression: the expected widths (one segmented sum over the concatenated masks), the
block masks, one gather of each monomial's factors, their products and one dot product with the
coefficients — about ten operations whatever the model's size.

A rule whose cost is not a polynomial of its widths (it calls a torch function on them, compares
them, rounds them) cannot be compiled: :func:`compile_cost` returns ``None`` and the estimator
counts layer by layer as before. Hard and full counts are never compiled (they are exact Python
numbers already).
"""
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from mmdms.models.layer_rules import MaskReader


class NotPolynomial(TypeError):
    """A cost used its widths in a way a polynomial cannot record."""


class Polynomial:
    """A polynomial with float coefficients over symbols (ints), closed under the arithmetic a
    layer rule does on widths: ``+``, ``-``, ``*``, division by a number, integer powers."""

    __slots__ = ('terms', )

    def __init__(self, terms: Optional[Dict[Tuple[int, ...], float]] = None) -> None:
        #: monomial (sorted symbol indices, repeated for powers) -> coefficient
        self.terms: Dict[Tuple[int, ...], float] = terms or {}

    @classmethod
    def symbol(cls, index: int) -> 'Polynomial':
        return cls({(index, ): 1.0})

    @staticmethod
    def _lift(value) -> 'Polynomial':
        if isinstance(value, Polynomial):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Polynomial({(): float(value)} if value else {})
        raise NotPolynomial(f'a cost combines a width with {type(value).__name__}')

    def __add__(self, other) -> 'Polynomial':
        other = self._lift(other)
        terms = dict(self.terms)
        for monomial, coeff in other.terms.items():
            terms[monomial] = terms.get(monomial, 0.0) + coeff
        return Polynomial(terms)

    __radd__ = __add__

    def __neg__(self) -> 'Polynomial':
        return Polynomial({m: -c for m, c in self.terms.items()})

    def __sub__(self, other) -> 'Polynomial':
        return self + (-self._lift(other))

    def __rsub__(self, other) -> 'Polynomial':
        return self._lift(other) + (-self)

    def __mul__(self, other) -> 'Polynomial':
        other = self._lift(other)
        terms: Dict[Tuple[int, ...], float] = defaultdict(float)
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                terms[tuple(sorted(m1 + m2))] += c1 * c2
        return Polynomial(dict(terms))

    __rmul__ = __mul__

    def __truediv__(self, other) -> 'Polynomial':
        if isinstance(other, Polynomial) or not isinstance(other, (int, float)):
            raise NotPolynomial('a cost divides by a width')
        return self * (1.0 / other)

    def __rtruediv__(self, other):
        raise NotPolynomial('a cost divides by a width')

    def __pow__(self, exponent) -> 'Polynomial':
        if not isinstance(exponent, int) or exponent < 0:
            raise NotPolynomial(f'a width raised to the power {exponent!r}')
        result = Polynomial({(): 1.0})
        for _ in range(exponent):
            result = result * self
        return result

    def __bool__(self):
        raise NotPolynomial('a cost branches on the value of a width')

    def __float__(self):
        raise NotPolynomial('a cost converts a width to a number')


class SymbolicReader(MaskReader):
    """A :class:`MaskReader` whose widths are symbols: one per distinct soft mask tensor (the
    masks of one mutable, read by all the layers of its group, are one symbol)."""

    def __init__(self, space) -> None:
        super().__init__(space, hard=False, full=False)
        self.masks: List[Tensor] = []  # symbol index -> the mask it sums (at compile time)
        self.sources: List[Callable[[], Tensor]] = []  # symbol index -> how to read the mask
        self._index: Dict[int, int] = {}  # id(mask) -> symbol index

    def mask(self, fn):
        raise NotPolynomial('a rule reads a mask tensor, not a width')

    def masked_width(self, fn):
        mask = fn(False)
        return None if mask is None else self._symbol(mask, lambda: fn(False))

    def mutable_width(self, mutable):
        if getattr(mutable, 'fixed', False):
            return mutable.num_channels
        return self._symbol(mutable.soft_mask, lambda: mutable.soft_mask)

    def _symbol(self, mask: Tensor, source: Callable[[], Tensor]) -> Polynomial:
        index = self._index.get(id(mask))
        if index is None:
            index = self._index[id(mask)] = len(self.masks)
            self.masks.append(mask)
            self.sources.append(source)
        return Polynomial.symbol(index)


class CompiledCost:
    """A soft count as one vector expression of the current masks (see the module docstring).

    Symbols ``0 .. W-1`` are expected widths (sums of masks), ``W ..`` the block masks of the
    depth stages, in :attr:`stages` order, and the last one the constant 1 (padding of the
    monomials of lower degree)."""

    def __init__(self, reader: SymbolicReader, stages: List, polynomial: Polynomial) -> None:
        self.sources = reader.sources
        self.sizes = [int(m.numel()) for m in reader.masks]
        self.stages = stages
        self.constant = polynomial.terms.get((), 0.0)
        monomials = [(m, c) for m, c in polynomial.terms.items() if m and c]
        degree = max((len(m) for m, _ in monomials), default=1)
        one = len(self.sources) + sum(s.num_elements for s in stages)
        self.factors = torch.tensor([list(m) + [one] * (degree - len(m)) for m, _ in monomials],
                                    dtype=torch.long).reshape(-1, degree)
        self.coefficients = torch.tensor([c for _, c in monomials], dtype=torch.float64)
        self.segments = torch.repeat_interleave(torch.arange(len(self.sizes)),
                                                torch.tensor(self.sizes, dtype=torch.long))
        self._on_device: Dict[tuple, tuple] = {}

    def _indices(self, device: torch.device, dtype: torch.dtype) -> tuple:
        key = (str(device), dtype)
        if key not in self._on_device:
            self._on_device[key] = (self.segments.to(device), self.factors.to(device),
                                    self.coefficients.to(device, dtype))
        return self._on_device[key]

    def evaluate(self, dtype: torch.dtype = torch.float32) -> Tensor:
        masks = [source() for source in self.sources]
        if [int(m.numel()) for m in masks] != self.sizes:
            raise RuntimeError('A mask changed its size after the soft count was compiled')
        device = masks[0].device if masks else \
            (self.stages[0].block_masks.device if self.stages else torch.device('cpu'))
        segments, factors, coefficients = self._indices(device, dtype)
        flat = torch.cat([m.reshape(-1).to(dtype) for m in masks]) if masks else \
            torch.zeros(0, dtype=dtype, device=device)
        widths = flat.new_zeros(len(masks)).index_add(0, segments, flat)
        values = torch.cat([widths] + [s.block_masks.to(dtype) for s in self.stages] +
                           [flat.new_ones(1)])
        gathered = values[factors]
        products = gathered[:, 0]
        for column in range(1, gathered.shape[1]):
            products = products * gathered[:, column]
        return (products * coefficients).sum() + self.constant


def compile_cost(space, terms_of: Callable[[MaskReader, Callable[[str], object]], list],
                 block_of: Callable[[str], Optional[tuple]]) -> Optional[CompiledCost]:
    """The soft count ``sum(terms_of(reader, depth))`` as a :class:`CompiledCost`, or ``None`` if
    a term is not a polynomial of the widths and depth masks.

    Args:
        space: the search space.
        terms_of: the count's terms for a reader and a depth-mask function ``depth(name)``.
        block_of: ``name -> (stage mutable, block index)`` or ``None``.
    """
    reader = SymbolicReader(space)
    stages: List = []
    offsets: Dict[int, int] = {}
    depth_symbols: List[tuple] = []  # resolved after the widths: (stage position, index)

    def depth(name: str):
        found = block_of(name)
        if found is None:
            return 1
        mutable, index = found
        if id(mutable) not in offsets:
            offsets[id(mutable)] = len(stages)
            stages.append(mutable)
        depth_symbols.append((offsets[id(mutable)], index))
        # a placeholder symbol, renumbered below once the number of widths is known
        return Polynomial.symbol(-len(depth_symbols))

    try:
        total = sum(terms_of(reader, depth), Polynomial())
        total = Polynomial._lift(total)
    except (NotPolynomial, TypeError, AttributeError, RuntimeError):
        return None
    starts, start = [], len(reader.masks)
    for stage in stages:
        starts.append(start)
        start += stage.num_elements

    def renumber(symbol: int) -> int:
        if symbol >= 0:
            return symbol
        stage, index = depth_symbols[-symbol - 1]
        return starts[stage] + index

    terms: Dict[Tuple[int, ...], float] = defaultdict(float)
    for monomial, coeff in total.terms.items():
        terms[tuple(sorted(renumber(s) for s in monomial))] += coeff
    return CompiledCost(reader, stages, Polynomial(dict(terms)))


