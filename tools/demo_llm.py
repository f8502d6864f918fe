# Copyright (c) mmdms contributors. All rights reserved.
"""The language-model demo (``make demo-llm``): DMS_p on a small Llama, on the CPU.

1. the supernet: a small grouped-query-attention Llama (``configs/dms/demo/
   llama_demo_pretrain.py``: bytes as tokens, 10 layers, 2.03M parameters) trained from scratch
   on the prose of Debian's Python documentation, once per setting (cached as a Hugging Face
   directory under ``--cache-dir``, keyed by its settings: ``mmdms.apis.cached_pretraining``);
2. DMS_p: a search from the trained supernet with the LM loss + the parameter resource loss to
   70% of its parameters (``configs/dms/demo/llama_demo_search.py``), the export, a recovery
   fine-tune, and the Hugging Face export with per-layer widths (``trust_remote_code``);
3. uniform width scaling to the DMS subnet's parameter count (within 2%), exported and
   fine-tuned alike (the same recovery budget);
4. the DMS search with widths tied across layers, exported alike as a plain
   ``LlamaForCausalLM`` (no remote code);
5. both Hugging Face directories loaded back with ``AutoModelForCausalLM.from_pretrained`` and
   their held-out perplexity measured again; ``summary.json`` and a printed table.

Perplexity is per byte on the held-out tail (the last 1% of the 128-byte blocks).

``python tools/demo_llm.py [--work-dir work_dirs/demo_llm] [--cache-dir work_dirs/llm_supernet]``
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

sys.path.append(osp.dirname(osp.abspath(__file__)))  # tools/ (also under runpy), for the helper
from polite_threads import passive_omp_wait  # noqa: E402

passive_omp_wait()  # before torch loads

import mmdms  # noqa: E402,F401  (compat shims and registrations come before any OpenMMLab import)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.config import Config  # noqa: E402

from mmdms.apis import (block_influence, build_search_model, cached_pretraining,  # noqa: E402
                        drop_layers_by_influence, export_subnet, llama_taylor_importance,
                        load_config, run_search, run_training, taylor_structure,
                        uniform_structure)
from mmdms.deploy.hf import export_hf  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN_CONFIG = osp.join(REPO, 'configs', 'dms', 'demo', 'llama_demo_pretrain.py')
SEARCH_CONFIG = osp.join(REPO, 'configs', 'dms', 'demo', 'llama_demo_search.py')
DEBIAN_TEXT = '/usr/share/doc/python3.11/html/_sources'
INSTALL = 'apt-get install -y python3-doc'


def cpu_seconds() -> float:
    """User + system CPU-seconds of this process so far."""
    times = os.times()
    return times.user + times.system


def ensure_text(data_root: str) -> None:
    """Make sure the corpus is on this machine. Debian's python3-doc is installed with apt-get
    when it is missing and this process may (root, apt-get present); otherwise one message
    with the command. Nothing is downloaded by mmdms itself."""
    if osp.isdir(data_root):
        return
    if data_root == DEBIAN_TEXT and shutil.which('apt-get') and os.geteuid() == 0:
        print(f'demo_llm: {data_root} is missing; running: {INSTALL}', flush=True)
        result = subprocess.run(INSTALL.split(), env=dict(os.environ,
                                                          DEBIAN_FRONTEND='noninteractive'))
        if result.returncode == 0 and osp.isdir(data_root):
            return
    sys.exit(f"demo_llm: the text corpus '{data_root}' is missing. Install Debian's Python "
             f"documentation with `sudo {INSTALL}` (or point LLM_DATA at a directory of "
             '*.rst.txt files) and run again.')


def search_config(supernet_dir: str, iters: int, seed: int, target_ratio: float = 0.7,
                  tied: bool = False, search_depth: bool = False,
                  data_options: dict = None) -> Config:
    """``configs/dms/demo/llama_demo_search.py`` from ``supernet_dir``, ``iters`` long (the last
    30% matching widths to the target), seeded, optionally with tied widths or the depth
    searched (the layer-dropping baseline needs the depth mutable)."""
    cfg = Config.fromfile(SEARCH_CONFIG)
    cfg.merge_from_dict(dict(
        model=dict(architecture=dict(pretrained_path=supernet_dir),
                   mutator=dict(search_depth=search_depth)),
        train_cfg=dict(max_iters=iters, val_interval=iters, val_begin=iters + 1),  # no val
        param_scheduler=[dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0,
                              end=iters)],
        default_hooks=dict(checkpoint=dict(interval=iters)),
        randomness=dict(seed=seed, deterministic=False), **(data_options or {})))
    if tied:
        cfg.model.mutator.adapter_args = dict(
            LlamaForCausalLMAdapter=dict(tie_layer_widths=True))
    for hook in cfg.custom_hooks:
        if hook['type'] == 'ResourceLossHook':
            hook.update(target_ratio=target_ratio, width_only_iters=round(0.3 * iters))
    return load_config(cfg)


def recovery_options(iters: int, seed: int, lr: float = 5e-4, data_options: dict = None) -> dict:
    """The recovery fine-tune of an exported subnet (its ``config.py``): ``iters`` iterations
    of AdamW at ``lr``, cosine-decayed to a tenth; the same for every method."""
    # val_begin: the loop's own validation is skipped; run_training validates once at the end
    return dict(train_cfg=dict(max_iters=iters, val_interval=iters, val_begin=iters + 1),
                default_hooks=dict(checkpoint=dict(interval=iters)),
                optim_wrapper=dict(optimizer=dict(lr=lr)),
                param_scheduler=[dict(type='CosineAnnealingLR', by_epoch=False, begin=0,
                                      end=iters, eta_min=lr / 10)],
                randomness=dict(seed=seed, deterministic=False), **(data_options or {}))


def recover(subnet: dict, work_dir: str, iters: int, seed: int, data_options: dict = None
            ) -> dict:
    """Fine-tune an exported subnet; its held-out perplexity and the final checkpoint."""
    start = cpu_seconds()
    metrics = run_training(subnet['files']['config.py'], work_dir,
                           recovery_options(iters, seed, data_options=data_options))
    return dict(ppl=metrics['lm/perplexity'], checkpoint=metrics['checkpoint'],
                cpu_seconds=cpu_seconds() - start)


def dms_subnet(cfg: Config, work_dir: str) -> dict:
    """Search (DMS_p) and export; the export's result with the search's CPU-seconds."""
    start = cpu_seconds()
    found = run_search(cfg, osp.join(work_dir, 'search'))
    cost = cpu_seconds() - start
    subnet = export_subnet(cfg, found['checkpoint'], osp.join(work_dir, 'subnet'), force=True)
    return dict(subnet, prune_cpu_seconds=cost, search_target=found['target'])


def _export_structure(cfg: Config, model, work_dir: str, meta: dict, cost: float) -> dict:
    checkpoint = osp.join(work_dir, 'structure.pth')
    os.makedirs(work_dir, exist_ok=True)
    torch.save(dict(meta=meta, state_dict=model.state_dict()), checkpoint)
    subnet = export_subnet(cfg, checkpoint, osp.join(work_dir, 'subnet'), force=True)
    return dict(subnet, prune_cpu_seconds=cost)


def uniform_subnet(cfg: Config, params: float, work_dir: str) -> dict:
    """The same fraction of every width (the first heads and channels) at ``params``
    (within 2%), exported with the supernet's weights."""
    start = cpu_seconds()
    model = build_search_model(cfg)
    uniform_structure(model, params, resource='params')
    return _export_structure(cfg, model, work_dir, dict(method='uniform'),
                             cpu_seconds() - start)


