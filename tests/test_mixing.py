"""Tests of intermix_jax.mixing: the mixing laws and the strategy contract (docs/architecture.md)."""
import collections
import dataclasses
import math
import re

import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from intermix_jax import audio
from intermix_jax import mixing

FS = 16000
T = 3000          # waveform length of the toy model (the gain pads it to one 2048-sample frame)
K = 4             # toy model mix points: 0 = input, 1..3 hidden
N = 6             # rows (3 pairs)
C = 5             # classes


# --- independent references --------------------------------------------------------------------
def ref_mix_ratio(g_i, g_j, r):
  return 1.0 / (1.0 + 10.0 ** ((g_i - g_j) / 20.0) * (1.0 - r) / r)


def ref_interference(h_i, h_j, p, dphi, normalize=True, clamp=False):
  """docs/method.md §3 step 2 in float64 numpy (clamp: sqrt(max(h~_i h~_j, 0)))."""
  h_i, h_j = np.asarray(h_i, np.float64), np.asarray(h_j, np.float64)
  c = 1.0 / np.sqrt(p ** 2 + (1 - p) ** 2) if normalize else 1.0
  a, b = c * p * h_i, c * (1 - p) * h_j
  prod = np.maximum(a * b, 0.0) if clamp else a * b
  return a + b + 2 * np.sqrt(prod) * np.cos(dphi)


def ref_reference_code(h_i, h_j, p, dphi):
  """The InterMix reference code's formula (no normalisation)."""
  return p * h_i + (1 - p) * h_j + 2 * np.sqrt(p * (1 - p) * h_i * h_j) * np.cos(dphi)


_imix = jax.jit(mixing.interference_mix,
                static_argnames=('normalize', 'signed_mode', 'stop_gradient_interference'))


def _grad_imix(**kw):
  return jax.jit(jax.grad(lambda hi, hj, p, d: jnp.sum(mixing.interference_mix(hi, hj, p, d, **kw)),
                          argnums=(0, 1, 2, 3)))


# --- mix_ratio, bc_mix, mix_labels ---------------------------------------------------------------
@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(g_i=st.floats(-80, 40), g_j=st.floats(-80, 40), r=st.floats(0.01, 0.99))
def test_mix_ratio_matches_bc_formula(g_i, g_j, r):
  got = float(mixing.mix_ratio(jnp.float32(g_i), jnp.float32(g_j), jnp.float32(r)))
  np.testing.assert_allclose(got, ref_mix_ratio(g_i, g_j, r), rtol=1e-4, atol=1e-6)


def test_mix_ratio_edges():
  r = jnp.asarray([0.0, 1.0, 0.3, 0.3, 0.3])
  g_i = jnp.asarray([0.0, 0.0, -20.0, 1e4, -1e4])
  g_j = jnp.asarray([0.0, 0.0, -20.0, -1e4, 1e4])
  got = np.asarray(mixing.mix_ratio(g_i, g_j, r))
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, [0.0, 1.0, 0.3, 0.0, 1.0], atol=1e-6)  # equal levels: p = r


def test_bc_mix_formula_and_edges():
  rng = np.random.default_rng(0)
  h_i, h_j = rng.standard_normal((2, 50))
  for p in (0.0, 0.2, 0.5, 1.0):
    want = (p * h_i + (1 - p) * h_j) / np.sqrt(p ** 2 + (1 - p) ** 2)
    np.testing.assert_allclose(np.asarray(mixing.bc_mix(h_i, h_j, p)), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(mixing.bc_mix(h_i, h_j, 1.0)), h_i, rtol=1e-6)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(seed=st.integers(0, 2 ** 31))
def test_mix_labels_sums_to_one_and_matches_formula(seed):
  rng = np.random.default_rng(seed)
  y_i = jax.nn.one_hot(rng.integers(0, C, 8), C)
  y_j = jax.nn.softmax(jnp.asarray(rng.standard_normal((8, C)), jnp.float32))
  r = rng.random(8).astype(np.float32)
  got = mixing.mix_labels(y_i, y_j, r)
  chex.assert_shape(got, (8, C))
  np.testing.assert_allclose(np.asarray(got.sum(-1)), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got), r[:, None] * np.asarray(y_i) + (1 - r[:, None]) * np.asarray(y_j),
                             atol=1e-6)


