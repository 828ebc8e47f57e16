"""Tests of intermix_jax.models: registry, shapes, parameter counts, init, mix points, modes, and the
CPU rewrites of `cpu_ops` (equal to the plain convolution and pool in value and gradient; each path
forced with `cpu_ops.force`, so they are compared on any backend).

Full-size models are only traced (jax.eval_shape); compiled tests use small widths.
"""
import dataclasses
import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from intermix_jax import models
from intermix_jax.models import cpu_ops, layers

NAMES = ('envnet', 'envnetv2', 'm18', 'soundnet5', 'piczakcnn')
# Small variants that compile quickly (EnvNet(-v2) need width >= 0.25 / 0.3: see check_width).
SMALL = {'envnet': dict(width=0.25, fc_units=32), 'envnetv2': dict(width=0.3, fc_units=32),
         'm18': dict(width=0.125), 'soundnet5': dict(width=0.125), 'piczakcnn': dict(width=0.25, fc_units=32)}


def _init_shapes(model, batch=2):
  x = jax.ShapeDtypeStruct((batch, model.input_length), jnp.float32)
  return jax.eval_shape(lambda x: model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)},
                                             x, train=False), x)


def _count(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _partner_mix(layer):
  """Stand-in mixing law: at point `layer` (traced), h -> (h + h[n ^ 1]) / 2; identity elsewhere."""
  def mix(h, k):
    partner = h[jnp.arange(h.shape[0]) ^ 1]
    return jnp.where(layer == k, 0.5 * h + 0.5 * partner, h)
  return mix


# --- registry ---------------------------------------------------------------------------------

def test_registry_names_and_attributes():
  expected = {'envnet': (16000, 24014, 4), 'envnetv2': (44100, 66650, 5), 'm18': (8000, 32000, 5),
              'soundnet5': (22050, 110250, 4), 'piczakcnn': (22050, 20480, 3)}
  assert set(models.MODELS) == set(NAMES)
  for name, (rate, length, points) in expected.items():
    m = models.get_model(name, 10)
    assert (m.sample_rate, m.input_length, m.num_mix_points) == (rate, length, points), name


def test_registry_rejects_unknown_names_options_and_values():
  with pytest.raises(ValueError, match="envnetv2.*m18|valid names"):
    models.get_model('resnet', 10)
  with pytest.raises(ValueError, match='valid options.*width'):
    models.get_model('envnet', 10, depth=3)
  for bad in (dict(width=0), dict(width=-1.0), dict(width='1'), dict(fc_units=0), dict(fc_units=2.5),
              dict(precision='float16'), dict(conv_impl='fast')):
    with pytest.raises(ValueError) as err:
      models.get_model('envnet', 10, **bad)
    message = str(err.value)
    assert '\n' not in message and next(iter(bad)) in message, message   # one line naming the field
  # the constructors validate their own fields (get_model adds only the name and option checks)
  for cls in models.MODELS.values():
    for bad in (dict(width=float('nan')), dict(fc_units=-3), dict(precision='half'), dict(num_classes=0)):
      with pytest.raises(ValueError, match=next(iter(bad))):
        cls(**{'num_classes': 3, **bad})
  with pytest.raises(ValueError, match='num_classes'):
    models.get_model('envnet', 0)
  with pytest.raises(ValueError, match='width'):   # the swapped height would vanish
    models.get_model('envnetv2', 10, width=0.25)
  with pytest.raises(ValueError, match='width'):
    models.get_model('envnet', 10, width=0.2)


def test_fc_units_defaults_to_published_width():
  assert models.get_model('envnet', 10).fc_units == 4096
  assert models.get_model('envnetv2', 10).fc_units == 4096
  assert models.get_model('piczakcnn', 10).fc_units == 5000
  assert models.get_model('envnet', 10, fc_units=None).fc_units == 4096
  assert models.get_model('piczakcnn', 10, fc_units=128).fc_units == 128


def test_wrong_input_length_is_a_clear_error():
  m = models.get_model('envnet', 10)
  with pytest.raises(ValueError, match=r'\(N, 24014\)'):
    jax.eval_shape(lambda x: m.init({'params': jax.random.key(0)}, x),
                   jax.ShapeDtypeStruct((2, 24000), jnp.float32))


def test_cpu_rewrites_follow_the_backend_and_are_no_model_option():
  assert 'conv_impl' not in models.OPTIONS
  for cls in models.MODELS.values():
    assert set(f.name for f in dataclasses.fields(cls)) >= {'num_classes', 'width', 'fc_units',
                                                            'precision'}
    assert 'conv_impl' not in set(f.name for f in dataclasses.fields(cls))
  on_cpu = jax.default_backend() == 'cpu'
  assert cpu_ops.enabled() == on_cpu
  with cpu_ops.force('plain'):
    assert not cpu_ops.enabled()
    with cpu_ops.force('cpu'):
      assert cpu_ops.enabled()
    assert not cpu_ops.enabled()
  assert cpu_ops.enabled() == on_cpu
  assert cpu_ops.set_forced('plain') is None and not cpu_ops.enabled()
  assert cpu_ops.set_forced(None) == 'plain' and cpu_ops.enabled() == on_cpu
  with pytest.raises(ValueError, match='impl'):
    with cpu_ops.force('auto'):
      pass
  # The path is chosen when traced: the default program of a model is the rewritten one on CPU only.
  x = jnp.zeros((2, 1, 100, 3))
  w = jnp.zeros((1, 16, 3, 4))
  text = jax.jit(lambda x, w: layers.conv2d(x, w, (1, 2))).lower(x, w).as_text()
  assert ('stride = [1, 2]' in text) == (not on_cpu)


# --- shapes -----------------------------------------------------------------------------------

def _mix_point_shapes(model, batch=2):
  variables = _init_shapes(model, batch)
  x = jax.ShapeDtypeStruct((batch, model.input_length), jnp.float32)
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mix=lambda h, k: h, rngs={'dropout': jax.random.key(0)},
                               mutable=['batch_stats', 'intermediates']), variables, x)
  inter = state['intermediates']
  return out.shape, {int(k.rsplit('_', 1)[1]): v[0].shape for k, v in inter.items()}