def calibration_batches(cfg: Config, num_batches: int, batch_size: int, seed: int) -> list:
    """Random training blocks (LLM-Pruner and ShortGPT calibrate on a few samples)."""
    from mmpretrain.registry import DATASETS
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(dataset), generator=generator)[:num_batches * batch_size]
    return list(dataset.blocks[index].split(batch_size))


def taylor_subnet(cfg: Config, params: float, work_dir: str, batches: list) -> dict:
    """LLM-Pruner: block-wise first-order Taylor pruning at ``params`` (within 2%)."""
    start = cpu_seconds()
    model = build_search_model(cfg)
    scores = llama_taylor_importance(model.architecture, batches)
    taylor_structure(model, scores, params)
    return _export_structure(cfg, model, work_dir, dict(method='taylor'),
                             cpu_seconds() - start)


def influence_subnet(cfg: Config, params: float, work_dir: str, batches: list) -> dict:
    """ShortGPT: the lowest-Block-Influence layers removed, to the count closest to ``params``
    (``cfg`` must search the depth)."""
    start = cpu_seconds()
    model = build_search_model(cfg)
    influence = block_influence(model.architecture, batches)
    drop_layers_by_influence(model, influence, params)
    result = _export_structure(cfg, model, work_dir, dict(method='block_influence'),
                               cpu_seconds() - start)
    return dict(result, block_influence=[round(v, 5) for v in influence.tolist()])


