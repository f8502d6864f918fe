# Retrain the subnet found by configs/dms/mobilenet_v2.py with mmpretrain's MobileNetV2 recipe
# (paper App. A.4.1).
#   python tools/export_subnet.py configs/dms/mobilenet_v2.py SEARCH_CKPT --work-dir work_dirs/mobilenet_v2_subnet --reinit
#   tools/dist_train.sh configs/dms/mobilenet_v2_retrain.py 8 --cfg-options model.subnet=work_dirs/mobilenet_v2_subnet/subnet.json
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py', './_base_/dms_retrain.py']

# The architecture is the search config's supernet (DMSSubnet names any layer that differs).
architecture = _base_.model
architecture.backbone = dict(type='ScalableMobileNetV2', widen_factor=1.5, deepen_factor=2.0)
architecture.head.in_channels = 1920
model = dict(_delete_=True, _scope_='mmrazor', type='DMSSubnet', architecture=architecture,
             subnet='work_dirs/mobilenet_v2_subnet/subnet.json')
