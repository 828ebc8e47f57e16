"""benchmarks.roofline (the memory floor of a K-run step), benchmarks.profile_step's `kernels`
summary of a Perfetto trace, and benchmarks.multirun's profile rows: the tools the accelerator
check's profile stage (launch/device/accelerator_check.py) runs, checked on this CPU (a GPU trace
is written here by hand in the layout the JAX profiler uses: '/device:GPU:0' processes, one thread
per stream)."""
import argparse
import gzip
import json
import os
import subprocess
import sys

import jax
import pytest

from benchmarks import harness, profile_step, roofline
from launch.device import accelerator_check

TINY = dict(backbone='piczakcnn', strategy='intermix', width=0.25, fc_units=32,
            precision='float32', batch=4, data='batch', device='cpu')


def test_state_bytes_count_every_parameter_and_the_momentum():
  sizes = roofline.state_bytes(TINY)
  model, _ = harness.model_and_strategy('piczakcnn', 'intermix', width=0.25, fc_units=32)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((2, model.input_length), 'float32'))['params']
  n = sum(x.size for x in jax.tree.leaves(params))
  assert sizes['n_params'] == n and sizes['params'] == 4 * n
  # Nesterov momentum: one float32 trace per parameter, plus the schedule's int32 step counts.
  assert 4 * n <= sizes['opt_state'] <= 4 * n + 16
  assert roofline.floors(sizes) == (7 * sizes['params'] + 2 * sizes['opt_state'],
                                    2 * sizes['params'] + 2 * sizes['opt_state'])


def test_analyse_divides_by_the_bandwidth_and_uses_each_groups_own_one_run():
  rows = [dict(TINY, runs=None, method=None, step_s=1e-3, source='a'),
          dict(TINY, runs=4, method='vmap', step_s=2e-3, xla_bytes_accessed=8e6, source='a'),
          dict(TINY, runs=None, method=None, step_s=4e-3, precision='bfloat16', source='a'),
          dict(TINY, runs=2, method='vmap', step_s=8e-3, precision='bfloat16', source='a'),
          dict(TINY, runs=2, method='vmap', step_s=1.0, batch=8, source='a')]  # no one-run row
  out = roofline.analyse(rows, bandwidth_tbps=2.0)
  assert len(out) == 4
  floor = roofline.floors(roofline.state_bytes(TINY))[0]
  assert out[1]['x_one_run'] == pytest.approx(4 * 1e-3 / 2e-3)
  assert out[1]['floor_s'] == pytest.approx(4 * floor / 2e12)
  assert out[1]['ceiling_x'] == pytest.approx(1e-3 * 2e12 / floor)
  assert out[1]['row_xla_bytes_per_run'] == pytest.approx(2e6)
  assert out[3]['x_one_run'] == pytest.approx(2 * 4e-3 / 8e-3)  # its own (bfloat16) one run
  assert '| piczakcnn | vmap | 4 | 2.00 | 2.00 |' in roofline.table(out, 2.0)


def test_the_h200_rows_give_the_ceiling_the_readme_states():
  out = roofline.analyse([dict(json.loads(line), source='h200') for line in open(os.path.join(
      roofline.ROOT, 'results/accelerator/h200-2026-11-30/multirun.jsonl'))], roofline.H200_TBPS)
  k20 = next(r for r in out if r['backbone'] == 'piczakcnn' and r['runs'] == 20)
  assert k20['x_one_run'] == pytest.approx(2.33, abs=0.01)
  assert k20['ceiling_x'] == pytest.approx(5.7, abs=0.05)  # benchmarks/README.md
  assert k20['strict_ceiling_x'] == pytest.approx(12.7, abs=0.05)


def _write_trace(folder, events, meta):
  run = folder / 'plugins' / 'profile' / '2026_11_30_00_00_00'
  run.mkdir(parents=True)
  with gzip.open(run / 'perfetto_trace.json.gz', 'wt') as f:
    json.dump(dict(traceEvents=events), f)
  (folder / 'meta.json').write_text(json.dumps(meta))


META = dict(backbone='piczakcnn', strategy='intermix', runs=20, method='vmap',
            precision='float32', batch=64, step_s=9.64e-3, steps=2)


