# Retrain the subnet found by configs/dms/deit_tiny.py with mmpretrain's DeiT-Small recipe (the
# Swin-style AdamW schedule the paper retrains DeiT with, App. A.4.1).
#   python tools/export_subnet.py configs/dms/deit_tiny.py SEARCH_CKPT --work-dir work_dirs/deit_tiny_subnet --reinit
#   tools/dist_train.sh configs/dms/deit_tiny_retrain.py 8 --cfg-options model.subnet=work_dirs/deit_tiny_subnet/subnet.json
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py', './_base_/dms_retrain.py']

# The architecture is the search config's supernet (DMSSubnet names any layer that differs).
architecture = _base_.model
architecture.backbone.arch = dict(
    embed_dims=384, num_layers=16, num_heads=6, feedforward_channels=384 * 4)
model = dict(_delete_=True, _scope_='mmrazor', type='DMSSubnet', architecture=architecture,
             subnet='work_dirs/deit_tiny_subnet/subnet.json')
