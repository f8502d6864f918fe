# Retrain the subnet found by configs/dms/resnet50.py with mmpretrain's ResNet-50 recipe (paper
# App. A.4.1: the step-schedule setting).
#   python tools/export_subnet.py configs/dms/resnet50.py SEARCH_CKPT --work-dir work_dirs/resnet50_subnet --reinit
#   tools/dist_train.sh configs/dms/resnet50_retrain.py 8 --cfg-options model.subnet=work_dirs/resnet50_subnet/subnet.json
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py', './_base_/dms_retrain.py']

# The architecture is the search config's supernet, ResNet-152 (DMSSubnet names any layer that
# differs).
architecture = _base_.model
architecture.backbone.depth = 152
model = dict(_delete_=True, _scope_='mmrazor', type='DMSSubnet', architecture=architecture,
             subnet='work_dirs/resnet50_subnet/subnet.json')