def test_kernels_sums_the_device_tracks_per_step(tmp_path, capsys):
  events = [dict(ph='M', name='process_name', pid=1, args=dict(name='/host:CPU')),
            dict(ph='M', name='process_name', pid=7, args=dict(name='/device:GPU:0')),
            dict(ph='M', name='thread_name', pid=7, tid=3, args=dict(name='Stream #13(Compute)')),
            dict(ph='M', name='thread_name', pid=1, tid=1, args=dict(name='python')),
            dict(ph='X', name='cutlass_gemm', pid=7, tid=3, ts=0, dur=3000.0),
            dict(ph='X', name='cutlass_gemm', pid=7, tid=3, ts=5, dur=3000.0),
            dict(ph='X', name='loop_select_fusion', pid=7, tid=3, ts=9, dur=1000.0),
            dict(ph='X', name='PjitFunction(step)', pid=1, tid=1, ts=0, dur=9e6)]  # host: left out
  _write_trace(tmp_path, events, META)
  profile_step.kernels(argparse.Namespace(dir=str(tmp_path), top=10))
  out = capsys.readouterr().out
  assert '# track /device:GPU:0 / Stream #13(Compute): 3.500 ms per step' in out
  rows = [line.split() for line in out.splitlines() if not line.startswith('#')][1:]
  assert [(r[0], r[-1]) for r in rows] == [('3.000', 'cutlass_gemm'), ('0.500', 'loop_select_fusion')]
  assert 'PjitFunction' not in out
  assert '# class matmul: 3.000 ms per step (86 % of kernel time)' in out
  assert '# class elementwise fusion: 0.500 ms per step (14 % of kernel time)' in out


@pytest.mark.parametrize('name, label', [
    ('sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc', 'convolution: forward'),
    ('sm90_xmma_dgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nchw', 'convolution: input gradient'),
    ('sm90_xmma_wgrad_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc', 'convolution: weight gradient'),
    ('cudnn::engines_precompiled::nchwToNhwcKernel', 'convolution: forward'),
    ('convolution.12', 'convolution: forward'),
    ('nvjet_tst_128x64_64x6_1x2_h_bz_coopA_NNT', 'matmul'),
    ('loop_convert_fusion_3', 'elementwise fusion'),
    ('loop_transpose_fusion', 'transpose / copy (layout)'),
    ('input_reduce_fusion_7', 'reduction fusion'),
    ('MemcpyD2D', 'memset / memcpy'),
    ('copy.5', 'transpose / copy (layout)'),
    ('some_custom_kernel', 'other')])
def test_kernel_classes(name, label):
  assert profile_step.kernel_class(name) == label


@pytest.mark.slow
def test_profile_stage_traces_reads_and_reports(tmp_path):
  """accelerator_check.py profile at tiny sizes on this CPU: rows with XLA's cost, the traced row's
  HLO, kernels and bytes summaries, and the report's roofline section."""
  out = str(tmp_path)
  assert accelerator_check.main(['profile', '--out', out, '--variants', 'float32:4', '--ks', '2',
                                 '--width', '0.25', '--fc_units', '32', '--repeats', '1',
                                 '--traced', '1']) == 0
  rows = [json.loads(line) for line in (tmp_path / 'profile.jsonl').read_text().splitlines()]
  assert [r['runs'] for r in rows] == [None, 2]
  assert all(r['finite'] and r['xla_flops'] > 0 and r['xla_bytes_accessed'] > 0 for r in rows)
  assert rows[1]['xla_flops'] == pytest.approx(2 * rows[0]['xla_flops'], rel=0.05)
  for row in ('piczakcnn_intermix_alone_one_float32_b4', 'piczakcnn_intermix_2_vmap_float32_b4'):
    assert 'HloModule' in (tmp_path / 'profile' / row / 'step.hlo.txt').read_text()
    kernels = (tmp_path / 'profile' / f'{row}.kernels.txt').read_text()
    assert '3 traced steps' in kernels  # benchmarks.multirun.bench's profile_steps
    assert '# track host / tf_XLA' in kernels  # a CPU backend: XLA's worker threads
    assert 'MB over' in (tmp_path / 'profile' / f'{row}.bytes.txt').read_text()
  assert accelerator_check.main(['report', '--out', out]) == 0
  report = (tmp_path / 'accelerator_check.md').read_text()
  assert 'against its memory floor' in report and '| piczakcnn | vmap | 2 |' in report
  assert 'Train step' not in report  # the steps stage did not run

@pytest.mark.slow
def test_profile_stage_unrolled_in_bfloat16_names_what_holds_each_step_back(tmp_path):
  """The profile stage's other method and precision (the accelerator check runs them on EnvNet-v2,
  `--backbone envnetv2 --method unroll --variants bfloat16:64`; the stage's code is the same for
  every backbone, so PiczakCNN here, the cheapest compile): one run alone and 2 runs unrolled in
  bfloat16, both traced; the kernels summary by class, and the report's section naming what holds
  each step back."""
  out = str(tmp_path)
  assert accelerator_check.main(['profile', '--out', out, '--method', 'unroll', '--variants',
                                 'bfloat16:4', '--ks', '2', '--width', '0.25', '--fc_units', '32',
                                 '--repeats', '1', '--traced', '1']) == 0
  rows = [json.loads(line) for line in (tmp_path / 'profile.jsonl').read_text().splitlines()]
  assert [(r['backbone'], r['runs'], r['method'], r['precision']) for r in rows] == [
      ('piczakcnn', None, None, 'bfloat16'), ('piczakcnn', 2, 'unroll', 'bfloat16')]
  assert all(r['finite'] and r['xla_flops'] > 0 for r in rows)
  assert rows[1]['xla_flops'] == pytest.approx(2 * rows[0]['xla_flops'], rel=0.05)
  for row in ('piczakcnn_intermix_alone_one_bfloat16_b4', 'piczakcnn_intermix_2_unroll_bfloat16_b4'):
    kernels = (tmp_path / 'profile' / f'{row}.kernels.txt').read_text()
    assert '# class convolution' in kernels and '3 traced steps' in kernels
    assert 'MB over' in (tmp_path / 'profile' / f'{row}.bytes.txt').read_text()
  assert accelerator_check.main(['report', '--out', out]) == 0
  report = (tmp_path / 'accelerator_check.md').read_text()
  assert '| piczakcnn | intermix | batch | unroll | 2 |' in report
  assert 'Which kernels hold each traced step back' in report
  assert ('`piczakcnn_intermix_2_unroll_bfloat16_b4.kernels.txt`: piczakcnn intermix runs=2 unroll'
          in report)
  assert '- convolution' in report


