"""`accel_ops`: EnvNet-v2's forward-pass variants compute the same function of the same parameters.

Each variant is compared with 'plain' (today's path), both traced with `cpu_ops.force('plain')`
(the accelerator's program: lax convolutions and reduce_window, as on a GPU) at width 0.3,
fc_units 32, batch 4, train mode (BatchNorm on batch statistics, dropout with one key), with
InterMix (a fixed plan) mixing at mix point k = 0, 1, 2 in turn (MIX_POINTS; k is traced, so one
compile per variant): logits, the BatchNorm statistics, the gradients of the parameters and of the
input waveform, and the parameter trees (names, shapes, dtypes).

Tolerance (float32): the variants sum the same products in another order (a 1-D instead of a 2-D
convolution, 8 stacked rows as channels, zero taps of a blocked kernel), so values differ by
float32 rounding, ~1e-7 relative per operation; train-mode BatchNorm over 4 rows divides by small
batch deviations and InterMix's sqrt(b) / sqrt(a) amplifies relative errors of small activations.
Measured here (jaxlib 0.10.2, CPU, InterMix at point 1): the largest relative L2 error of any
leaf 2e-5 (logits), 6e-6 (BN statistics), 3e-5 (parameter gradients), 9e-6 (input gradient).
The gradients can also differ by more than rounding: where the two largest inputs of a max-pool
window lie within rounding of each other, the variant and plain may pick different ones, and the
window's gradient goes to another tap. Which windows flip depends on the last bits, so on the
parameters' last bits, XLA's optimisation level and the number of threads: observed (2026-12-06,
XLA_FLAGS of the suite, parameters initialised under jit, or one core) up to 0.7 % in the input
gradient's L2 norm (7,041 of 266,600 entries off, logits still within 3e-5) and 0.5 % in a BN
bias gradient, where the same test on two cores with eager-initialised parameters saw 3e-5.
Asserted: logits elementwise rtol 1e-4, atol 1e-4 (logits are O(1); one differed by 2.9e-5) and
in L2 norm within 1e-4; BN statistics within 1e-4 and every gradient leaf within 1e-2 in L2 norm,
relative to (the leaf's norm + the tree's RMS x sqrt(size)) as `helpers.assert_trees_close`
(leaves whose gradient is ~0 hold rounding noise only). A wrong tap, row or phase would be O(1) off.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from intermix_jax import mixing, models
from intermix_jax.models import accel_ops, cpu_ops

SMALL = dict(width=0.3, fc_units=32)
BATCH = 4
ALTERNATIVES = tuple(v for v in accel_ops.VARIANTS if v != 'plain')


def test_selection_defaults_to_plain_and_force_restores():
  assert accel_ops.DEFAULTS.get(jax.default_backend(), 'plain') == 'plain'
  assert accel_ops.variant() == 'plain'
  with accel_ops.force('conv1d'):
    assert accel_ops.variant() == 'conv1d'
    with accel_ops.force('blocked'):
      assert accel_ops.variant() == 'blocked'
    assert accel_ops.variant() == 'conv1d'
  assert accel_ops.variant() == 'plain'
  assert accel_ops.set_forced('conv1d_rows') is None and accel_ops.variant() == 'conv1d_rows'
  assert accel_ops.set_forced(None) == 'conv1d_rows' and accel_ops.variant() == 'plain'
  with pytest.raises(ValueError, match='variant must be one of'):
    with accel_ops.force('fast'):
      pass


@pytest.mark.parametrize('stride,block,kw,c', [(2, 16, 64, 1), (2, 4, 16, 3), (1, 8, 8, 8),
                                               (3, 5, 7, 2)])
def test_blocked_conv1d_equals_the_plain_convolution(stride, block, kw, c):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 301, c)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((kw, c, 5)), jnp.float32)
  want = jax.lax.conv_general_dilated(x, k, (stride,), ((0, 0),),
                                      dimension_numbers=('NWC', 'WIO', 'NWC'))
  got = accel_ops.blocked_conv1d(x, k, stride, block)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  g = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
  vjp = lambda f: jax.vjp(f, x, k)[1](g)
  for a, b in zip(vjp(lambda x, k: accel_ops.blocked_conv1d(x, k, stride, block)),
                  vjp(lambda x, k: jax.lax.conv_general_dilated(
                      x, k, (stride,), ((0, 0),), dimension_numbers=('NWC', 'WIO', 'NWC')))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('block', [None, 8])
def test_rows_conv_equals_the_plain_convolution(block):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 20, 37, 1)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((8, 8, 1, 6)), jnp.float32)
  plain = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), ((0, 0), (0, 0)),
                                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  with cpu_ops.force('plain'):
    got = accel_ops.rows_conv(x, k, block)
  np.testing.assert_allclose(got, plain(x, k), rtol=1e-5, atol=1e-5)


# Mix points 0, 1 and 2: the variants compute conv1, conv2 and the pool before point 1 and conv3
# before point 2; points 3 and 4 lie after every op a variant changes (the gradient reaches those
# ops through point 2's path as through theirs), so they add no case.
MIX_POINTS = (0, 1, 2)


def _step(model):
  """jit(params, stats, x, k) -> (logits, new stats, d params, d x) with InterMix at point k (a
  traced int32 of MIX_POINTS: the strategy's lax.cond per point, one compile serves every k)."""
  strategy = mixing.get_strategy('intermix', eligible_layers=MIX_POINTS)
  rng = np.random.default_rng(3)
  r = jnp.asarray(rng.uniform(0.2, 0.8, BATCH), jnp.float32)
  phi = jnp.asarray(rng.uniform(-1.5, 1.5, BATCH), jnp.float32)
  weights = jnp.asarray(np.random.default_rng(4).standard_normal((BATCH, model.num_classes)),
                        jnp.float32)

  def loss(params, stats, x, k):
    plan = mixing.MixPlan(layer=k, r=r, phi=phi)
    x = strategy.prepare_input(plan, x)
    logits, state = model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                                mix=strategy.mixer(plan, model.sample_rate),
                                rngs={'dropout': jax.random.key(5)}, mutable=['batch_stats'])
    return jnp.sum(weights * jax.nn.log_softmax(logits)), (logits, state['batch_stats'])

  def step(params, stats, x, k):
    (_, (logits, stats)), (dp, dx) = jax.value_and_grad(loss, argnums=(0, 2), has_aux=True)(
        params, stats, x, k)
    return logits, stats, dp, dx
  return jax.jit(step)


