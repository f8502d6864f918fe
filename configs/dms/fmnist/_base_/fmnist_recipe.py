# Fashion-MNIST data and the one training recipe of configs/dms/fmnist/ (supernet training,
# retraining and fine-tuning alike; benchmarks/bench_peers.py). The data are read from local
# files only (LocalFashionMNIST never downloads; when they are absent it stops with:
# apt-get install -y dataset-fashion-mnist && python tools/dataset_converters/fashion_mnist.py).
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['mmdms'], allow_failed_imports=False)

data_root = 'data/fashion_mnist'
# A class-balanced subset of the 60,000 training images, so that a whole comparison fits on 2
# CPU cores (docs/benchmarks.md measures what it costs in accuracy); None trains on all of them.
train_subset = 10000
# Mean and std of the training images' pixels (0..255), one grey channel.
data_preprocessor = dict(num_classes=10, mean=[72.94], std=[90.02], to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type='LocalFashionMNIST', data_root=data_root, split='train',
                 subset=train_subset, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
# The validation set is the 10,000 test images: the accuracy reported is the last epoch's.
val_dataloader = dict(
    batch_size=500,
    num_workers=0,
    dataset=dict(type='LocalFashionMNIST', data_root=data_root, split='test',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 8
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, by_epoch=True, begin=1, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1,
                    save_last=True))
randomness = dict(seed=0, deterministic=False)
