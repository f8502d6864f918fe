# DMS search of the resnet Fashion-MNIST supernet (./resnet_supernet.py) for half its MACs (the
# benchmark sets target_ratio). DMS_np from a random initialisation; DMS_p with
# --cfg-options load_from=<the trained supernet's checkpoint>.
# python tools/train.py configs/dms/fmnist/resnet_search.py
_base_ = ['./resnet_supernet.py', './_base_/dms_search_recipe.py']

mutator = dict(
    type='DMSMutator',
    channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='taylor')),
    parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 1, 28, 28), tracer_type='FxTracer'))
supernet = dict(_base_.model, _scope_='mmpretrain')
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=supernet,
             mutator=mutator, resource_value='hard')
# Structure parameters: their own learning rate, no weight decay.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'dms_ratio': dict(lr_mult=_base_.lr_structure / _base_.optim_wrapper.optimizer.lr,
                      decay_mult=0.0)}))
param_scheduler = _base_.search_param_scheduler
train_cfg = _base_.search_train_cfg
default_hooks = dict(checkpoint=dict(interval=_base_.search_epochs))
