from .static_prune import (STATIC_RULES, check_subnet_fits, prune_layer, prune_to_subnet,
                           register_static_rule)
from .subnet_spec import (SUBNET_FORMAT, SubnetError, dump_subnet, load_subnet,
                          subnet_from_algorithm)
from .static_rules import kept_section_widths

__all__ = ['STATIC_RULES', 'SUBNET_FORMAT', 'SubnetError', 'check_subnet_fits', 'dump_subnet',
           'kept_section_widths', 'load_subnet', 'prune_layer', 'prune_to_subnet',
           'register_static_rule', 'subnet_from_algorithm']
