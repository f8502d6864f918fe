from .resource_estimator import RESOURCE_TYPES, DMSResourceEstimator, LayerCall

__all__ = ['DMSResourceEstimator', 'LayerCall', 'RESOURCE_TYPES']