def test_partner_is_row_xor_one():
  x = jnp.arange(8 * 3).reshape(8, 3)
  np.testing.assert_array_equal(np.asarray(mixing.partner(x)), np.asarray(x)[np.arange(8) ^ 1])
  with pytest.raises(ValueError, match='even'):
    mixing.partner(jnp.zeros((5, 2)))


# --- interference_mix laws -----------------------------------------------------------------------
def _nonneg(rng, shape, zeros=0.3):
  h = np.abs(rng.standard_normal(shape))
  h[rng.random(shape) < zeros] = 0.0  # ReLU-like exact zeros
  return h.astype(np.float32)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(seed=st.integers(0, 2 ** 31), p=st.floats(0.0, 1.0), dphi=st.floats(-math.pi, math.pi),
                  normalize=st.booleans())
def test_interference_matches_spec_formula_on_nonnegative_inputs(seed, p, dphi, normalize):
  p = round(p * 2 ** 24) / 2 ** 24  # then p and 1 - p are both exact in float32 (for the swap law)
  rng = np.random.default_rng(seed)
  h_i, h_j = _nonneg(rng, (4, 6)), _nonneg(rng, (4, 6))
  got = np.asarray(_imix(h_i, h_j, p, dphi, normalize=normalize))
  np.testing.assert_allclose(got, ref_interference(h_i, h_j, p, dphi, normalize), rtol=1e-5, atol=1e-5)
  assert (got >= 0).all()  # non-negative inputs give non-negative output
  # swapping (h_i, p, dphi) with (h_j, 1 - p, -dphi) gives the same result
  swapped = np.asarray(_imix(h_j, h_i, 1 - p, -dphi, normalize=normalize))
  np.testing.assert_allclose(swapped, got, rtol=1e-5, atol=1e-5)


def test_interference_destructive_extreme_stays_non_negative():
  h = _nonneg(np.random.default_rng(1), (1000,), zeros=0.0)
  got = np.asarray(_imix(h, h, 0.5, math.pi))  # exact cancellation up to rounding
  assert (got >= 0).all() and np.abs(got).max() < 1e-5


def test_interference_p_one_gives_h_i_and_quarter_phase_gives_bc_mix():
  rng = np.random.default_rng(2)
  h_i, h_j = _nonneg(rng, (30,)), _nonneg(rng, (30,))
  for normalize in (True, False):
    np.testing.assert_allclose(np.asarray(_imix(h_i, h_j, 1.0, 0.3, normalize=normalize)), h_i, rtol=1e-6)
  for p in (0.2, 0.5, 0.9):
    np.testing.assert_allclose(np.asarray(_imix(h_i, h_j, p, math.pi / 2)),
                               np.asarray(mixing.bc_mix(h_i, h_j, p)), rtol=1e-5, atol=1e-6)


def test_interference_reference_code_options():
  rng = np.random.default_rng(3)
  h_i, h_j = _nonneg(rng, (40,)), _nonneg(rng, (40,))
  p, dphi = 0.3, 0.8
  kw = dict(normalize=False, stop_gradient_interference=True)
  np.testing.assert_allclose(np.asarray(_imix(h_i, h_j, p, dphi, **kw)), ref_reference_code(h_i, h_j, p, dphi),
                             rtol=1e-5, atol=1e-6)
  # detached interference: only the linear part carries gradient
  g_i, g_j, g_p, _ = _grad_imix(**kw)(h_i, h_j, p, dphi)
  np.testing.assert_allclose(np.asarray(g_i), p, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g_j), 1 - p, rtol=1e-6)
  np.testing.assert_allclose(float(g_p), np.sum(h_i - h_j), rtol=1e-4)


def test_interference_gradient_flows_by_default():
  rng = np.random.default_rng(4)
  h_i, h_j = 0.5 + _nonneg(rng, (20,), 0.0), 0.5 + _nonneg(rng, (20,), 0.0)
  p, dphi = 0.3, 0.8
  g_i, g_j, _, g_dphi = _grad_imix(normalize=False)(h_i, h_j, p, dphi)
  hi64, hj64 = h_i.astype(np.float64), h_j.astype(np.float64)
  np.testing.assert_allclose(np.asarray(g_i), p + np.cos(dphi) * np.sqrt(p * (1 - p) * hj64 / hi64), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g_j), 1 - p + np.cos(dphi) * np.sqrt(p * (1 - p) * hi64 / hj64),
                             rtol=1e-5)
  np.testing.assert_allclose(float(g_dphi), -2 * np.sin(dphi) * np.sum(np.sqrt(p * (1 - p) * hi64 * hj64)),
                             rtol=1e-5)


