# Copyright (c) mmdms contributors. All rights reserved.
"""Wall time of a command alone and next to a CPU-bound neighbour (a polite-neighbour check).

``python benchmarks/bench_neighbour.py [--neighbour-threads 2] -- CMD [ARGS ...]``

The neighbour is another torch process doing 1024x1024 matmuls in a loop with OpenMP's default
settings (``OMP_WAIT_POLICY`` removed from its environment), started before CMD and killed after
it; ``--neighbour-threads 0`` runs CMD alone. CMD runs with this process's environment as it is.
Prints one markdown table row per run: wall seconds, CPU seconds of CMD (children's user +
system) and the neighbour's matmuls per second while CMD ran.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

NEIGHBOUR = '''
import sys, time, torch
a = torch.randn(1024, 1024)
count = 0
while True:
    a @ a
    count += 1
    if count % 20 == 0:
        print(count, time.perf_counter(), flush=True)
'''


def run(command, neighbour_threads: int) -> dict:
    neighbour = None
    log = tempfile.TemporaryFile('w+')  # a file, not a pipe: a full pipe would stop it
    if neighbour_threads:
        env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
        env['OMP_NUM_THREADS'] = str(neighbour_threads)
        neighbour = subprocess.Popen([sys.executable, '-c', NEIGHBOUR], env=env, stdout=log,
                                     text=True)
        while not os.fstat(log.fileno()).st_size:  # until it runs
            time.sleep(0.1)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rate = None
    if neighbour is not None:
        neighbour.kill()
        neighbour.wait()
        log.seek(0)
        lines = [line.split() for line in log.read().splitlines() if len(line.split()) == 2]
        inside = [(int(n), float(t)) for n, t in lines if start <= float(t) <= start + wall]
        if len(inside) > 1:
            rate = (inside[-1][0] - inside[0][0]) / (inside[-1][1] - inside[0][1])
    if result.returncode:  # e.g. stopped by a timeout: the row says so
        print(result.stderr[-3000:], file=sys.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(wall=wall, cpu=cpu, rate=rate, returncode=result.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--neighbour-threads', type=int, default=2,
                        help='intra-op threads of the neighbour; 0 runs CMD alone')
    parser.add_argument('command', nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    out = run(command, args.neighbour_threads)
    policy = os.environ.get('OMP_WAIT_POLICY', '(unset)')
    rate = f"{out['rate']:.1f}" if out['rate'] else '-'
    status = f" (exit {out['returncode']})" if out['returncode'] else ''
    print(f"| {' '.join(command)} | OMP_WAIT_POLICY={policy} | neighbour threads "
          f"{args.neighbour_threads} | {out['wall']:.1f}{status} | {out['cpu']:.1f} | {rate} |",
          flush=True)


if __name__ == '__main__':
    main()