def test_envnet_mix_point_shapes_match_spec():
  # docs/method.md §4 (C, H, W): (1, 40, 150) after the swap, (50, 11, 46) after pool (3,3),
  # (50, 11, 14).
  out, shapes = _mix_point_shapes(models.get_model('envnet', 50), batch=3)
  assert out == (3, 50)
  assert shapes == {0: (3, 24014), 1: (3, 1, 40, 150), 2: (3, 50, 11, 46), 3: (3, 50, 11, 14)}


def test_envnetv2_mix_point_shapes_match_spec():
  # docs/method.md §4: (1,64,260) [1]; (32,10,82) [2]; (64,10,38) [3]; (128,10,18) [4]; 0 = input.
  out, shapes = _mix_point_shapes(models.get_model('envnetv2', 50), batch=3)
  assert out == (3, 50)
  assert shapes == {0: (3, 66650), 1: (3, 1, 64, 260), 2: (3, 32, 10, 82), 3: (3, 64, 10, 38),
                    4: (3, 128, 10, 18)}


def test_other_backbones_mix_point_shapes():
  # M18 (valid padding, 32000 samples): 7981 -> pool 1995; -8 -> 1987 -> 496; 488 -> 122; 114 -> 28.
  assert _mix_point_shapes(models.get_model('m18', 10))[1] == {
      0: (2, 32000), 1: (2, 64, 1995), 2: (2, 64, 496), 3: (2, 128, 122), 4: (2, 256, 28)}
  # SoundNet5 (110250): conv1 (110250+64-64)//2+1 = 55126 -> 6890; conv2 3446 -> 430; conv3 216 -> 27.
  assert _mix_point_shapes(models.get_model('soundnet5', 10))[1] == {
      0: (2, 110250), 1: (2, 32, 6890), 2: (2, 64, 430), 3: (2, 128, 27)}
  # PiczakCNN: (60,41) -> conv (57,6) -> (4,36) -> pool (4,3)/(1,3) -> (1,12) -> conv (1,3) -> (1,10) -> (1,3).
  assert _mix_point_shapes(models.get_model('piczakcnn', 10))[1] == {
      0: (2, 20480), 1: (2, 80, 1, 12), 2: (2, 80, 1, 3)}


@pytest.mark.parametrize('name', NAMES)
def test_output_shapes_at_batch_1_3_8(name):
  m = models.get_model(name, 7)
  variables = _init_shapes(m, 1)
  for batch in (1, 3, 8):
    x = jax.ShapeDtypeStruct((batch, m.input_length), jnp.float32)
    assert jax.eval_shape(lambda v, x: m.apply(v, x, train=False), variables, x).shape == (batch, 7)


# --- parameter counts -------------------------------------------------------------------------

