# DMS search on an enlarged MobileNetV2 (paper App. A.4.1): 1.5x the channels and twice the
# blocks of every stage, trained with mmpretrain's MobileNetV2 recipe.
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py', './_base_/dms_search.py']

architecture = _base_.model
architecture.backbone = dict(type='ScalableMobileNetV2', widen_factor=1.5, deepen_factor=2.0)
architecture.head.in_channels = 1920  # 1280 x 1.5
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=architecture, mutator=_base_.mutator)
