# DMS search for a ResNet-50-sized model (paper App. A.4.1): the supernet is ResNet-152,
# searched for 10 epochs with mmpretrain's ResNet recipe down to 4.0G MACs at 224x224.
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py', './_base_/dms_search.py']

architecture = _base_.model
architecture.backbone.depth = 152
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=architecture,
             mutator=_base_.mutator, resource_value='hard')

# Search (App. A.4.1, Table 16): 10 epochs, the last 1 searching width only; lambda_resource 1;
# structure parameters in their own group (lr_structure, no weight decay).
search_epochs = 10
lr_structure = 5e-3
train_cfg = dict(max_epochs=search_epochs)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'dms_ratio': dict(lr_mult=lr_structure / _base_.optim_wrapper.optimizer.lr, decay_mult=0.0)}))
custom_hooks = [
    dict(type='DMSImportanceHook'),
    dict(type='ResourceLossHook', resource='macs', target='4.0G', lambda_resource=1.0,
         width_only_epochs=1, match_target=True),
    # stop at a NaN / inf loss without checkpointing it; resume draws the same random numbers
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]
