# Copyright (c) mmdms contributors. All rights reserved.
"""Resource targets as configs write them: ``'0.39G'`` MACs, ``'5.3M'`` params, ``'3ms'``."""
import re
from typing import Union

_UNITS = {'': 1.0, 'K': 1e3, 'M': 1e6, 'G': 1e9, 'T': 1e12}


def parse_resource(value: Union[str, float], resource: str) -> float:
    """A resource target in the estimator's unit: MACs / params as counts, latency in ms.

    ``'0.39G'`` -> 3.9e8 MACs, ``'5.3M'`` -> 5.3e6 params, ``'3ms'`` -> 3.0 ms; a number is
    taken as it is.

    Args:
        value (str | float): the target as written in a config.
        resource (str): ``'macs'``, ``'params'`` or ``'latency'``; latency targets must be in
            ms, the others in K/M/G/T (or none).

    Returns:
        float: the target.
    """
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r'\s*([0-9.eE+-]+)\s*([KMGT]?)(ms)?\s*', str(value))
    if match is None:
        raise ValueError(f"Cannot read the resource target '{value}': write e.g. '0.39G' "
                         "(MACs), '5.3M' (params) or '3ms' (latency)")
    number, unit, ms = match.groups()
    if (resource == 'latency') != bool(ms) or (ms and unit):
        raise ValueError(f"Target '{value}' does not fit resource '{resource}': latency "
                         "targets are in ms ('3ms'), MACs / params ones in K/M/G ('0.39G')")
    return float(number) * _UNITS[unit]
