"""Hidden-space InterMix in a user-defined Linen model (examples/own_model.py, issue 10).

The example uses only names exported by `intermix_jax` and its own training loop; these tests
check that (by reading its source), that its hidden mix point is mixed exactly as docs/method.md §3
says (against a numpy reference), and that a few training steps learn.
"""
import ast
import math
import os
import runpy
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import intermix_jax

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples',
                       'own_model.py')
ex = types.SimpleNamespace(**runpy.run_path(EXAMPLE))


def test_example_uses_only_public_names():
  tree = ast.parse(open(EXAMPLE).read())
  used = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('intermix_jax'):
      pytest.fail(f'examples/own_model.py imports from {node.module}: only `import intermix_jax`')
    if isinstance(node, ast.Import):
      for alias in node.names:
        assert not alias.name.startswith('intermix_jax.'), alias.name
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id == 'intermix_jax'):
      used.add(node.attr)
  # Every name used is exported by intermix_jax itself (not a submodule or a private name).
  for name in used:
    assert not name.startswith('_') and hasattr(intermix_jax, name), name
    assert not isinstance(getattr(intermix_jax, name), types.ModuleType), name
  assert {'get_strategy', 'mix_point'} <= used   # channel-last points through mix_point
  # The strategy methods of the documented contract, and nothing of the project's trainer.
  source = open(EXAMPLE).read()
  for method in ('plan', 'prepare_input', 'mixer', 'targets', 'loss'):
    assert f'strategy.{method}(' in source
  for module in ('steps', 'train', 'models', 'data'):
    assert f'intermix_jax.{module}' not in source


def test_hidden_points_are_mixed_as_spec_says():
  """docs/method.md §3 InterMix at a hidden point (r-weighting to make the reference exact):
  h = r~ h_i + (1-r)~ h_j + 2 sqrt(r~ h_i (1-r)~ h_j) cos(phi_i - phi_j), ~ = / sqrt(r^2+(1-r)^2).
  One compiled function serves both points (the plan's layer is data)."""
  model = ex.TinyAudioNet(num_classes=4)
  x, _ = ex.make_batch(np.random.default_rng(1), 3)
  params = model.init(jax.random.key(0), jnp.asarray(x))['params']
  strategy = intermix_jax.get_strategy('intermix', eligible_layers=(1, 2), p_weighting=False)

  @jax.jit
  def forward(params, x, key):
    plan = strategy.plan(key, x.shape[0], model.num_mix_points)
    x = strategy.prepare_input(plan, x)
    runs = [model.apply({'params': params}, x, mix=mix, mutable=['intermediates'])[1]
            for mix in (None, strategy.mixer(plan, model.sample_rate))]
    return plan, x, [{k: v[0] for k, v in r['intermediates'].items()} for r in runs]

  seen = set()
  for i in range(20):
    plan, x_in, (plain, mixed) = jax.device_get(forward(params, jnp.asarray(x), jax.random.key(i)))
    point = int(plan.layer)
    if point in seen:
      continue
    seen.add(point)
    r, phi = np.asarray(plan.r, np.float64), np.asarray(plan.phi, np.float64)
    h = np.asarray(plain[f'mix_point_{point}'], np.float64)
    assert h.ndim == 3 and np.all(h >= 0)      # (N, T', C) channel-last, non-negative
    partner = np.arange(len(r)) ^ 1
    norm = np.sqrt(r ** 2 + (1 - r) ** 2)[:, None, None]
    hi = r[:, None, None] * h / norm
    hj = (1 - r)[:, None, None] * h[partner] / norm
    want = hi + hj + 2 * np.sqrt(hi * hj) * np.cos(phi - phi[partner])[:, None, None]
    np.testing.assert_allclose(mixed[f'mix_point_{point}'], want, rtol=2e-4, atol=1e-6)
    if point == 2:   # the point before the mix is untouched
      np.testing.assert_array_equal(mixed['mix_point_1'], plain['mix_point_1'])
    # The input phase shift keeps each waveform's energy (docs/method.md §3 step 1).
    np.testing.assert_allclose(np.sum(x_in.astype(np.float64) ** 2, 1), np.sum(x ** 2, 1),
                               rtol=1e-3)
    if seen == {1, 2}:
      break
  assert seen == {1, 2}


def test_a_few_training_steps_learn():
  model, params, losses = ex.train('intermix', steps=30)
  assert all(math.isfinite(v) for v in losses)
  assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), losses
  x, y = ex.make_batch(np.random.default_rng(12345), 32)
  assert ex.accuracy(model, params, x, y) >= 0.6   # chance: 0.25