def test_interference_signed_modes():
  rng = np.random.default_rng(5)
  h_i, h_j = rng.standard_normal((2, 64)).astype(np.float32)  # a waveform: signed
  p, dphi = 0.35, 0.6
  superpose = np.asarray(_imix(h_i, h_j, p, dphi))
  np.testing.assert_allclose(superpose, np.asarray(mixing.bc_mix(h_i, h_j, p)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(_imix(h_i, h_j, p, dphi, normalize=False)), p * h_i + (1 - p) * h_j,
                             rtol=1e-6, atol=1e-6)
  clamp = np.asarray(_imix(h_i, h_j, p, dphi, signed_mode='clamp'))
  np.testing.assert_allclose(clamp, ref_interference(h_i, h_j, p, dphi, clamp=True), rtol=1e-5, atol=1e-5)
  # a single opposite-sign element makes the whole example signed under 'superpose'
  a = np.ones(8, np.float32)
  b = np.ones(8, np.float32)
  b[3] = -1e-3
  np.testing.assert_allclose(np.asarray(_imix(a, b, 0.5, 0.0)), np.asarray(mixing.bc_mix(a, b, 0.5)), rtol=1e-6)
  with pytest.raises(ValueError, match='signed_mode'):
    mixing.interference_mix(a, b, 0.5, 0.0, signed_mode='abs')


@pytest.mark.parametrize('signed_mode', ['superpose', 'clamp'])
@pytest.mark.parametrize('normalize', [True, False])
def test_interference_finite_values_and_gradients_everywhere(signed_mode, normalize):
  big, tiny = 1e20, 1e-20
  cases = {
      'zeros': (np.zeros(16), np.zeros(16)),
      'one_zero': (np.zeros(16), np.ones(16)),
      'signed': tuple(np.random.default_rng(6).standard_normal((2, 16))),
      'huge': (np.full(16, big), np.full(16, 3 * big)),
      'tiny': (np.full(16, tiny), np.full(16, 2 * tiny)),
      'huge_and_tiny': (np.full(16, big), np.full(16, tiny)),
      'signed_huge': (np.full(16, -big), np.full(16, big)),
  }
  grad = _grad_imix(normalize=normalize, signed_mode=signed_mode)
  for name, (h_i, h_j) in cases.items():
    h_i, h_j = jnp.asarray(h_i, jnp.float32), jnp.asarray(h_j, jnp.float32)
    for p in (0.0, 0.3, 1.0):
      out = _imix(h_i, h_j, p, 0.4, normalize=normalize, signed_mode=signed_mode)
      assert np.isfinite(np.asarray(out)).all(), (name, p)
      for g in grad(h_i, h_j, jnp.float32(p), jnp.float32(0.4)):
        assert np.isfinite(np.asarray(g)).all(), (name, p)


def test_interference_is_homogeneous_across_magnitudes():
  # interference_mix(c h_i, c h_j) = c interference_mix(h_i, h_j) for c > 0, even at 1e20 and 1e-20.
  rng = np.random.default_rng(7)
  h_i, h_j = 0.1 + _nonneg(rng, (32,), 0.0), 0.1 + _nonneg(rng, (32,), 0.0)
  unit = np.asarray(_imix(h_i, h_j, 0.4, 1.0), np.float64)
  for c in (1e20, 1e-20):
    scaled = np.asarray(_imix(h_i * c, h_j * c, 0.4, 1.0), np.float64)
    np.testing.assert_allclose(scaled / c, unit, rtol=1e-5)


def test_interference_gradient_at_zero_is_the_linear_part():
  g_i, g_j, _, _ = _grad_imix()(jnp.zeros(4), jnp.zeros(4), jnp.float32(0.3), jnp.float32(0.2))
  c = 1 / math.sqrt(0.3 ** 2 + 0.7 ** 2)
  np.testing.assert_allclose(np.asarray(g_i), 0.3 * c, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g_j), 0.7 * c, rtol=1e-6)


# --- strategies: registry and options ------------------------------------------------------------
def _base_mixing_options():
  from intermix_jax import config_lib  # pylint: disable=g-import-not-at-top
  return dict(config_lib.base_config().mixing)