@functools.lru_cache(maxsize=None)
def _setup():
  model = models.get_model('envnetv2', 5, **SMALL)
  x = 0.1 * np.random.default_rng(7).standard_normal((BATCH, model.input_length)).astype(np.float32)
  variables = jax.jit(model.init)({'params': jax.random.key(0), 'dropout': jax.random.key(1)},
                                  x[:2])
  return model, variables, jnp.asarray(x)


@functools.lru_cache(maxsize=None)
def _compiled(variant):
  """`_step`'s jitted function of one variant (the variant is read when it traces: in `_run`)."""
  return _step(_setup()[0])


@functools.lru_cache(maxsize=None)
def _run(variant, k):
  _, variables, x = _setup()
  with cpu_ops.force('plain'), accel_ops.force(variant):
    out = _compiled(variant)(variables['params'], variables['batch_stats'], x, jnp.int32(k))
  return jax.device_get(out)


@pytest.mark.parametrize('variant', ALTERNATIVES)
def test_variant_has_the_same_parameter_tree(variant):
  model, variables, x = _setup()
  shapes = lambda v: jax.tree.map(lambda a: (a.shape, a.dtype), v)
  with cpu_ops.force('plain'), accel_ops.force(variant):
    got = jax.eval_shape(lambda: model.init({'params': jax.random.key(0),
                                             'dropout': jax.random.key(1)}, x[:2]))
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(variables)
  assert shapes(got) == shapes(variables)


