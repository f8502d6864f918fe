# Retrain (DMS_np, uniform scaling: fresh weights) or fine-tune (DMS_p, Torch-Pruning:
# --cfg-options load_from=<pruned.pth>) a subnet of the mbv2 Fashion-MNIST supernet with the
# one recipe of ./_base_/fmnist_recipe.py.
#   python tools/export_subnet.py configs/dms/fmnist/mbv2_search.py SEARCH_CKPT \
#       --work-dir work_dirs/fmnist_mbv2_subnet --reinit
#   python tools/train.py configs/dms/fmnist/mbv2_retrain.py \
#       --cfg-options model.subnet=work_dirs/fmnist_mbv2_subnet/subnet.json
_base_ = ['./mbv2_supernet.py']

supernet = dict(_base_.model, _scope_='mmpretrain')
model = dict(_delete_=True, _scope_='mmrazor', type='DMSSubnet', architecture=supernet,
             subnet='work_dirs/fmnist_mbv2_subnet/subnet.json')
