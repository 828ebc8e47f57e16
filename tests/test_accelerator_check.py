"""`bash launch/device/accelerator_check.sh --cpu` (every stage of the accelerator check at tiny sizes)
passes on this machine and writes its report. Slow: about 40 s on one core (XLA compiles of the
train step in three precisions, a demo run killed by SIGTERM and resumed; conftest's dry_run_env)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_accelerator_check_cpu_dry_run_passes_every_stage(tmp_path, dry_run_env):
  out = tmp_path / 'out'
  env = dict(dry_run_env, PYTHON=sys.executable, SCRATCH=str(tmp_path / 'scratch'))
  proc = subprocess.run(['bash', os.path.join(REPO, 'launch', 'device', 'accelerator_check.sh'), '--cpu',
                         str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  stages = [line.split('\t') for line in (out / 'stages.tsv').read_text().splitlines()]
  assert [s[0] for s in stages] == ['deps', 'tests', 'steps-piczakcnn', 'pipeline', 'demo',
                                    'multirun']
  assert all(s[1] == '0' for s in stages), stages
  report = (out / 'accelerator_check.md').read_text()
  for precision in ('bfloat16', 'tf32', 'float32'):
    assert f'| piczakcnn | intermix | {precision} | 4 |' in report
  rows = [json.loads(line) for line in (out / 'steps.jsonl').read_text().splitlines()]
  assert len(rows) == 3 and all(r['finite'] and r['flops'] > 0 and r['mfu'] > 0 for r in rows)
  demo = json.loads((out / 'demo.jsonl').read_text().splitlines()[0])
  assert demo['first_status'] == 'preempted' and demo['status'] == 'finished'
  assert demo['final_error'] is not None and demo['epochs'] == 4
  assert (out / 'demo_float32_results.json').exists()
  multi = [json.loads(line) for line in (out / 'multirun.jsonl').read_text().splitlines()]
  assert [r['runs'] for r in multi] == [None, 1, 2] and all(r['finite'] for r in multi)
  assert '| piczakcnn | intermix | batch | vmap | 2 |' in report
  assert '| piczakcnn | intermix | batch | - | one run alone |' in report
