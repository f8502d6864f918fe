# Retrain a subnet exported from configs/dms/demo/digits_search.py with the demo's training
# recipe (12 epochs, cosine schedule; DMS_np: fresh initialisation). make demo sets model.subnet.
#   python tools/export_subnet.py configs/dms/demo/digits_search.py SEARCH_CKPT \
#       --work-dir work_dirs/demo/subnet --reinit
#   python tools/train.py configs/dms/demo/digits_retrain.py \
#       --cfg-options model.subnet=work_dirs/demo/subnet/subnet.json
_base_ = ['../../demo/digits_resnet.py']

# The search config's supernet; DMSSubnet slices it to the subnet (no tracing).
supernet = dict(_base_.model, _scope_='mmpretrain',
                backbone=dict(_base_.model.backbone, depth=34))
model = dict(_delete_=True, _scope_='mmrazor', type='DMSSubnet', architecture=supernet,
             subnet='work_dirs/demo/subnet/subnet.json')