def test_every_strategy_takes_the_config_options_it_uses():
  options = _base_mixing_options()
  assert set(options) == set(mixing.OPTION_NAMES)
  used = {name: mixing.strategy_options(name) for name in mixing.STRATEGY_NAMES}
  assert used == {
      'standard': (),
      'mixup': ('eligible_layers', 'alpha', 'pairing'),
      'bc': ('eligible_layers', 'p_weighting', 'pairing'),
      'speechmix': ('eligible_layers', 'p_weighting', 'pairing'),
      'intermix': ('eligible_layers', 'p_weighting', 'normalize', 'signed_mode',
                   'stop_gradient_interference', 'pairing'),
  }
  assert set().union(*used.values()) == set(mixing.OPTION_NAMES)  # every option serves someone
  for name in mixing.STRATEGY_NAMES:
    own = {k: options[k] for k in mixing.strategy_options(name)}
    s = mixing.get_strategy(name, **own)
    assert s.name == name
    assert s.mixes == (name != 'standard')
    assert s == mixing.get_strategy(name, **own) and hash(s) == hash(mixing.get_strategy(name, **own))
    with pytest.raises(dataclasses.FrozenInstanceError):
      s.alpha = 2.0  # frozen
    # the whole config set is refused, naming the options this strategy does not use
    unused = sorted(set(mixing.OPTION_NAMES) - set(own))
    with pytest.raises(ValueError, match=f'does not use option.*{re.escape(unused[0])}'):
      mixing.get_strategy(name, **options)
  with pytest.raises(ValueError, match='strategy_options.*unknown strategy'):
    mixing.strategy_options('cutmix')


@pytest.mark.parametrize('name,option', [('bc', 'alpha'), ('speechmix', 'normalize'),
                                         ('mixup', 'p_weighting'), ('standard', 'eligible_layers'),
                                         ('intermix', 'alpha')])
def test_an_option_the_strategy_does_not_use_is_refused_by_name(name, option):
  value = _base_mixing_options()[option]
  with pytest.raises(ValueError) as err:
    mixing.get_strategy(name, **{option: value})
  message = str(err.value)
  assert '\n' not in message and option in message and repr(name) in message, message
  assert 'valid options: ' + (', '.join(mixing.strategy_options(name)) or 'none') in message


@pytest.mark.parametrize('name,options,match', [
    ('cutmix', {}, 'valid names: standard, mixup, bc, speechmix, intermix'),
    ('intermix', {'beta': 1.0}, 'valid options: eligible_layers'),
    ('intermix', {'signed_mode': 'abs'}, 'signed_mode'),
    ('mixup', {'alpha': 0.0}, 'alpha'),
    ('bc', {'alpha': -1.0}, 'alpha'),
    ('speechmix', {'eligible_layers': (1, -2)}, 'eligible_layers'),
    ('speechmix', {'eligible_layers': ()}, 'eligible_layers'),
    ('speechmix', {'eligible_layers': (1, 1)}, 'eligible_layers'),
    ('speechmix', {'eligible_layers': 'one'}, 'eligible_layers'),
    ('intermix', {'p_weighting': 'False'}, 'p_weighting'),
    ('intermix', {'normalize': 1}, 'normalize'),
])
def test_get_strategy_rejects_bad_names_options_and_values(name, options, match):
  with pytest.raises(ValueError, match=match) as err:
    mixing.get_strategy(name, **options)
  assert '\n' not in str(err.value)
  if name in mixing.STRATEGY_NAMES and set(options) <= set(mixing.strategy_options(name)):
    # the constructor itself checks its options (get_strategy adds only name and option checks)
    cls = type(mixing.get_strategy(name))
    with pytest.raises(ValueError, match=match):
      cls(**options)


def test_eligible_layers_list_is_normalised_to_a_hashable_tuple():
  s = mixing.get_strategy('speechmix', eligible_layers=[2, 1])
  assert s.eligible_layers == (2, 1)
  hash(s)


def test_plan_validates_layers_and_batch_at_trace_time():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r'eligible_layers=\(1, 4\).*num_mix_points=4'):
    mixing.get_strategy('intermix', eligible_layers=(1, 4)).plan(key, N, 4)
  with pytest.raises(ValueError, match='even batch_size'):
    mixing.get_strategy('bc').plan(key, 5, K)
  with pytest.raises(ValueError, match='num_mix_points=1'):
    mixing.get_strategy('speechmix').plan(key, N, 1)
  mixing.get_strategy('standard').plan(key, 5, 1)  # standard has no pairs


