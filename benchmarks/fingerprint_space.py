# Copyright (c) mmdms contributors. All rights reserved.
"""A fingerprint of the search spaces of the family configs, to show that a refactor changed
nothing: ``subnet.json`` at a seeded random structure, the estimator's soft and hard MACs and
parameters, and the outputs of the soft-masked search model and of the exported static model.

``python benchmarks/fingerprint_space.py --out before.json [--models resnet50 ...]``
``python benchmarks/fingerprint_space.py --compare before.json after.json``

Run it on two checkouts (e.g. ``PYTHONPATH=<old checkout>``) and compare: structures must be
equal, counts and outputs equal up to float rounding (``--rtol``).
"""
import argparse
import json
import os.path as osp

import torch

import mmdms  # noqa: F401
from mmdms.apis import build_search_model, load_config, set_random_structure, static_subnet
from mmdms.structures import subnet_from_algorithm

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODELS = ['resnet50', 'effnet_b0', 'mobilenet_v2', 'deit_tiny', 'yolov8_n']
#: Fields of ``subnet.json`` layers that older versions did not write.
NEW_LAYER_FIELDS = ('kind', )


def _tensors(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _tensors(o)]


def _summary(out) -> list:
    return [dict(shape=list(t.shape), sum=t.double().sum().item(),
                 abs=t.double().abs().sum().item(), head=t.flatten()[:8].tolist())
            for t in _tensors(out)]


def fingerprint(name: str, seed: int) -> dict:
    cfg = load_config(osp.join(REPO, 'configs', 'dms', f'{name}.py'))
    torch.manual_seed(seed)
    model = build_search_model(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    set_random_structure(model, g)
    counts = {f'{r}_{kind}': model.estimator.estimate(r, hard=kind == 'hard').item()
              for r in ('macs', 'params') for kind in ('soft', 'hard')}
    shape = tuple(model.estimator.input_shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        masked = _summary(model(x, mode='tensor'))
    subnet = subnet_from_algorithm(model)
    static = static_subnet(model, cfg, subnet).eval()
    with torch.no_grad():
        exported = _summary(static(x, mode='tensor'))
    for layer in subnet['layers'].values():
        for field in NEW_LAYER_FIELDS:
            layer.pop(field, None)
    return dict(subnet=subnet, counts=counts, masked=masked, exported=exported)


def _close(a, b, rtol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rtol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, rtol) for x, y in zip(a, b))
    return a == b


def compare(before: dict, after: dict, rtol: float) -> bool:
    same = True
    for name in before:
        if name not in after:
            print(f'{name}: missing in the second fingerprint')
            same = False
            continue
        b, a = before[name], after[name]
        rows = [('subnet.json', b['subnet'] == a['subnet']),
                ('estimator counts', _close(b['counts'], a['counts'], rtol)),
                ('masked-model outputs', _close(b['masked'], a['masked'], rtol)),
                ('exported-model outputs', _close(b['exported'], a['exported'], rtol))]
        worst = max(abs(b['counts'][k] - a['counts'][k]) / max(abs(b['counts'][k]), 1)
                    for k in b['counts'])
        print(f'| {name} | ' + ' | '.join('equal' if ok else 'DIFFERENT' for _, ok in rows) +
              f' | {worst:.1e} |')
        same = same and all(ok for _, ok in rows)
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=MODELS, choices=MODELS)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='write the fingerprint (JSON) here')
    parser.add_argument('--compare', nargs=2, metavar=('BEFORE', 'AFTER'))
    parser.add_argument('--rtol', type=float, default=1e-5)
    args = parser.parse_args()
    if args.compare:
        before, after = (json.load(open(p)) for p in args.compare)
        print('| config | subnet.json | estimator soft/hard MACs, params | masked outputs | '
              'exported outputs | largest count difference (rel.) |')
        print('|---|---|---|---|---|---|')
        raise SystemExit(0 if compare(before, after, args.rtol) else 1)
    result = {}
    for name in args.models:
        result[name] = fingerprint(name, args.seed)
        print(f'{name}: {result[name]["counts"]}', flush=True)
    with open(args.out, 'w') as f:
        json.dump(result, f)


if __name__ == '__main__':
    main()
