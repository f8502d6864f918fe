from .resource_estimator import (RESOURCE_TYPES, DMSResourceEstimator, LayerCall,
                                 known_resource_types)

__all__ = ['DMSResourceEstimator', 'LayerCall', 'RESOURCE_TYPES', 'known_resource_types']
