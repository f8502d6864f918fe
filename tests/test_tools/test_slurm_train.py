# Copyright (c) mmdms contributors. All rights reserved.
"""tools/slurm_train.sh: its srun command line, and a CPU run through a stand-in srun that sets
the SLURM variables as srun does (tools/train.py --launcher slurm, gloo on CPU)."""
import glob
import os
import os.path as osp
import shlex
import stat
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'slurm_train.sh')
CONFIG = osp.join('configs', 'demo', 'digits_resnet.py')

# Records its arguments, drops srun's own options and starts --ntasks copies of the command.
FAKE_SRUN = r"""#!/usr/bin/env bash
printf '%s\n' "$*" > "$SRUN_LOG"
[ -n "$SRUN_DRY_RUN" ] && exit 0
ntasks=1
while [ $# -gt 0 ]; do
  case "$1" in
    -p) shift 2 ;;
    --ntasks=*) ntasks=${1#--ntasks=}; shift ;;
    -*) shift ;;
    *) break ;;
  esac
done
pids=()
for ((i = 0; i < ntasks; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$ntasks SLURM_NODELIST=localhost "$@" &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
exit $rc
"""


def fake_srun(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN)
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    return str(bin_dir)


def run_script(tmp_path, *args, **env):
    log = str(tmp_path / 'srun_args.txt')
    env = dict(os.environ, PATH=fake_srun(tmp_path) + os.pathsep + os.environ['PATH'],
               SRUN_LOG=log, PYTHON=sys.executable, **env)
    result = subprocess.run(['bash', SCRIPT, *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    with open(log) as f:
        return result, shlex.split(f.read())


def test_script_is_executable_and_valid_bash():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(['bash', '-n', SCRIPT], check=True)


def test_srun_command_line_like_openmmlab(tmp_path):
    result, args = run_script(tmp_path, 'dev', 'dms_search', 'configs/dms/effnet_b0.py',
                              'work_dirs/x', '--amp', SRUN_DRY_RUN='1', GPUS='16',
                              SRUN_ARGS='--quotatype=auto')
    assert result.returncode == 0, result.stderr
    assert args[:2] == ['-p', 'dev'] and '--job-name=dms_search' in args
    for option in ('--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8', '--cpus-per-task=5',
                   '--kill-on-bad-exit=1', '--quotatype=auto'):
        assert option in args, (option, args)
    command = args[args.index(sys.executable):]
    assert command[1:] == ['-u', osp.join(osp.dirname(SCRIPT), 'train.py'),
                           'configs/dms/effnet_b0.py', '--work-dir=work_dirs/x',
                           '--launcher=slurm', '--amp']


def test_cpu_nodes_train_with_gloo(tmp_path):
    work = str(tmp_path / 'work')
    result, args = run_script(
        tmp_path, 'cpu', 'digits', CONFIG, work, '--cfg-options', 'train_cfg.max_epochs=1',
        'train_dataloader.dataset.indices=32', 'train_dataloader.batch_size=16',
        'val_dataloader.dataset.indices=40',
        GPUS='1', GPUS_PER_NODE='1', CPUS_PER_TASK='1', GRES='', MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(29500 + (os.getpid() + 250) % 1000))
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert not any(a.startswith('--gres') for a in args)  # GRES= requests no GPUs
    with open(sorted(glob.glob(osp.join(work, '*', '*.log')))[-1]) as f:
        log = f.read()
    assert 'Distributed launcher: slurm' in log and 'Distributed training: True' in log
    assert osp.exists(osp.join(work, 'epoch_1.pth'))
