# Retrain the subnet found by configs/dms/effnet_b0.py (pruned from EfficientNet-B4 at 224) with
# mmpretrain's EfficientNet-B0 recipe (the paper used timm's EfficientNet scripts, App. A.4.1).
#   python tools/export_subnet.py configs/dms/effnet_b0.py SEARCH_CKPT --work-dir work_dirs/effnet_b0_subnet --reinit
#   tools/dist_train.sh configs/dms/effnet_b0_retrain.py 8 --cfg-options model.subnet=work_dirs/effnet_b0_subnet/subnet.json
_base_ = ['mmpretrain::efficientnet/efficientnet-b0_8xb32_in1k.py', './_base_/dms_retrain.py']

# The architecture is the search config's supernet (DMSSubnet names any layer that differs).
architecture = _base_.model
architecture.backbone.arch = 'b4'
architecture.head.in_channels = 1792
model = dict(_delete_=True, _scope_='mmrazor', type='DMSSubnet', architecture=architecture,
             subnet='work_dirs/effnet_b0_subnet/subnet.json')
