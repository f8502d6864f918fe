#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#        tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# One task per GPU (GPUS tasks in all, GPUS_PER_NODE per node), launched by srun; tools/train.py
# reads its rank from the SLURM variables (--launcher slurm). E.g. 16 GPUs on 2 nodes:
#   GPUS=16 tools/slurm_train.sh dev dms_effnet configs/dms/effnet_b0.py work_dirs/effnet_b0
# GRES: the --gres request (default gpu:GPUS_PER_NODE); GRES= (empty) requests none, for CPU
# nodes, where the tasks use gloo on CPU by themselves (mmdms.compat).
set -x

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
GRES=${GRES-gpu:${GPUS_PER_NODE}}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    ${GRES:+--gres="${GRES}"} \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$(dirname "$0")"/train.py "${CONFIG}" --work-dir="${WORK_DIR}" \
    --launcher="slurm" "${@:5}"