def _conv_bn(kh, kw, cin, cout):
  """Params of a ConvBNReLU: kernel kh*kw*cin*cout (no bias) + BN scale and bias (2*cout)."""
  return kh * kw * cin * cout + 2 * cout


def _dense(fan_in, units):
  return fan_in * units + units


def test_parameter_counts_match_the_arithmetic():
  c = 50
  expected = {
      # EnvNet: conv 1x8 1->40, 1x8 40->40, 8x13 1->50, 1x5 50->50; fc 50*11*14=7700 -> 4096 -> 4096 -> c.
      'envnet': (_conv_bn(1, 8, 1, 40) + _conv_bn(1, 8, 40, 40) + _conv_bn(8, 13, 1, 50)
                 + _conv_bn(1, 5, 50, 50) + _dense(7700, 4096) + _dense(4096, 4096) + _dense(4096, c)),
      # EnvNet-v2: 1x64 1->32, 1x16 32->64, 8x8 1->32, 8x8 32->32, 1x4 32->64, 1x4 64->64,
      # 1x2 64->128, 1x2 128->128, 1x2 128->256, 1x2 256->256; fc 256*10*8=20480 -> 4096 -> 4096 -> c.
      'envnetv2': (_conv_bn(1, 64, 1, 32) + _conv_bn(1, 16, 32, 64) + _conv_bn(8, 8, 1, 32)
                   + _conv_bn(8, 8, 32, 32) + _conv_bn(1, 4, 32, 64) + _conv_bn(1, 4, 64, 64)
                   + _conv_bn(1, 2, 64, 128) + _conv_bn(1, 2, 128, 128) + _conv_bn(1, 2, 128, 256)
                   + _conv_bn(1, 2, 256, 256) + _dense(20480, 4096) + _dense(4096, 4096)
                   + _dense(4096, c)),
      # M18: 80 1->64; 4x 3 (64->64); 3 64->128 + 3x 3 (128->128); 3 128->256 + 3x (256->256);
      # 3 256->512 + 3x (512->512); GAP; fc 512 -> c.
      'm18': (_conv_bn(1, 80, 1, 64) + 4 * _conv_bn(1, 3, 64, 64)
              + _conv_bn(1, 3, 64, 128) + 3 * _conv_bn(1, 3, 128, 128)
              + _conv_bn(1, 3, 128, 256) + 3 * _conv_bn(1, 3, 256, 256)
              + _conv_bn(1, 3, 256, 512) + 3 * _conv_bn(1, 3, 512, 512) + _dense(512, c)),
      # SoundNet5: 64 1->32, 32 32->64, 16 64->128, 8 128->256, 16 256->1024; GAP; fc 1024 -> c.
      'soundnet5': (_conv_bn(1, 64, 1, 32) + _conv_bn(1, 32, 32, 64) + _conv_bn(1, 16, 64, 128)
                    + _conv_bn(1, 8, 128, 256) + _conv_bn(1, 16, 256, 1024) + _dense(1024, c)),
      # PiczakCNN: 57x6 2->80, 1x3 80->80; fc 80*1*3=240 -> 5000 -> 5000 -> c.
      'piczakcnn': (_conv_bn(57, 6, 2, 80) + _conv_bn(1, 3, 80, 80) + _dense(240, 5000)
                    + _dense(5000, 5000) + _dense(5000, c)),
  }
  # Written out: EnvNet-v2 = 101,046,464 + 4096 * 50 + 50 (the fc13 head) ... checked by the sum above.
  assert expected['envnetv2'] == 101_251_186
  for name, count in expected.items():
    variables = _init_shapes(models.get_model(name, c))
    assert _count(variables['params']) == count, name
    # batch_stats: BN mean and var, 2 per conv channel = the BN params' count.
    bn = sum(math.prod(v.shape) for path, v in jax.tree_util.tree_leaves_with_path(variables['params'])
             if 'bn' in jax.tree_util.keystr(path))
    assert _count(variables['batch_stats']) == bn, name


def test_width_scales_channels():
  variables = _init_shapes(models.get_model('envnetv2', 10, width=0.5, fc_units=64))
  p = variables['params']
  assert p['conv1']['conv']['kernel'].shape == (1, 64, 1, 16)
  assert p['conv3']['conv']['kernel'].shape == (8, 8, 1, 16)
  # Swapped height 32 -> 32-14 = 18 -> pool 5 -> 3 rows; 128 channels x 3 x 8 = 3072 inputs.
  assert p['fc11']['fc']['dense']['kernel'].shape == (3072, 64)