# --- strategies: plans ----------------------------------------------------------------------------
# Every plan the tests need, drawn by ONE compiled function of the key (compiles are the test budget).
_PLAN_VARIANTS = {
    'standard': mixing.get_strategy('standard'),
    'mixup': mixing.get_strategy('mixup', alpha=0.2),
    'bc': mixing.get_strategy('bc', pairing='shared'),  # the shared-pair law (independent: below)
    'speechmix': mixing.get_strategy('speechmix'),
    'intermix': mixing.get_strategy('intermix'),
    'intermix_0_2': mixing.get_strategy('intermix', eligible_layers=(0, 2)),
    'mixup_0_1_2_3': mixing.get_strategy('mixup', alpha=0.2, eligible_layers=(0, 1, 2, 3)),
}
_all_plans = jax.jit(lambda key: {n: s.plan(key, N, K) for n, s in _PLAN_VARIANTS.items()})


def _stacked_plans(keys):
  """Plans of every variant for each key, stacked along a new leading axis (numpy)."""
  return jax.tree.map(lambda *v: np.stack(v), *jax.device_get([_all_plans(k) for k in keys]))


def test_plan_shapes_ranges_and_default_layers():
  for p in jax.eval_shape(lambda k: {n: s.plan(k, N, K) for n, s in _PLAN_VARIANTS.items()},
                          jax.random.key(0)).values():
    chex.assert_shape([p.layer, p.r, p.phi], [(), (N,), (N,)])
    chex.assert_type([p.layer, p.r, p.phi], [jnp.int32, jnp.float32, jnp.float32])
  # 40 steps x 6 rows = 240 draws per variant: tolerances below are about 4 standard errors.
  for name, p in _stacked_plans(jax.random.split(jax.random.key(1), 40)).items():
    layers, r, phi = set(p.layer.tolist()), p.r, p.phi
    if name == 'standard':
      assert layers == {-1} and (r == 1).all() and (phi == 0).all()
      continue
    want_layers = {'mixup': {0}, 'bc': {0}, 'intermix_0_2': {0, 2}, 'mixup_0_1_2_3': {0, 1, 2, 3}}
    assert layers == want_layers.get(name, {1, 2, 3}), name
    assert ((r >= 0) & (r <= 1)).all()
    assert abs(r.mean() - 0.5) < 0.08  # U(0,1) or Beta(alpha, alpha): symmetric about 1/2
    if name.startswith('mixup'):  # Beta(0.2, 0.2) is U-shaped: P(lambda < 0.1 or > 0.9) = 0.673
      assert abs(np.mean((r < 0.1) | (r > 0.9)) - 0.673) < 0.12
    else:  # U(0, 1): P = 0.2
      assert abs(np.mean((r < 0.1) | (r > 0.9)) - 0.2) < 0.1
    if name.startswith('intermix'):
      assert (np.abs(phi) <= math.pi / 2).all() and abs(phi.std() - math.pi / math.sqrt(12)) < 0.12
    else:
      assert (phi == 0).all()


def test_plan_randomness_is_reproducible_and_differs_across_keys_and_steps():
  key = jax.random.key(3)
  plans = _stacked_plans([key, key, jax.random.fold_in(key, 1), jax.random.key(4)])['intermix']
  r, phi = np.asarray(plans.r), np.asarray(plans.phi)
  np.testing.assert_array_equal(r[0], r[1])
  np.testing.assert_array_equal(phi[0], phi[1])
  for other in (2, 3):  # next step of the same run, another run
    assert not np.allclose(r[other], r[0]) and not np.allclose(phi[other], phi[0])
  assert len(set(r[0].tolist())) == N  # an independent r per row (both directions of a pair)


# --- strategies: mixing through a toy model --------------------------------------------------------
def toy_model(x, mix, w):
  """A tiny raw-waveform net with mix points 0..3 (post-ReLU hidden tensors, many exact zeros)."""
  h = mix(x, 0)                                        # (N, T) waveform
  h = jax.nn.relu(h.reshape(N, 30, 100) * w[0])
  h = mix(h, 1)                                        # (N, 30, 100)
  h = jax.nn.relu(h.reshape(N, 30, 10, 10).mean(-1) - 0.2 * w[1])
  h = mix(h, 2)                                        # (N, 30, 10)
  h = jax.nn.relu(h.reshape(N, 60, 5).sum(-1) - w[2])
  h = mix(h, 3)                                        # (N, 60)
  return 30.0 * (h[:, :C] - h[:, C:2 * C])


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  x = (0.1 * rng.standard_normal((N, T)) * rng.uniform(0.05, 2, (N, 1))).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 4, 0])
  return jnp.asarray(x), jax.nn.one_hot(labels, C), jnp.asarray([1.0, 0.1, 0.01], jnp.float32)


