# Copyright (c) mmdms contributors. All rights reserved.
"""DMS_p against three LLM pruning baselines on the small Llama of ``make demo-llm`` (issue #16).

From the same trained supernet (``configs/dms/demo/llama_demo_pretrain.py``, cached as the demo
caches it), per seed, each method prunes to the same parameter count and gets the same recovery
fine-tune (the exported subnet's ``config.py``, ``--recovery-iters`` iterations):

* ``dms``: DMS_p, the search of ``configs/dms/demo/llama_demo_search.py`` (heads per key/value
  group and FFN widths of every layer, LM loss + parameter resource loss to 70%);
* ``uniform``: the same fraction of every width, the first heads and channels
  (``mmdms.apis.uniform_structure``), at the DMS subnet's parameter count (within 2%);
* ``taylor``: LLM-Pruner's one-shot first-order Taylor importance (``|w * g|`` summed per
  key/value group of heads and per FFN channel, gradients over the calibration batches), the
  same fraction pruned in every layer as LLM-Pruner's default block-wise mode, to the DMS
  subnet's count (within 2%; ``mmdms.apis.taylor_structure``);
* ``shortgpt``: ShortGPT's layer dropping, the decoder layers of lowest Block Influence
  (``1 - mean cos(input, output)`` on the calibration batches) removed, as many as bring the
  parameter count closest to the DMS subnet's (``mmdms.apis.drop_layers_by_influence``).

Reported: held-out perplexity (per byte) after recovery, the parameter count, the CPU-seconds
of the search / pruning (this process's user + system time) and of the recovery. Results are
appended to ``--results`` (one JSON line per method and seed) as they are produced; a rerun
skips what is there. ``--table`` prints the markdown table of the results file.

``python benchmarks/bench_llm.py --seeds 0 1 2`` / ``python benchmarks/bench_llm.py --table``
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import traceback

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))
demo_llm = None  # tools/demo_llm.py (polite threads, mmdms, the pipeline); not for --table


def _pipeline():
    global demo_llm
    if demo_llm is None:
        import demo_llm as module
        demo_llm = module
    return demo_llm

METHODS = ('dms', 'uniform', 'taylor', 'shortgpt')
LABELS = dict(dms='DMS_p (ours)', uniform='uniform width', taylor='Taylor one-shot (LLM-Pruner)',
              shortgpt='layer dropping by BI (ShortGPT)')


def read_results(path: str) -> list:
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append(path: str, record: dict) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    print(json.dumps(record), flush=True)


def run_method(method: str, seed: int, args, supernet: dict, dms_params: float) -> dict:
    """Prune the supernet by ``method``, recover, and return the record."""
    work = osp.join(args.work_dir, f'seed{seed}', method)
    cfg = demo_llm.search_config(supernet['hf_dir'], args.search_iters, seed,
                                 search_depth=method == 'shortgpt')
    if method == 'dms':
        subnet = demo_llm.dms_subnet(cfg, work)
    elif method == 'uniform':
        subnet = demo_llm.uniform_subnet(cfg, dms_params, work)
    else:
        batches = demo_llm.calibration_batches(cfg, args.calib_batches, args.calib_batch_size,
                                               seed)
        make = demo_llm.taylor_subnet if method == 'taylor' else demo_llm.influence_subnet
        subnet = make(cfg, dms_params, work, batches)
    recovered = demo_llm.recover(subnet, osp.join(work, 'recovery'), args.recovery_iters, seed)
    record = dict(method=method, seed=seed, status='ok', params=subnet['params'],
                  supernet_params=supernet['params'], dms_params=dms_params,
                  ppl=recovered['ppl'], ppl_supernet=supernet['lm/perplexity'],
                  prune_cpu_s=round(subnet['prune_cpu_seconds'], 1),
                  recovery_cpu_s=round(recovered['cpu_seconds'], 1))
    if 'block_influence' in subnet:
        record['block_influence'] = subnet['block_influence']
    return record


def settings(args, supernet: dict) -> dict:
    return dict(supernet=supernet['key'], search_iters=args.search_iters,
                recovery_iters=args.recovery_iters, calib=[args.calib_batches,
                                                           args.calib_batch_size])


def import_demo(path: str, results: str, setting: dict) -> None:
    """Add the 'dms' and 'uniform' runs of ``make demo-llm`` (its ``summary.json``) to the
    results when they were made with the same supernet, search and recovery: they are the
    benchmark's runs of that seed, made by the same code."""
    with open(path) as f:
        records = json.load(f).get('bench_records', [])
    known = {(r['method'], r['seed'], json.dumps(r['settings'], sort_keys=True))
             for r in read_results(results) if r['status'] == 'ok'}
    for record in records:
        record = dict(record, settings=dict(record['settings'], calib=setting['calib']),
                      source=osp.abspath(path))
        if record['settings'] != setting:
            print(f"{path}: the demo's {record['method']} run has other settings "
                  f"({record['settings']}, here {setting}); not imported", flush=True)
        elif (record['method'], record['seed'], json.dumps(setting, sort_keys=True)) \
                not in known:
            append(results, record)