# --- initialisation ---------------------------------------------------------------------------

def test_init_follows_the_chainer_reference():
  m = models.get_model('envnet', 10, width=0.5, fc_units=512)
  x = jnp.zeros((2, m.input_length))
  variables = jax.jit(lambda x: m.init({'params': jax.random.key(3)}, x, train=False))(x)
  p = variables['params']
  checked = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(p):
    name = jax.tree_util.keystr(path)
    leaf = np.asarray(leaf)
    if name.endswith("['bias']"):
      assert not leaf.any(), name                            # zero biases (dense and BN shift)
    elif name.endswith("['scale']"):
      np.testing.assert_array_equal(leaf, 1.0)               # BN scale 1
    elif "['conv']['kernel']" in name or "['dense']['kernel']" in name:
      fan_in = math.prod(leaf.shape[:-1])
      gain = 2.0 if "['conv']" in name else 1.0              # He for convs, LeCun for dense
      std = math.sqrt(gain / fan_in)
      n = leaf.size
      # Sample std within 5 standard errors (std of a sample std ~ std / sqrt(2n)), mean ~ 0.
      assert abs(leaf.std() - std) < 5 * std / math.sqrt(2 * n) + 1e-7, (name, leaf.std(), std)
      assert abs(leaf.mean()) < 5 * std / math.sqrt(n), name
      # Untruncated normal: the kurtosis of a normal is 3 (a truncated normal at 2 sigma: ~2.4).
      if n >= 10_000:
        z = (leaf - leaf.mean()) / leaf.std()
        assert abs((z ** 4).mean() - 3.0) < 0.3, name
      checked += 1
  assert checked == 7


# --- the convolution rewrites -----------------------------------------------------------------

CONV_CASES = [
    # (input (N, H, W, C), kernel (kh, kw, C, O), strides, padding)
    ((2, 1, 67, 1), (1, 8, 1, 3), (1, 2), ((0, 0), (0, 0))),      # strided 1-D, odd length
    ((2, 1, 100, 3), (1, 16, 3, 4), (1, 2), ((0, 0), (0, 0))),
    ((1, 1, 203, 2), (1, 80, 2, 3), (1, 4), ((0, 0), (0, 0))),    # M18 conv1 shape family
    ((2, 1, 61, 3), (1, 16, 3, 2), (1, 12), ((0, 0), (4, 4))),    # SoundNet conv5: kw % s != 0, pad
    ((2, 1, 50, 2), (1, 7, 2, 3), (1, 3), ((0, 0), (5, 2))),      # asymmetric pad, kw % s != 0
    ((2, 1, 40, 2), (1, 5, 2, 3), (1, 1), ((0, 0), (2, 2))),      # padded stride 1
    ((2, 12, 30, 1), (8, 8, 1, 3), (1, 1), ((0, 0), (0, 0))),     # 2-D VALID (EnvNet-v2 conv3 family)
    ((3, 9, 21, 4), (8, 8, 4, 5), (1, 1), ((0, 0), (0, 0))),
    ((2, 20, 15, 2), (9, 4, 2, 3), (1, 1), ((0, 0), (0, 0))),     # 2 channels: im2col gradients
    ((2, 1, 90, 1), (1, 8, 1, 3), (1, 1), ((0, 0), (0, 0))),      # EnvNet conv1 family: im2col
    ((2, 1, 150, 1), (1, 32, 1, 4), (1, 2), ((0, 0), (0, 0))),    # EnvNet-v2 conv1: fold -> 2 ch, im2col
    ((2, 10, 17, 6), (1, 2, 6, 4), (1, 1), ((0, 0), (0, 0))),
    ((2, 9, 20, 2), (3, 3, 2, 2), (2, 2), ((0, 0), (0, 0))),      # 2-D strided: left to plain
    # Big enough for the FFT weight gradient (cpu_ops.fft_pays_off):
    ((2, 1, 2100, 8), (1, 8, 8, 4), (1, 1), ((0, 0), (0, 0))),    # 1-D, overlap-save blocks
    ((2, 1, 4300, 4), (1, 16, 4, 3), (1, 2), ((0, 0), (8, 8))),   # strided + padded -> 8 ch, 8 taps
    ((1, 40, 80, 8), (8, 8, 8, 4), (1, 1), ((0, 0), (0, 0))),     # 2-D (EnvNet-v2 conv4 family)
]