def _step(strategy, plan, x, y, w):
  x = strategy.prepare_input(plan, x)
  logits = toy_model(x, strategy.mixer(plan, FS), w)
  return strategy.loss(logits, strategy.targets(plan, y))


def _manual_plan(strategy, seed, layer=0):
  """A plan with the contract's shapes and ranges, drawn with numpy (no compile of the samplers)."""
  rng = np.random.default_rng(seed)
  phi = rng.uniform(-math.pi / 2, math.pi / 2, N) if strategy.name == 'intermix' else np.zeros(N)
  r = np.ones(N) if strategy.name == 'standard' else rng.random(N)
  return mixing.MixPlan(layer=jnp.asarray(layer if strategy.mixes else -1, jnp.int32),
                        r=jnp.asarray(r, jnp.float32), phi=jnp.asarray(phi, jnp.float32))


def _expected_mix_rows(strategy, plan, h):
  """Python loop over rows with the laws called per example (the vmap-free reference)."""
  h = np.asarray(h)
  flat = h.reshape(N, -1)
  n_fft = audio.frame_length(FS)
  out = []
  for n in range(N):
    m = n ^ 1
    r = float(plan.r[n])
    if strategy.name == 'mixup':
      out.append(r * h[n] + (1 - r) * h[m])
      continue
    if strategy.p_weighting:
      p = ref_mix_ratio(helpers.reference_gain(flat[n], FS, n_fft),
                        helpers.reference_gain(flat[m], FS, n_fft), r)
    else:
      p = r
    if strategy.name == 'intermix':
      clamp = strategy.signed_mode == 'clamp'
      if not clamp and np.any(h[n] * h[m] < 0):  # superpose: the phase-shifted sounds add up
        c = 1 / np.sqrt(p ** 2 + (1 - p) ** 2) if strategy.normalize else 1.0
        out.append(c * (p * h[n] + (1 - p) * h[m]))
      else:
        out.append(ref_interference(h[n], h[m], p, float(plan.phi[n] - plan.phi[m]),
                                    normalize=strategy.normalize, clamp=clamp))
    else:
      out.append((p * h[n] + (1 - p) * h[m]) / np.sqrt(p ** 2 + (1 - p) ** 2))
  return np.stack(out)


@pytest.mark.parametrize('name,options,k', [
    ('mixup', {}, 1), ('bc', {}, 0), ('speechmix', {}, 1), ('speechmix', {'p_weighting': False}, 2),
    ('intermix', {}, 0), ('intermix', {}, 1), ('intermix', {'signed_mode': 'clamp', 'normalize': False}, 0)])
def test_mixer_mixes_each_row_with_its_partner_only_at_the_chosen_layer(name, options, k):
  s = mixing.get_strategy(name, eligible_layers=(0, 1, 2, 3), **options)
  rng = np.random.default_rng(8)
  h = {0: _batch()[0],  # signed waveforms
       1: jnp.asarray(np.abs(rng.standard_normal((N, 30, 100))) * (rng.random((N, 30, 100)) < 0.6), jnp.float32),
       2: jnp.asarray(np.abs(rng.standard_normal((N, 30, 10))), jnp.float32)}[k]
  plan = _manual_plan(s, 5, layer=k)
  mix_fn = jax.jit(lambda plan, h: s.mixer(plan, FS)(h, k))
  got = mix_fn(plan, h)
  chex.assert_equal_shape([got, h])
  chex.assert_tree_all_finite(got)
  np.testing.assert_allclose(np.asarray(got), _expected_mix_rows(s, plan, h), rtol=2e-4, atol=2e-5)
  # identity at every other layer (same compiled function: the layer is data)
  np.testing.assert_array_equal(np.asarray(mix_fn(plan.replace(layer=jnp.int32(k + 1)), h)), np.asarray(h))
  if (name, k) == ('intermix', 1):  # jit equals eager
    chex.assert_trees_all_close(s.mixer(plan, FS)(h, k), got, atol=1e-6)


