# The MobileNetV2-style supernet for Fashion-MNIST (28x28 grey), trained plainly with the one
# recipe: the starting point of DMS_p and Torch-Pruning in benchmarks/bench_peers.py.
# Inverted residuals with depthwise convs (mmpretrain's MobileNetV2 blocks): a stride-2 stem
# (32 channels, 14x14), then stages [expand, channels, blocks, stride] below, a 1x1 conv to 256
# channels: 4.3M MACs, 0.15M params. Stages of 3 blocks: the last two are identity-residual.
# python tools/train.py configs/dms/fmnist/mbv2_supernet.py
_base_ = ['./_base_/fmnist_recipe.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ScalableMobileNetV2', in_channels=1, stem_stride=2, last_channels=256,
                  arch_settings=[[1, 16, 1, 1], [4, 24, 3, 2], [4, 32, 3, 1], [4, 64, 3, 2]],
                  out_indices=(4, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=256,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))
