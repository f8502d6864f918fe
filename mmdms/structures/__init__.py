from .static_prune import check_subnet_fits, prune_layer, prune_to_subnet
from .subnet_spec import (SUBNET_FORMAT, SubnetError, dump_subnet, kept_section_widths,
                          load_subnet, subnet_from_algorithm)

__all__ = ['SUBNET_FORMAT', 'SubnetError', 'check_subnet_fits', 'dump_subnet',
           'kept_section_widths', 'load_subnet', 'prune_layer', 'prune_to_subnet',
           'subnet_from_algorithm']