def test_prepare_input_phase_shifts_only_for_intermix():
  x, _, _ = _batch(1)
  for name in mixing.STRATEGY_NAMES:
    s = mixing.get_strategy(name)
    plan = _manual_plan(s, 6)
    if name == 'intermix':
      want = np.stack([helpers.reference_phase_shift(row, p)
                       for row, p in zip(np.asarray(x), np.asarray(plan.phi))])
      np.testing.assert_allclose(np.asarray(s.prepare_input(plan, x)), want, atol=1e-6)
      with pytest.raises(ValueError, match='waveforms'):
        s.prepare_input(plan, x[:4])
    else:
      assert s.prepare_input(plan, x) is x


def test_targets_and_losses():
  _, y, _ = _batch()
  logits = 3.0 * y[::-1]
  log_q = np.asarray(jax.nn.log_softmax(logits), np.float64)
  for name in mixing.STRATEGY_NAMES:
    s = mixing.get_strategy(name, **({'pairing': 'shared'} if name == 'bc' else {}))
    plan = _manual_plan(s, 7)
    t = s.targets(plan, y)
    chex.assert_shape(t, (N, C))
    np.testing.assert_allclose(np.asarray(t.sum(-1)), 1.0, atol=1e-6)
    tt = np.asarray(t, np.float64)
    if name == 'standard':
      np.testing.assert_array_equal(tt, np.asarray(y))
      want = -np.mean(np.sum(tt * log_q, -1))  # cross-entropy
    else:
      r = np.asarray(plan.r)[:, None]
      np.testing.assert_allclose(tt, r * np.asarray(y) + (1 - r) * np.asarray(y)[np.arange(N) ^ 1], atol=1e-6)
      want = np.mean(np.sum(np.where(tt > 0, tt * np.log(np.where(tt > 0, tt, 1)), 0) - tt * log_q, -1))  # KL
    np.testing.assert_allclose(float(s.loss(logits, t)), want, rtol=1e-5)
  with pytest.raises(ValueError, match='labels_onehot'):
    mixing.get_strategy('bc').targets(plan, y[:4])


def test_one_compiled_step_serves_every_strategy_layer_and_ratio():
  """All strategies in one jitted step: plans from keys and hand-made plans never retrace it."""
  x, y, w = _batch(3)
  strategies = {n: _PLAN_VARIANTS[n] for n in ('standard', 'bc', 'speechmix', 'intermix', 'mixup_0_1_2_3')}

  @jax.jit
  @chex.assert_max_traces(n=1)
  def loss_and_grad(plans, x, w):
    return {n: jax.value_and_grad(lambda w: _step(s, plans[n], x, y, w))(w) for n, s in strategies.items()}

  layers_seen = collections.defaultdict(set)
  stacked = _stacked_plans([jax.random.fold_in(jax.random.key(9), i) for i in range(6)])
  for i in range(6):  # a fresh key per step, as the trainer does
    plans = {n: jax.tree.map(lambda v: jnp.asarray(v[i]), stacked[n]) for n in strategies}
    for n, (loss, grad) in loss_and_grad(plans, x, w).items():
      chex.assert_tree_all_finite((loss, grad))
      layers_seen[n].add(int(plans[n].layer))
  manual = {n: _manual_plan(s, 8) for n, s in strategies.items()}
  results = collections.defaultdict(list)
  for layer in range(K):
    for scale in (1.0, 0.5):  # the layer and the ratios change, the compiled step does not
      plans = {n: p.replace(layer=jnp.asarray(layer if strategies[n].mixes else -1, jnp.int32), r=p.r * scale)
               for n, p in manual.items()}
      for n, (loss, grad) in loss_and_grad(plans, x, w).items():
        chex.assert_tree_all_finite((loss, grad))
        if layer in strategies[n].layers(K):
          results[n].append(float(loss))
  for n, s in strategies.items():
    if not s.mixes:
      assert len(set(results[n])) == 1
      continue
    eligible = s.layers(K)
    assert len(set(np.round(results[n], 6))) == 2 * len(eligible), n  # every layer / ratio matters
    if len(eligible) > 1:
      assert len(layers_seen[n]) > 1, n  # the drawn layer varied under one compiled step