def _numpy_conv(x, w, strides, padding):
  """Direct-sum reference convolution (float64), independent of XLA."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), padding[0], padding[1], (0, 0)))
  w = np.asarray(w, np.float64)
  n, h, wd, c = x.shape
  kh, kw, _, o = w.shape
  ho, wo = (h - kh) // strides[0] + 1, (wd - kw) // strides[1] + 1
  y = np.zeros((n, ho, wo, o))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + strides[0] * (ho - 1) + 1:strides[0], j:j + strides[1] * (wo - 1) + 1:strides[1]]
      y += patch @ w[i, j]
  return y


@pytest.mark.parametrize('x_shape,w_shape,strides,padding', CONV_CASES)
def test_cpu_conv_equals_plain_conv_in_value_and_gradient(x_shape, w_shape, strides, padding):
  rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
  x = rng.standard_normal(x_shape).astype(np.float32)
  w = rng.standard_normal(w_shape).astype(np.float32)
  ref = _numpy_conv(x, w, strides, padding)
  g = rng.standard_normal(ref.shape).astype(np.float32)

  @jax.jit
  def both(x, w, g):
    out = {}
    for impl in ('plain', 'cpu'):
      with cpu_ops.force(impl):
        y, vjp = jax.vjp(lambda x, w: layers.conv2d(x, w, strides, padding), x, w)
        out[impl] = (y,) + vjp(g)
    return out

  out = both(x, w, g)
  np.testing.assert_allclose(out['plain'][0], ref, rtol=1e-4, atol=1e-4)
  for got, want in zip(out['cpu'], out['plain']):   # value, d/dx, d/dw
    # float32 rounding of different summation orders (FFT for large kernel gradients).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=3e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize('rewrite,cases', [
    ('fft_weight_gradient', [((2, 1, 1500, 3), 1, 9, 2), ((2, 1, 700, 2), 1, 40, 3), ((2, 13, 37, 3), 5, 8, 2)]),
    # im2col: row counts that do and do not divide into SPLIT_K_CHUNKS blocks, fewer rows than blocks
    ('im2col_weight_gradient', [((2, 1, 1507, 1), 1, 8, 5), ((3, 12, 30, 2), 8, 8, 3), ((1, 1, 10, 2), 1, 8, 2)]),
])
def test_weight_gradient_rewrites_equal_the_correlation_they_replace(rewrite, cases):
  # dW[i, j, c, o] = sum_{n,h,w} x[n, h+i, w+j, c] g[n, h, w, o], summed directly in float64.
  rng = np.random.default_rng(3)
  for x_shape, kh, kw, o in cases:
    x = rng.standard_normal(x_shape)
    n, h, w, c = x_shape
    g = rng.standard_normal((n, h - kh + 1, w - kw + 1, o))
    ref = np.stack([np.stack([np.einsum('nhwc,nhwo->co', x[:, i:i + g.shape[1], j:j + g.shape[2]], g)
                              for j in range(kw)]) for i in range(kh)])
    got = getattr(cpu_ops, rewrite)(jnp.asarray(x, jnp.float32), jnp.asarray(g, jnp.float32), (kh, kw))
    assert got.shape == (kh, kw, c, o)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_fft_weight_gradient_is_used_where_it_pays_off():
  assert cpu_ops.fft_pays_off((8, 57, 253, 32), (8, 8, 32, 32))        # EnvNet-v2 conv4
  assert cpu_ops.fft_pays_off((8, 1, 24007, 40), (1, 8, 40, 40))       # EnvNet conv2
  assert not cpu_ops.fft_pays_off((8, 64, 260, 1), (8, 8, 1, 32))      # one input channel
  assert not cpu_ops.fft_pays_off((8, 1, 1995, 64), (1, 3, 64, 64))    # three taps
  # The gradients of 8..128-tap kernels over 1-2 channel inputs go through im2col instead.
  assert cpu_ops.col2im_pays_off((8, 64, 260, 1), (8, 8, 1, 32))       # EnvNet-v2 conv3
  assert cpu_ops.col2im_pays_off((8, 40, 150, 1), (8, 13, 1, 50))      # EnvNet conv3
  assert cpu_ops.col2im_pays_off((8, 1, 24014, 1), (1, 8, 1, 40))      # EnvNet conv1
  assert cpu_ops.col2im_pays_off((8, 1, 33325, 2), (1, 32, 2, 32))     # EnvNet-v2 conv1, folded
  assert not cpu_ops.col2im_pays_off((8, 60, 41, 2), (57, 6, 2, 80))   # 342 taps: compile cost
  assert not cpu_ops.col2im_pays_off((8, 1, 6000, 4), (1, 20, 4, 64))  # 4 channels
  x, w = jnp.zeros((2, 1, 2100, 8)), jnp.zeros((1, 8, 8, 4))
  grad = jax.jit(jax.grad(lambda w: jnp.sum(cpu_ops.conv2d(x, w))))
  assert 'fft' in grad.lower(w).as_text()


def test_fft_sizes_are_smooth_and_minimal():
  for n in (1, 7, 57, 253, 16647, 24007):
    m = cpu_ops._fft_size(n)  # pylint: disable=protected-access
    assert m >= n
    r = m
    for p in (2, 3, 5):
      while r % p == 0:
        r //= p
    assert r == 1
    assert all(not _is_smooth(k) for k in range(n, m))


def _is_smooth(k):
  for p in (2, 3, 5):
    while k % p == 0:
      k //= p
  return k == 1


def test_cpu_rewrite_removes_strided_and_dilated_convolutions():
  # XLA:CPU has no fast kernel for strided or dilated convolutions (the gradients of a strided one
  # are dilated): after the rewrite, every convolution of the forward and backward pass is plain.
  x = jnp.zeros((2, 1, 100, 3))
  w = jnp.zeros((1, 16, 3, 4))
  g = jnp.zeros((2, 1, 43, 4))

  def windows(impl):
    def f(x, w, g):
      y, vjp = jax.vjp(lambda x, w: layers.conv2d(x, w, (1, 2)), x, w)
      return (y,) + vjp(g)
    with cpu_ops.force(impl):
      return re.findall(r'window = \{[^}]*\}', jax.jit(f).lower(x, w, g).as_text())

  plain, fast = windows('plain'), windows('cpu')
  assert len(plain) == len(fast) == 3
  assert any('stride = [1, 2]' in w for w in plain)
  assert any('lhs_dilate = [1, 2]' in w for w in plain) and any('rhs_dilate = [1, 2]' in w for w in plain)
  for w in fast:
    assert 'stride = [1, 1]' in w and 'lhs_dilate = [1, 1]' in w and 'rhs_dilate = [1, 1]' in w, w


def _forced(impl, f):
  """f traced (or run eagerly) with the pooling / convolution path `impl` forced."""
  def run(*args):
    with cpu_ops.force(impl):
      return f(*args)
  return run


@pytest.mark.parametrize('shape,window,strides', [((2, 5, 37, 3), (1, 4), None), ((2, 11, 20, 2), (5, 3), None),
                                                  ((2, 4, 36, 3), (4, 3), (1, 3))])
def test_cpu_max_pool_equals_reduce_window(shape, window, strides):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)  # continuous: no ties
  plain = _forced('plain', lambda x: layers.max_pool(x, window, strides))
  fast = _forced('cpu', lambda x: layers.max_pool(x, window, strides))
  y = plain(x)
  np.testing.assert_array_equal(fast(x), y)
  # Independent reference: max over every window, by loops.
  s = strides or window
  ref = np.stack([np.stack([np.asarray(x)[:, i * s[0]:i * s[0] + window[0], j * s[1]:j * s[1] + window[1]]
                            .max(axis=(1, 2)) for j in range(y.shape[2])], 1) for i in range(y.shape[1])], 1)
  np.testing.assert_array_equal(y, ref)
  g = rng.standard_normal(y.shape).astype(np.float32)
  np.testing.assert_array_equal(jax.vjp(fast, x)[1](g)[0], jax.vjp(plain, x)[1](g)[0])



@pytest.mark.parametrize('shape,window', [((2, 1, 480, 3), (1, 160)), ((2, 9, 12, 2), (3, 3))])
def test_cpu_max_pool_ties_go_to_the_first_maximum(shape, window):
  """With many ties (ReLU zeros, repeated integers) the jitted CPU pool sends each window's gradient
  to the same single element as reduce_window's select-and-scatter, also after a fused producer."""
  rng = np.random.default_rng(1)
  x = rng.integers(-3, 3, size=shape).astype(np.float32)
  scale = np.float32(1.0 / 3.0)
  g = rng.standard_normal(layers.max_pool(x, window).shape).astype(np.float32)

  def grad(impl):
    f = lambda x: layers.max_pool(jax.nn.relu(x * scale + 0.25), window)
    with cpu_ops.force(impl):
      y, vjp = jax.vjp(f, x)
      return y, vjp(g)[0]

  (y_plain, dx_plain), (y_cpu, dx_cpu) = jax.jit(lambda: grad('plain'))(), jax.jit(lambda: grad('cpu'))()
  np.testing.assert_array_equal(y_cpu, y_plain)
  np.testing.assert_array_equal(dx_cpu, dx_plain)
  # exactly one receiving element per window (where the ReLU passes the gradient at all)
  assert np.count_nonzero(dx_cpu) <= g.size


