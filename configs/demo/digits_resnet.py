# A plain (no search) ResNet on the offline digits data: the demo's baseline training recipe.
# python tools/train.py configs/demo/digits_resnet.py
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['mmdms'], allow_failed_imports=False)

# 8x8 digits are resized to 16x16; a CIFAR-style ResNet-18 (3x3 stem, no max-pool) with
# 16-32-64-128 channels sees feature maps of 16, 8, 4 and 2 pixels.
input_size = 16
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR', depth=18, stem_channels=16, base_channels=16, out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

# Mean and std of the training split's pixels (0..255), the same for the 3 repeated channels.
data_preprocessor = dict(num_classes=10, mean=[78.0] * 3, std=[96.0] * 3, to_rgb=False)

train_pipeline = [
    dict(type='Resize', scale=(input_size, input_size)),
    dict(type='RandomCrop', crop_size=input_size, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=(input_size, input_size)),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(type='DigitsDataset', split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=120,
    num_workers=0,
    dataset=dict(type='DigitsDataset', split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 12
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, by_epoch=True, begin=1, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=32)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=15),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1, save_last=True))
randomness = dict(seed=0, deterministic=False)
