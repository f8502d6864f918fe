# The CIFAR-style ResNet supernet for Fashion-MNIST (28x28 grey), trained plainly with the
# one recipe: the starting point of DMS_p and Torch-Pruning in benchmarks/bench_peers.py.
# ResNet_CIFAR (3x3 stem, no max-pool) with three stages of 3, 4 and 6 BasicBlocks (16, 32, 64
# channels, each stage halving the resolution: 14, 7, 4 pixels): 13.2M MACs, 0.51M params.
# python tools/train.py configs/dms/fmnist/resnet_supernet.py
_base_ = ['./_base_/fmnist_recipe.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=34, num_stages=3, strides=(2, 2, 2),
                  dilations=(1, 1, 1), out_indices=(2, ), in_channels=1, stem_channels=16,
                  base_channels=16),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))