@pytest.mark.slow
@pytest.mark.parametrize('k', MIX_POINTS)
@pytest.mark.parametrize('variant', ALTERNATIVES)
def test_variant_equals_plain_in_value_and_gradient(variant, k):
  logits, stats, dp, dx = _run(variant, k)
  want_logits, want_stats, want_dp, want_dx = _run('plain', k)
  np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)
  helpers.assert_trees_close(logits, want_logits, rtol=1e-4)
  helpers.assert_trees_close(stats, want_stats, rtol=1e-4)
  helpers.assert_trees_close(dp, want_dp, rtol=1e-2)  # max-pool ties (the docstring)
  helpers.assert_trees_close(dx, want_dx, rtol=1e-2)
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(dx))


def test_hlo_counts_and_table():
  from benchmarks import envnet_ab  # pylint: disable=g-import-not-at-top
  text = ('  %transpose.1 = f32[1000,500]{0,1} transpose(f32[500,1000]{1,0} %p), dimensions={1,0}\n'
          '  %copy.2 = bf16[250,1000]{1,0} copy(bf16[250,1000]{0,1} %q)\n'
          '  %copy.3 = u32[] copy(u32[] %r)\n'
          '  %add.4 = f32[4,8]{1,0} add(f32[4,8]{1,0} %a, f32[4,8]{1,0} %b)\n')
  counts = envnet_ab.hlo_counts(text)
  assert counts == dict(transpose=1, copy=2, transpose_mb=2.0, copy_mb=0.5)
  row = dict(variant='plain', precision='bfloat16', runs=1, step_s=0.01, flops=1e12,
             compile_s=3.0, **counts)
  table = envnet_ab.table([row, dict(row, variant='blocked', step_s=0.005, flops=1.5e12)])
  assert '| plain | bfloat16 | 1 | 10.00 | 100.00 | 100.00 | 1.00 | 1 (2.0) | 2 (0.5) |' in table
  assert '| blocked | bfloat16 | 1 | 5.00 | 300.00 | 200.00 | 2.00 |' in table


@pytest.mark.slow
def test_envnet_ab_stage_cpu_dry_run(tmp_path, dry_run_env):
  """`STAGES=envnet_ab accelerator_check.sh --cpu`: the A/B of two variants at tiny size (the
  accelerator's program compiled and run on this CPU), its rows and its report table."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / 'out'
  env = dict(dry_run_env, PYTHON=sys.executable, SCRATCH=str(tmp_path / 'scratch'),
             STAGES='envnet_ab')
  proc = subprocess.run(['bash', os.path.join(repo, 'launch', 'device', 'accelerator_check.sh'),
                         '--cpu', str(out)], cwd=repo, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  rows = [json.loads(line) for line in (out / 'envnet_ab.jsonl').read_text().splitlines()]
  assert [r['variant'] for r in rows] == ['plain', 'blocked']
  assert all(r['finite'] and r['flops'] > 0 and r['step_s'] > 0 and r['transpose'] >= 0
             for r in rows)
  report = (out / 'accelerator_check.md').read_text()
  assert '| blocked | float32 | 1 |' in report and '| envnet_ab | ok |' in report


@pytest.mark.slow
@pytest.mark.parametrize('variant', ALTERNATIVES)
def test_variant_in_bfloat16_matches_plain_to_bfloat16_rounding(variant):
  """The bfloat16 model (parameters float32, convolutions bfloat16): eval-mode logits of each
  variant within 2 % (relative L2) of plain's; bfloat16 keeps 8 significant bits and the
  variants round partial sums in another order."""
  _, variables, x = _setup()
  model = models.get_model('envnetv2', 5, precision='bfloat16', **SMALL)
  with cpu_ops.force('plain'):
    want = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x), np.float64)
    with accel_ops.force(variant):
      got = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x), np.float64)
  assert np.all(np.isfinite(got))
  assert np.linalg.norm(got - want) <= 2e-2 * np.linalg.norm(want), np.linalg.norm(got - want)
