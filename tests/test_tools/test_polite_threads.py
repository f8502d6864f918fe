# Copyright (c) mmdms contributors. All rights reserved.
"""The tools let idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user chose,
and set it before torch loads (OpenMP reads it once, when torch's runtime is loaded)."""
import ast
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = ['train.py', 'test.py', 'export_subnet.py', 'demo.py', 'deploy/export_onnx.py']


@pytest.mark.parametrize('tool', TOOLS)
def test_tool_sets_the_policy_before_importing_torch(tool):
    tree = ast.parse(open(osp.join(REPO, 'tools', tool)).read())
    statements = [(n.lineno, n) for n in tree.body]
    call = next(line for line, n in statements if isinstance(n, ast.Expr) and isinstance(
        n.value, ast.Call) and getattr(n.value.func, 'id', None) == 'passive_omp_wait')
    heavy = [line for line, n in statements if isinstance(n, (ast.Import, ast.ImportFrom)) and any(
        name.split('.')[0] in ('torch', 'mmdms', 'mmengine', 'numpy') for name in (
            [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or '']))]
    assert heavy and call < min(heavy)


@pytest.mark.parametrize('preset, expected', [(None, 'PASSIVE'), ('ACTIVE', 'ACTIVE')])
def test_the_policy_is_passive_unless_the_user_set_one(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    if preset:
        env['OMP_WAIT_POLICY'] = preset
    script = ('import os, sys; sys.path.insert(0, "tools"); '
              'from polite_threads import passive_omp_wait; passive_omp_wait(); '
              'print(os.environ["OMP_WAIT_POLICY"])')
    out = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, text=True,
                         capture_output=True, timeout=60)
    assert out.stdout.strip() == expected, out.stderr
