from .structure import layer_widths, plot_search_structure, plot_structure, stage_depths

__all__ = ['layer_widths', 'plot_search_structure', 'plot_structure', 'stage_depths']
