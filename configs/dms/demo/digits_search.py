# DMS search on the offline digits data (the demo's main job; make demo runs it): the supernet
# is the demo's CIFAR-style ResNet deepened to ResNet-34 (3-4-6-3 blocks, 16-128 channels, 16x16
# inputs), so every stage has several removable blocks; half its MACs is the target.
# python tools/train.py configs/dms/demo/digits_search.py
_base_ = ['../../demo/digits_resnet.py']

mutator = dict(
    type='DMSMutator',
    channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='taylor')),
    parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 3, 16, 16), tracer_type='FxTracer'))
supernet = dict(_base_.model, _scope_='mmpretrain',
                backbone=dict(_base_.model.backbone, depth=34))
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=supernet,
             mutator=mutator, resource_value='hard')

# Search: 8 epochs of decaying target (Eq. 10), then 2 searching width with depth frozen.
max_epochs = 10
width_only_epochs = 2
lambda_resource = 1.0
lr_structure = 5e-3
custom_hooks = [
    dict(type='DMSImportanceHook'),
    dict(type='ResourceLossHook', resource='macs', target_ratio=0.5,
         lambda_resource=lambda_resource, width_only_epochs=width_only_epochs,
         match_target=True),
    # stop at a NaN / inf loss without checkpointing it; resume draws the same random numbers
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]
# Structure parameters: their own learning rate, no weight decay (standard paramwise_cfg).
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'dms_ratio': dict(lr_mult=lr_structure / _base_.optim_wrapper.optimizer.lr,
                      decay_mult=0.0)}))
# Warm-up, then a constant learning rate, so the structure can still move in the last epochs.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
