from .scalable_mobilenet_v2 import ScalableMobileNetV2

__all__ = ['ScalableMobileNetV2']