@torch.no_grad()
def hf_perplexity(hf_dir: str, cfg: Config, trust_remote_code: bool) -> tuple:
    """Load a Hugging Face directory with ``AutoModelForCausalLM.from_pretrained`` and measure
    its perplexity on the held-out blocks of ``cfg``; ``(perplexity, parameters)``."""
    from mmpretrain.registry import DATASETS
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=trust_remote_code)
    model.eval()
    blocks = DATASETS.build(cfg.val_dataloader.dataset).blocks
    nll, tokens = 0.0, 0
    for ids in blocks.split(cfg.val_dataloader.batch_size):
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        nll += F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction='sum').item()
        tokens += ids[:, 1:].numel()
    return math.exp(nll / tokens), model.num_parameters()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='mmdms language-model demo: DMS_p on a small '
                                     'Llama vs uniform width scaling, on the CPU')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo_llm'))
    parser.add_argument('--cache-dir', default=osp.join('work_dirs', 'llm_supernet'),
                        help='trained supernets, one directory per setting')
    parser.add_argument('--search-iters', type=int, default=100)
    parser.add_argument('--recovery-iters', type=int, default=100)
    parser.add_argument('--target-ratio', type=float, default=0.7)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--pretrain-options', type=json.loads, default=None,
                        help='JSON dict merged into the supernet config (changes its cache key)')
    parser.add_argument('--data-options', type=json.loads, default=None,
                        help='JSON dict merged into the search and recovery configs (the data)')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = osp.abspath(args.work_dir)
    pretrain_cfg = Config.fromfile(PRETRAIN_CONFIG)
    if args.pretrain_options:
        pretrain_cfg.merge_from_dict(args.pretrain_options)
    ensure_text(pretrain_cfg.train_dataloader.dataset.data_root)
    start = time.perf_counter()

    supernet = cached_pretraining(pretrain_cfg, args.cache_dir)
    print(f"supernet: {supernet['hf_dir']} ({'cached' if supernet['cached'] else 'trained'}), "
          f"{supernet['params']} parameters, held-out perplexity "
          f"{supernet['lm/perplexity']:.3f}", flush=True)
    cfg = search_config(supernet['hf_dir'], args.search_iters, args.seed, args.target_ratio,
                        data_options=args.data_options)
    dms = dms_subnet(cfg, osp.join(work, 'dms'))
    dms_rec = recover(dms, osp.join(work, 'dms', 'recovery'), args.recovery_iters, args.seed,
                      args.data_options)
    hf = export_hf(dms['work_dir'], osp.join(work, 'hf_dms'), dms_rec['checkpoint'],
                   force=True)

    uniform = uniform_subnet(cfg, dms['params'], osp.join(work, 'uniform'))
    uniform_rec = recover(uniform, osp.join(work, 'uniform', 'recovery'), args.recovery_iters,
                          args.seed, args.data_options)

    tied_cfg = search_config(supernet['hf_dir'], args.search_iters, args.seed,
                             args.target_ratio, tied=True, data_options=args.data_options)
    tied = dms_subnet(tied_cfg, osp.join(work, 'dms_tied'))
    tied_rec = recover(tied, osp.join(work, 'dms_tied', 'recovery'), args.recovery_iters,
                       args.seed, args.data_options)
    hf_tied = export_hf(tied['work_dir'], osp.join(work, 'hf_dms_tied'), tied_rec['checkpoint'],
                        uniform=True, force=True)

    ppl_hf, params_hf = hf_perplexity(hf['path'], cfg, trust_remote_code=True)
    ppl_hf_tied, params_hf_tied = hf_perplexity(hf_tied['path'], cfg, trust_remote_code=False)
    summary = dict(
        supernet_params=supernet['params'],
        target_params=dms['search_target'],
        subnet_params=dms['params'],
        uniform_params=uniform['params'],
        tied_params=tied['params'],
        ppl_supernet=supernet['lm/perplexity'],
        ppl_dms=dms_rec['ppl'],
        ppl_uniform=uniform_rec['ppl'],
        ppl_dms_tied=tied_rec['ppl'],
        hf_dir=hf['path'],
        hf_tied_dir=hf_tied['path'],
        hf_reloaded=dict(ppl=ppl_hf, params=params_hf, trust_remote_code=True),
        hf_tied_reloaded=dict(ppl=ppl_hf_tied, params=params_hf_tied, trust_remote_code=False),
        supernet_cache=dict(key=supernet['key'], cached=supernet['cached']),
        search_iters=args.search_iters, recovery_iters=args.recovery_iters, seed=args.seed,
        search_cpu_seconds=round(dms['prune_cpu_seconds'], 1),
        # the same runs as benchmarks/bench_llm.py's 'dms' and 'uniform' of this seed
        # (bench_llm.py --import-demo adds them to its results instead of running them again)
        bench_records=[
            dict(method=method, seed=args.seed, status='ok', params=result['params'],
                 supernet_params=supernet['params'], dms_params=dms['params'],
                 ppl=recovered['ppl'], ppl_supernet=supernet['lm/perplexity'],
                 prune_cpu_s=round(result['prune_cpu_seconds'], 1),
                 recovery_cpu_s=round(recovered['cpu_seconds'], 1),
                 settings=dict(supernet=supernet['key'], search_iters=args.search_iters,
                               recovery_iters=args.recovery_iters))
            for method, result, recovered in (('dms', dms, dms_rec),
                                              ('uniform', uniform, uniform_rec))],
        wall_seconds=round(time.perf_counter() - start, 1))
    os.makedirs(work, exist_ok=True)
    with open(osp.join(work, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)

    print(dms['table'])
    print(f"\n{'model':<34}{'params':>10}{'held-out ppl':>14}")
    print(f"{'supernet (trained here)':<34}{summary['supernet_params'] / 1e6:>9.3f}M"
          f"{summary['ppl_supernet']:>14.3f}")
    print(f"{'target (70%)':<34}{summary['target_params'] / 1e6:>9.3f}M")
    for name, params, ppl in (
            ('DMS_p (per-layer widths)', 'subnet_params', 'ppl_dms'),
            ('uniform width scaling', 'uniform_params', 'ppl_uniform'),
            ('DMS_p (tied widths)', 'tied_params', 'ppl_dms_tied')):
        print(f'{name:<34}{summary[params] / 1e6:>9.3f}M{summary[ppl]:>14.3f}')
    print(f"\nHugging Face directories (reloaded: perplexity {ppl_hf:.3f} / {ppl_hf_tied:.3f}):"
          f"\n  {hf['path']} (trust_remote_code=True)\n  {hf_tied['path']} (plain Llama)")
    print(f"summary: {osp.join(work, 'summary.json')}")
    return summary


if __name__ == '__main__':
    main()
