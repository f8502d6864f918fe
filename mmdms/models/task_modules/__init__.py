from .latency_model import LATENCY_META_KEY, LatencyModel, latency_correction, time_ms
from .resource_estimator import (RESOURCE_TYPES, CountingForwardError, DMSResourceEstimator,
                                 LayerCall, known_resource_types)

__all__ = ['CountingForwardError', 'DMSResourceEstimator', 'LATENCY_META_KEY', 'LayerCall', 'LatencyModel',
           'RESOURCE_TYPES', 'known_resource_types', 'latency_correction', 'time_ms']
