# DMS search on mmpretrain's ResNet-50 (random init, DMS_np).
# tools/dist_train.sh configs/dms/resnet50.py 8
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py', './_base_/dms_search.py']

model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=_base_.model, mutator=_base_.mutator)