def test_first_max_index_matches_argmax_including_its_fallback():
  rng = np.random.default_rng(2)
  x = rng.integers(-2, 3, size=(3, 5, 40, 4)).astype(np.float32)   # ties everywhere
  x[1, 2, 7, 3] = np.nan        # no position equals a NaN max: the argmax fallback must answer
  f = jax.jit(lambda x: cpu_ops._first_max_index(x, 2))  # pylint: disable=protected-access
  m, index = f(x)
  np.testing.assert_array_equal(index, np.argmax(x, axis=2))
  np.testing.assert_array_equal(m, np.max(x, axis=2))
  m, index = f(np.nan_to_num(x))  # the fast path alone
  np.testing.assert_array_equal(index, np.argmax(np.nan_to_num(x), axis=2))


def test_max_along_gradient_is_the_same_past_the_flat_index_limit(monkeypatch):
  """Above MAX_FLAT_INDEX elements the gradient scatters with per-axis indices instead: same values."""
  rng = np.random.default_rng(5)
  x = rng.standard_normal((2, 3, 7, 4)).astype(np.float32)
  g = rng.standard_normal((2, 3, 4)).astype(np.float32)
  grad = lambda: jax.vjp(lambda x: cpu_ops.max_along(x, 2), x)[1](g)[0]
  flat = np.asarray(grad())
  monkeypatch.setattr(cpu_ops, 'MAX_FLAT_INDEX', x.size - 1)
  np.testing.assert_array_equal(np.asarray(grad()), flat)
  ref = np.zeros_like(x)
  np.put_along_axis(ref, x.argmax(2)[:, :, None], g[:, :, None], 2)
  np.testing.assert_array_equal(flat, ref)

