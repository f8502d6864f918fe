# Copyright (c) mmdms contributors. All rights reserved.
"""A picture of a searched structure, like the paper's Fig. 4: per layer the searched width
against the supernet's, and the depth of every searched stage."""
from typing import Dict, List, Optional, Tuple

from mmdms.models.layer_rules import LAYER_RULES
from mmdms.structures import subnet_from_algorithm
from mmdms.structures.subnet_spec import in_removed_block


def _drawn(layer: Dict) -> bool:
    """Layers with a searchable weight (convs, linears) are drawn (their output width); norms
    follow the layer before them. A ``subnet.json`` without layer kinds (written before
    mmdms recorded them) is read by its layer type names."""
    drawn = [r for r in set(LAYER_RULES.values()) if r.searchable_weight]
    if 'kind' in layer:
        return any(r.kind == layer['kind'] for r in drawn)
    return any(t.__name__ == layer['type'] for r in drawn
               for t in list(r.dms_ops) + list(r.module_types))


def layer_widths(subnet: Dict) -> List[Tuple[str, int, int]]:
    """``(layer, supernet width, searched width)`` of every searched conv / linear layer, in
    model order; a layer of a removed block has width 0."""
    rows = []
    for name, layer in subnet['layers'].items():
        if not _drawn(layer):
            continue
        total = layer['out_channels']
        kept = 0 if in_removed_block(name, subnet) else \
            total if layer['kept_out'] is None else len(layer['kept_out'])
        rows.append((name, total, kept))
    return rows


def stage_depths(subnet: Dict) -> List[Tuple[str, int, int]]:
    """``(stage, supernet blocks, kept blocks)`` of every depth-searched stage."""
    return [(name, stage['total'], stage['kept']) for name, stage in subnet['stages'].items()]


def _human(count: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if count >= scale:
            return f'{count / scale:.2f}{unit}'
    return f'{count:.0f}'


def plot_structure(subnet: Dict, out_file: str, title: Optional[str] = None) -> str:
    """Draw ``subnet`` (the content of ``subnet.json``) into the PNG ``out_file``.

    Left: one horizontal bar per searched conv / linear layer, the supernet's output width in
    grey and the searched width over it. Right: per depth-searched stage, its blocks in the
    supernet and the kept ones.

    Returns:
        str: ``out_file``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers, stages = layer_widths(subnet), stage_depths(subnet)
    height = max(4.0, 0.13 * len(layers) + 1.5)
    fig = Figure(figsize=(12, height), layout='constrained')
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, width_ratios=[3, 1] if stages else [1, 0.001])
    ax = fig.add_subplot(grid[0])
    ys = list(range(len(layers)))
    ax.barh(ys, [t for _, t, _ in layers], color='#d0d0d0', label='supernet')
    ax.barh(ys, [k for _, _, k in layers], color='#1f77b4', height=0.55, label='searched')
    ax.set_yticks(ys)
    ax.set_yticklabels([n for n, _, _ in layers], fontsize=max(3, min(7, 600 // max(1, len(ys)))))
    ax.invert_yaxis()
    ax.set_xlabel('width (output channels / features)')
    ax.set_title('width per layer')
    ax.legend(loc='lower right')
    if stages:
        sx = fig.add_subplot(grid[1])
        sy = list(range(len(stages)))
        sx.barh(sy, [t for _, t, _ in stages], color='#d0d0d0', label='supernet')
        sx.barh(sy, [k for _, _, k in stages], color='#ff7f0e', height=0.55, label='searched')
        sx.set_yticks(sy)
        sx.set_yticklabels([n for n, _, _ in stages], fontsize=7)
        sx.set_ylim(max(len(stages), 6) - 0.5, -0.5)  # top to bottom; thin bars for few stages
        sx.set_xlabel('blocks')
        sx.set_title('depth per stage')
        sx.legend(loc='lower right')
    shape = 'x'.join(str(s) for s in subnet['input_shape'])
    fig.suptitle(title or f"searched structure: {_human(subnet['macs'])} MACs (supernet "
                 f"{_human(subnet['supernet']['macs'])}), {_human(subnet['params'])} params "
                 f"(supernet {_human(subnet['supernet']['params'])}) at {shape}")
    fig.savefig(out_file, dpi=120)
    return out_file


def plot_search_structure(algorithm, out_file: str, title: Optional[str] = None) -> str:
    """Draw the structure the hard masks of a DMS search model select (e.g. from a hook at the
    end of a search)."""
    return plot_structure(subnet_from_algorithm(algorithm), out_file, title)
