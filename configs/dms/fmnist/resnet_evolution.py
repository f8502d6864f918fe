# One-shot supernet + evolutionary search of the resnet Fashion-MNIST supernet
# (./resnet_supernet.py, ./_base_/evolution_recipe.py), then export and retrain like DMS_np:
#   python tools/train.py configs/dms/fmnist/resnet_evolution.py \
#       --work-dir work_dirs/fmnist_resnet_evo
#   python tools/export_subnet.py configs/dms/fmnist/resnet_evolution.py \
#       work_dirs/fmnist_resnet_evo/epoch_8.pth --work-dir work_dirs/fmnist_resnet_subnet --reinit
#   python tools/train.py configs/dms/fmnist/resnet_retrain.py \
#       --cfg-options model.subnet=work_dirs/fmnist_resnet_subnet/subnet.json
# (work_dirs/fmnist_resnet_evo/evolution.json: the structure, its MACs, score and history.)
_base_ = ['./resnet_supernet.py', './_base_/evolution_recipe.py']

# The search space of ./resnet_search.py, with the first channels and blocks kept
# (weight sharing): importance 'index' for widths and depths.
mutator = dict(
    type='DMSMutator',
    channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='index')),
    depth_args=dict(importance='index'),
    parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 1, 28, 28), tracer_type='FxTracer'))
supernet = dict(_base_.model, _scope_='mmpretrain')
model = dict(_delete_=True, _scope_='mmrazor', type='OneShotDMS', architecture=supernet,
             mutator=mutator, sandwich=('max', 'min', 'random', 'random'),
             min_width_fraction=_base_.min_width_fraction)
held_out_dataloader = dict(
    batch_size=500,
    num_workers=0,
    dataset=dict(type='LocalFashionMNIST', data_root=_base_.data_root, split='train',
                 subset=10 * _base_.held_out_per_class,
                 skip_per_class=_base_.train_subset // 10, pipeline=_base_.test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
custom_hooks = [
    dict(type='EvolutionSearchHook', target_ratio=_base_.target_ratio, resource='macs',
         held_out_dataloader=held_out_dataloader, **_base_.evolution),
    dict(type='RandomStateHook'),
]