# --- compiled models: mixing at every point, modes, BN --------------------------------------

def _numpy_variables(model, batch, seed=0):
  """Variables for `model` without compiling its init: shapes from jax.eval_shape, values drawn in
  numpy like the reference init (He-normal kernels, zero biases, BN scale 1, running stats 0 and 1)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      gain = 2.0 if "['conv']" in name else 1.0
      return (rng.standard_normal(leaf.shape) * np.sqrt(gain / math.prod(leaf.shape[:-1]))).astype(np.float32)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return np.ones(leaf.shape, np.float32)
    return np.zeros(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(fill, _init_shapes(model, batch))


@pytest.fixture(scope='module')
def small_models():
  out = {}
  for name in NAMES:
    m = models.get_model(name, 5, **SMALL[name])
    x = 0.1 * np.random.default_rng(7).standard_normal((4, m.input_length)).astype(np.float32)
    out[name] = (m, _numpy_variables(m, 4), x)
  return out


def _loss_and_grads(model, variables, x, layer):
  """Loss sum(log_softmax[:, 0]) with the stand-in mix at `layer`; returns logits, grads, sown tensors."""
  def loss_fn(params):
    logits, state = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=True,
                                mix=_partner_mix(layer), rngs={'dropout': jax.random.key(5)},
                                mutable=['batch_stats', 'intermediates'])
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0]), (logits, state['intermediates'])
  (_, (logits, inter)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
  return logits, grads, inter


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_mixing_at_every_point_under_one_jit_and_cpu_equals_plain(name, small_models):
  with cpu_ops.force('cpu'):
    _mixing_at_every_point_and_cpu_equals_plain(name, small_models)


def _mixing_at_every_point_and_cpu_equals_plain(name, small_models):
  m, variables, x = small_models[name]
  fast = m   # traced under cpu_ops.force('cpu'): the CPU rewrites, whatever the backend
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(variables, x, layer):
    return _loss_and_grads(fast, variables, x, layer)

  base_logits, base_grads, base_inter = step(variables, x, jnp.int32(-1))  # -1: no point mixes
  # Mixing nowhere equals no mixing at all (another program: float32 rounding, observed up to
  # 1.1e-5 on logits of O(1) on one core; a mixing left on would be O(0.1) off). Compiled: op by op,
  # the forward pass alone took 5 s for M18 here.
  unmixed = jax.jit(lambda v, x: fast.apply(v, x, train=True, rngs={'dropout': jax.random.key(5)},
                                            mutable=['batch_stats'])[0])(variables, x)
  np.testing.assert_allclose(base_logits, unmixed, rtol=1e-4, atol=1e-4)
  # The CPU rewrites compute the same function and gradients as the plain convolutions and pools,
  # checked on the two models that use every rewrite (space-to-depth, FFT weight gradient, im2col
  # input gradient, 1-D and 2-D pools; each rewrite is also tested alone above). One more compile
  # per model: the other three are left to the per-layer tests to keep the suite fast.
  if name in ('envnet', 'envnetv2'):
    with cpu_ops.force('plain'):
      plain_logits, plain_grads, _ = jax.jit(lambda v, x: _loss_and_grads(m, v, x, -1))(variables, x)
    np.testing.assert_allclose(base_logits, plain_logits, rtol=1e-4, atol=1e-5)
    helpers.assert_trees_close(base_grads, plain_grads, rtol=5e-3)
  for k in range(m.num_mix_points):
    logits, grads, inter = step(variables, x, jnp.int32(k))
    assert bool(jnp.all(jnp.isfinite(logits))), (name, k)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)), (name, k)
    assert not np.allclose(logits, base_logits), (name, k)   # mixing at k changes the output
    # The sown tensor at k is the mixed one: rows n and n^1 now agree; earlier points are untouched.
    h = np.asarray(inter[f'mix_point_{k}'][0])
    np.testing.assert_allclose(h[0::2], h[1::2], rtol=1e-5, atol=1e-6)
    for j in range(k):
      np.testing.assert_array_equal(inter[f'mix_point_{j}'][0], base_inter[f'mix_point_{j}'][0])
    if k > 0:
      assert h.min() >= 0, (name, k)                        # hidden points: non-negative features


@pytest.mark.parametrize('name', NAMES)
def test_eval_is_deterministic_and_train_uses_dropout_and_batch_stats(name, small_models):
  m, variables, x = small_models[name]

  @jax.jit
  def run(v, x):
    evals = [m.apply(v, x, train=False) for _ in range(2)]   # no dropout rng needed in eval
    trains = [m.apply(v, x, train=True, rngs={'dropout': jax.random.key(i)}, mutable=['batch_stats'])
              for i in (1, 2)]
    return evals, trains

  (e1, e2), ((out1, upd1), (out2, _)) = run(variables, x)
  np.testing.assert_array_equal(e1, e2)
  assert not np.allclose(e1, out1)                            # train mode: batch statistics
  has_dropout = name in ('envnet', 'envnetv2', 'piczakcnn')
  assert (not np.allclose(out1, out2)) == has_dropout, name
  # Every BatchNorm running mean and variance moved (momentum 0.9 from 0 and 1).
  for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(variables['batch_stats']),
                              jax.tree.leaves(upd1['batch_stats'])):
    assert not np.allclose(old, new), jax.tree_util.keystr(path)


def test_batchnorm_momentum_and_epsilon_follow_chainer(small_models):
  m, variables, x = small_models['envnet']
  _, upd = jax.jit(lambda v, x: m.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)},
                                        mutable=['batch_stats']))(variables, x)
  # Independent recomputation of conv1's output statistics (plain convolution, float64).
  kernel = np.asarray(variables['params']['conv1']['conv']['kernel'])
  h = _numpy_conv(np.asarray(x)[:, None, :, None], kernel, (1, 1), ((0, 0), (0, 0)))
  mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
  stats = upd['batch_stats']['conv1']['bn']
  np.testing.assert_allclose(stats['mean'], 0.9 * 0 + 0.1 * mean, rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(stats['var'], 0.9 * 1 + 0.1 * var, rtol=1e-3, atol=1e-6)
  # eps 2e-5: in eval mode with running stats (0, 1) and scale 1, BN(h) = h / sqrt(1 + 2e-5).
  relu = lambda v: np.maximum(v, 0)
  inter = jax.jit(lambda v, x: m.apply(v, x, train=False, mutable=['intermediates'],
                                       capture_intermediates=lambda mdl, _: mdl.name == 'conv1'))(
                                           variables, x)[1]['intermediates']
  np.testing.assert_allclose(inter['conv1']['__call__'][0][:, 0, :, :],
                             relu(h[:, 0] / np.sqrt(1 + 2e-5)), rtol=1e-4, atol=1e-5)