def run(args) -> None:
    _pipeline()
    supernet = demo_llm.cached_pretraining(demo_llm.PRETRAIN_CONFIG, args.cache_dir)
    setting = settings(args, supernet)
    if args.import_demo:
        import_demo(args.import_demo, args.results, setting)
    for seed in args.seeds:
        for method in args.methods:
            done = [r for r in read_results(args.results) if r['seed'] == seed and
                    r['method'] == method and r.get('settings') == setting and
                    r['status'] == 'ok']
            if done:
                continue
            dms = [r for r in read_results(args.results) if r['seed'] == seed and
                   r['method'] == 'dms' and r.get('settings') == setting and
                   r['status'] == 'ok']
            if method != 'dms' and not dms:
                print(f'seed {seed}: {method} needs the DMS subnet of the seed first '
                      '(its parameter count is the target); run --methods dms', flush=True)
                continue
            try:
                record = run_method(method, seed, args, supernet,
                                    dms[0]['params'] if dms else None)
            except Exception as e:  # recorded and reported; a rerun tries again
                traceback.print_exc()
                record = dict(method=method, seed=seed, status='failed',
                              error=f'{type(e).__name__}: {e}')
            append(args.results, dict(record, settings=setting))


def _mean_std(values: list) -> str:
    if len(values) == 1:
        return f'{values[0]:.3f}'
    return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'


def table(path: str) -> str:
    records = [r for r in read_results(path) if r['status'] == 'ok']
    if not records:
        return f'no results in {path}'
    latest = records[-1]['settings']
    records = [r for r in records if r['settings'] == latest]
    supernet = records[0]
    lines = [f"supernet: {supernet['supernet_params']:,} parameters, held-out perplexity "
             f"{supernet['ppl_supernet']:.3f}; search {latest['search_iters']} iterations, "
             f"recovery {latest['recovery_iters']} iterations, calibration "
             f"{latest['calib'][0]} x {latest['calib'][1]} blocks\n",
             '| method | params (% of supernet) | held-out ppl (mean ± std) | per seed | '
             'search / pruning CPU-s | recovery CPU-s |',
             '|---|---|---|---|---|---|']
    for method in METHODS:
        rows = sorted((r for r in records if r['method'] == method), key=lambda r: r['seed'])
        if not rows:
            continue
        params = statistics.mean(r['params'] for r in rows)
        seeds = ', '.join(f"{r['seed']}: {r['ppl']:.3f}" for r in rows)
        lines.append(
            f"| {LABELS[method]} | {params / 1e6:.3f}M "
            f"({100 * params / rows[0]['supernet_params']:.1f}%) "
            f"| {_mean_std([r['ppl'] for r in rows])} | {seeds} | "
            f"{statistics.mean(r['prune_cpu_s'] for r in rows):.0f} | "
            f"{statistics.mean(r['recovery_cpu_s'] for r in rows):.0f} |")
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description='DMS_p vs LLM pruning baselines (issue #16)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    parser.add_argument('--results', default=osp.join('work_dirs', 'bench', 'llm.jsonl'))
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'bench', 'llm'))
    parser.add_argument('--cache-dir', default=osp.join('work_dirs', 'llm_supernet'))
    parser.add_argument('--search-iters', type=int, default=100)
    parser.add_argument('--recovery-iters', type=int, default=100)
    parser.add_argument('--calib-batches', type=int, default=4)
    parser.add_argument('--calib-batch-size', type=int, default=16)
    parser.add_argument('--import-demo', metavar='SUMMARY_JSON',
                        help="take the 'dms' and 'uniform' runs of make demo-llm's summary.json "
                        '(same settings) instead of running them again')
    parser.add_argument('--table', action='store_true', help='print the table and exit')
    args = parser.parse_args()
    if not args.table:
        run(args)
    print(table(args.results))


if __name__ == '__main__':
    main()