HLO = """HloModule jit_fn, is_scheduled=true

%fused_computation (param_0: f32[100,50], param_1: f32[100,50]) -> f32[100,50] {
  ROOT %add.1 = f32[100,50]{1,0} add(%param_0, %param_1)
}

ENTRY %main.9 (p.1: f32[100,50], g.2: f32[100,50], x.3: bf16[8,100]) -> (f32[100,50], f32[8,50]) {
  %p.1 = f32[100,50]{1,0} parameter(0)
  %g.2 = f32[100,50]{1,0} parameter(1)
  %x.3 = bf16[8,100]{1,0} parameter(2)
  %fusion.4 = f32[100,50]{1,0} fusion(%p.1, %g.2), kind=kLoop, calls=%fused_computation, metadata={op_name="jit(fn)/add"}
  %copy.5 = f32[100,50]{1,0} copy(%fusion.4)
  %convert.6 = f32[8,100]{1,0} convert(%x.3)
  %dot.7 = f32[8,50]{1,0} dot(%convert.6, %copy.5), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %tuple.8 = (f32[100,50]{1,0}, f32[8,50]{1,0}) tuple(%copy.5, %dot.7)
}
"""


def test_hlo_bytes_counts_operands_and_output_of_each_entry_instruction():
  rows = {r[2]: r for r in harness.hlo_bytes(HLO)}
  assert set(rows) == {'fusion.4', 'copy.5', 'convert.6', 'dot.7'}  # parameters, tuples: free
  assert rows['fusion.4'][:2] == (3 * 20000, 20000)  # two f32[100,50] in, one out
  assert rows['copy.5'][:2] == (40000, 20000)
  assert rows['convert.6'][:2] == (1600 + 3200, 3200)  # bf16 in, f32 out
  assert rows['dot.7'][:2] == (3200 + 20000 + 1600, 1600)
  assert [r[2] for r in harness.hlo_bytes(HLO)][:2] == ['fusion.4', 'copy.5']


def test_gpu_aot_compiles_for_a_gpu_or_says_in_one_line_why_not():
  """benchmarks.gpu_aot needs a CUDA-enabled jaxlib (no GPU): with one it prints the program
  table; without (this project's environment) it exits with one line, no traceback."""
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.gpu_aot', '--ks', '0', '--top', '1'],
                        cwd=roofline.ROOT, capture_output=True, text=True, timeout=600)
  if proc.returncode == 0:
    assert '| one run | 1 |' in proc.stdout
  else:
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        'gpu_aot: no deviceless CUDA compiler in this environment')


def test_no_import_circle_in_benchmarks_and_launch():
  """Every import of benchmarks/ and launch/ (top-level or inside a function) as a graph over
  their modules: no module reaches itself again."""
  import ast  # pylint: disable=g-import-not-at-top
  files = {}
  for pkg in ('benchmarks', 'launch'):
    for d, _, names in os.walk(os.path.join(roofline.ROOT, pkg)):
      for n in names:
        if n.endswith('.py'):
          mod = os.path.relpath(os.path.join(d, n), roofline.ROOT)[:-3].replace(os.sep, '.')
          files[mod.removesuffix('.__init__')] = os.path.join(d, n)
  graph = {}
  for mod, path in files.items():
    targets = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        targets |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom):
        assert not node.level, f'{mod}: relative import'
        targets |= {node.module} | {f'{node.module}.{a.name}' for a in node.names}
    graph[mod] = (targets & set(files)) - {mod}

  def reaches(start, goal, seen):
    return any(m == goal or (m not in seen and not seen.add(m) and reaches(m, goal, seen))
               for m in graph[start])
  assert len(graph) > 10 and 'benchmarks.harness' in graph['benchmarks.gpu_aot']
  assert [m for m in graph if reaches(m, m, set())] == []
