# Copyright (c) mmdms contributors. All rights reserved.
"""Exactness of the resource count: target, estimator and the exported model's independent count.

``python benchmarks/bench_exactness.py [--models resnet50 ...] [--seed 0] [--max-steps 400]``

For each search config in ``configs/dms/`` (the paper's supernets, at the config's own input:
224 px for the classifiers, 640 px for YOLOv8):

1. build the search model (``DMS``) and give every width and depth a random importance (a
   stand-in for the Taylor statistic of a real search, which ImageNet / COCO would need);
2. move the structure parameters alone against the config's resource loss (Eq. 7 with the
   config's ``resource_value`` and ``lambda_resource``) towards the config's final MACs target
   (``ResourceLossHook(target=...)``), Adam at ``--lr``, until the loss is zero, as a search
   stops being pushed once ``r_c <= r_t``; then ``--match-steps`` steps of the two-sided loss
   the configs use in their width-only epochs (``match_target=True``) at a tenth of the rate;
3. read the structure from the hard masks (``subnet.json``), build the static subnet with the
   search weights (``DMSSubnet``) and count its MACs with mmengine's ``FlopAnalyzer`` (plus
   scaled dot-product attention: ``mmdms.utils.count_macs``) and its parameters by summing
   tensors; check that it computes what the hard-masked search model does.

Prints a markdown table: the target, the estimator's soft and hard counts, FlopAnalyzer's
count of the exported model and the gaps.
"""
import argparse
import os.path as osp
import time

import torch

import mmdms  # noqa: F401
from mmdms.apis import build_search_model, hard_mask_difference, load_config, static_subnet
from mmdms.engine.hooks.resource_loss_hook import parse_resource
from mmdms.structures import subnet_from_algorithm
from mmdms.utils import count_macs, count_params

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODELS = ['resnet50', 'effnet_b0', 'mobilenet_v2', 'deit_tiny', 'yolov8_n']


def resource_hook_cfg(cfg) -> dict:
    return next(h for h in cfg.custom_hooks if h['type'] == 'ResourceLossHook')


def random_importance(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mutable in model.dms_mutables():
            mutable.importance.copy_(torch.rand(mutable.importance.shape, generator=g))


def descend_to_target(model, target: float, lambda_resource: float, lr: float,
                      max_steps: int, resource: str = 'macs') -> int:
    """Adam on the structure parameters against ``loss_resource`` (of ``resource``) alone
    until it is zero.

    Returns:
        int: the number of steps taken.
    """
    model.set_resource_constraint(resource, target, lambda_resource)
    optimizer = torch.optim.Adam(model.structure_parameters(), lr=lr)
    for step in range(1, max_steps + 1):
        loss = model.resource_loss()['loss_resource']
        if loss.item() <= 0:
            return step - 1
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    raise RuntimeError(f'loss_resource still {loss.item():.4g} after {max_steps} steps: '
                       'raise --max-steps or --lr')


def match_target(model, lr: float, steps: int) -> None:
    """The width-only phase's two-sided loss, ``lambda |log(r_c / r_t)|``."""
    model.resource_two_sided = True
    optimizer = torch.optim.Adam(model.structure_parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        model.resource_loss()['loss_resource'].backward()
        optimizer.step()
    model.resource_two_sided = False


def measure(name: str, seed: int, lr: float, max_steps: int, match_steps: int) -> dict:
    cfg = load_config(osp.join(REPO, 'configs', 'dms', f'{name}.py'))
    hook = resource_hook_cfg(cfg)
    torch.manual_seed(seed)
    model = build_search_model(cfg).eval()
    random_importance(model, seed)
    supernet = model.supernet_resource('macs')
    target = parse_resource(hook['target'], 'macs')

    start = time.perf_counter()
    steps = descend_to_target(model, target, hook.get('lambda_resource', 1.0), lr, max_steps)
    match_target(model, lr / 10, match_steps)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        soft = model.estimator.estimate('macs').item()
        hard = model.estimator.estimate('macs', hard=True).item()
        hard_params = model.estimator.estimate('params', hard=True).item()

    subnet = subnet_from_algorithm(model)
    static = static_subnet(model, cfg, subnet)
    counted = count_macs(static, subnet['input_shape'])
    counted_params = count_params(static)
    diff = hard_mask_difference(model, static, subnet['input_shape'])
    assert subnet['macs'] == round(hard), (subnet['macs'], hard)
    return dict(name=name, input=subnet['input_shape'][-1], supernet=supernet, target=target,
                soft=soft, hard=hard, counted=counted, hard_params=hard_params,
                counted_params=counted_params, diff=diff, steps=steps, seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=MODELS, choices=MODELS)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--lr', type=float, default=1e-2,
                        help='Adam learning rate of the structure parameters')
    parser.add_argument('--max-steps', type=int, default=400)
    parser.add_argument('--match-steps', type=int, default=50,
                        help='steps of the two-sided loss after the target is reached')
    args = parser.parse_args()
    rows = []
    for name in args.models:
        row = measure(name, args.seed, args.lr, args.max_steps, args.match_steps)
        rows.append(row)
        print(f"{name}: target {row['target'] / 1e9:.4f}G, hard {row['hard'] / 1e9:.6f}G, "
              f"FlopAnalyzer {row['counted'] / 1e9:.6f}G after {row['steps']} + "
              f"{args.match_steps} steps ({row['seconds']:.1f} s)", flush=True)

    print(f'\nseed {args.seed}, Adam lr {args.lr} on the structure parameters alone, then '
          f'{args.match_steps} two-sided steps at {args.lr / 10:g}; MACs per image\n')
    print('| config | input | supernet (G) | target (G) | estimator soft (G) | estimator hard '
          '(G) | FlopAnalyzer, exported (G) | exported / estimator hard | exported / target | '
          'params: estimator = exported | output rel. diff | one-sided steps |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        same_params = 'yes' if round(r['hard_params']) == r['counted_params'] else \
            f"no ({r['hard_params']:.0f} vs {r['counted_params']})"
        print(f"| `{r['name']}.py` | {r['input']}² | {r['supernet'] / 1e9:.3f} "
              f"| {r['target'] / 1e9:.3f} | {r['soft'] / 1e9:.4f} | {r['hard'] / 1e9:.6f} "
              f"| {r['counted'] / 1e9:.6f} | {r['counted'] / r['hard'] - 1:+.4%} "
              f"| {r['counted'] / r['target'] - 1:+.3%} | {same_params} | {r['diff']:.1e} "
              f"| {r['steps']} |")


if __name__ == '__main__':
    main()