def test_mixer_checks_rows_and_rate_and_skips_ineligible_points():
  s = mixing.get_strategy('speechmix')
  plan = mixing.MixPlan(layer=jnp.int32(1), r=jnp.full(4, 0.5), phi=jnp.zeros(4))
  with pytest.raises(ValueError, match='4 rows'):
    s.mixer(plan, FS)(jnp.ones((6, 10)), 1)
  with pytest.raises(ValueError, match='sample rate'):
    s.mixer(plan, 0)
  # a point that can never be chosen costs nothing: the same object comes back
  h = jnp.ones((4, 10))
  assert mixing.get_strategy('bc').mixer(plan, FS)(h, 2) is h
  assert mixing.get_strategy('speechmix', eligible_layers=(2,)).mixer(plan, FS)(h, 1) is h
  assert mixing.get_strategy('standard').mixer(plan, FS)(h, 0) is h


# --- pairing: shared pairs (each pair mixed twice) and independent pairs (each pair once) ------
@pytest.mark.parametrize('name,options', [
    ('bc', {}), ('bc', {'p_weighting': False}), ('mixup', {'pairing': 'independent'}),
    ('intermix', {'pairing': 'independent', 'eligible_layers': (0,)})])
def test_independent_pairs_mix_each_pair_once(name, options):
  """Independent pairs: N sounds -> N / 2 mixtures, mixture k = the shared-pair mixture of row 2k
  (same law, same ratio r[2k], same p from the levels of rows 2k and 2k+1), targets likewise."""
  s = mixing.get_strategy(name, **options)
  shared = mixing.get_strategy(name, **{**options, 'pairing': 'shared'})
  assert s.pairing == 'independent' and s.sounds_per_example == 2 and shared.sounds_per_example == 1
  x, y, _ = _batch(4)
  plan = _manual_plan(s, 11)
  xs = s.prepare_input(plan, x)
  got = s.mixer(plan, FS)(xs, 0)
  want = np.asarray(shared.mixer(plan, FS)(shared.prepare_input(plan, x), 0))[0::2]
  chex.assert_shape(got, (N // 2, T))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(s.targets(plan, y)), np.asarray(shared.targets(plan, y))[0::2],
                             atol=1e-7)
  for k in range(1, K):  # hidden points are never eligible: untouched, whatever their rows
    h = jnp.ones((N // 2, 7))
    assert s.mixer(plan, FS)(h, k) is h
  with pytest.raises(ValueError, match='6 rows'):
    s.mixer(plan, FS)(got, 0)  # the plan's rows are sounds, not mixtures


def test_pairing_defaults_labels_and_errors():
  assert mixing.get_strategy('bc').pairing == 'independent'  # BC's reference code
  for name in ('mixup', 'speechmix', 'intermix'):
    assert mixing.get_strategy(name).pairing == 'shared'  # the SpeechMix / InterMix codes
  # BC at hidden points keeps shared pairs by default; asked for independent pairs, it refuses.
  assert mixing.get_strategy('bc', eligible_layers=(0, 2)).pairing == 'shared'
  with pytest.raises(ValueError, match=r"pairing='independent' .* eligible_layers=\(0,\) \(got None\)"):
    mixing.get_strategy('intermix', pairing='independent')
  with pytest.raises(ValueError, match='pairing must be one of'):
    mixing.get_strategy('bc', pairing='twice')
  assert mixing.get_strategy('bc').label() == 'bc'
  assert mixing.get_strategy('bc', pairing='shared').label() == 'bc[shared-pairs]'
  assert mixing.get_strategy('mixup', pairing='independent').label() == 'mixup[independent-pairs]'
  assert mixing.get_strategy('bc', eligible_layers=(0, 2)).label() == 'bc[layers=0,2]'
  assert mixing.get_strategy('intermix', eligible_layers=(0,), pairing='independent',
                             normalize=False).label() == 'intermix[layers=0,no-normalize,independent-pairs]'


def test_independent_pairs_train_step_gradients_are_finite_and_per_mixture():
  """One jitted loss and gradient through the toy model at N / 2 rows after the input."""
  s = mixing.get_strategy('bc')
  x, y, w = _batch(5)

  def toy_half(x, mix, w):  # the toy model's first layer on whatever rows the mixer returns
    h = mix(x, 0)
    return 30.0 * (jax.nn.relu(h[:, :C] * w[0]) - jax.nn.relu(h[:, C:2 * C] * w[1]))

  def loss(w, plan):
    return s.loss(toy_half(s.prepare_input(plan, x), s.mixer(plan, FS), w), s.targets(plan, y))

  plan = s.plan(jax.random.key(3), N, K)
  value, grad = jax.jit(jax.value_and_grad(loss))(w, plan)
  chex.assert_tree_all_finite((value, grad))
  assert float(jnp.abs(grad).sum()) > 0
