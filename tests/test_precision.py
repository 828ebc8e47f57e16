"""Mixed precision (`model.precision='bfloat16'`): what runs in bfloat16, what stays float32, and how
far a bfloat16 step is from the float32 one.

Tolerances (CPU, jaxlib 0.10.2; measured values in the comments):
  - one conv-BN-ReLU block and one dense layer: relative L2 error <= 1e-2 of the output and of every
    gradient against float32 (bfloat16 keeps 8 significant bits: 2^-9 = 0.2 % per rounding);
  - the whole train loss of PiczakCNN (width 0.25, fc 32, InterMix as configured by default, batch
    8, at initialisation): loss within 1 % (relative), gradient (all parameters as one vector) with
    cosine >= 0.98 and relative L2 error <= 0.2 against float32, and no more than 2x (+0.05) the
    change the float32 gradient itself shows when only its input waveform is rounded to bfloat16.
    The gradient of these networks is not a smooth function of the activations: each max-pool
    window sends its whole gradient to one element and each ReLU switches its gradient on or off,
    so a rounding that changes which element is the maximum, or the sign of a pre-activation near
    0, moves it (EnvNet's float32 gradient moves by 18 % when only the input is rounded); InterMix's
    interference derivative sqrt(b) / sqrt(a) amplifies changes of small activations further.
    An elementwise tolerance of a few ulps would be meaningless. Other settings, measured with
    `step_agreement` (rel16 / rel_input / cosine): EnvNet InterMix 0.22 / 0.18 / 0.980; EnvNet
    InterMix at point 2 only 0.35 / 0.09 / 0.948; EnvNet standard 0.18 / 0.10 / 0.984; SoundNet5
    InterMix 0.27 / 0.10 / 0.968; losses within 0.3 % in every case.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from intermix_jax import mixing, models, steps
from intermix_jax.models import cpu_ops, layers

SMALL = dict(envnet=dict(width=0.25, fc_units=32), envnetv2=dict(width=0.3, fc_units=32),
             m18=dict(width=0.25), soundnet5=dict(width=0.25), piczakcnn=dict(width=0.25, fc_units=32))


def _rel(a, b):
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def _flat(tree):
  return np.concatenate([np.asarray(v, np.float64).ravel() for v in jax.tree.leaves(tree)])


def test_precision_option_is_validated():
  with pytest.raises(ValueError, match='precision'):
    models.get_model('envnet', 5, precision='float16')
  assert models.get_model('envnet', 5).precision == 'float32'
  assert 'precision' in models.OPTIONS
  assert layers.compute_dtype('bfloat16') == jnp.bfloat16


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_bfloat16_model_has_the_float32_variables_and_float32_logits(name):
  shapes = {}
  for precision in ('float32', 'bfloat16'):
    model = models.get_model(name, 5, precision=precision, **SMALL[name])
    x = jax.ShapeDtypeStruct((2, model.input_length), jnp.float32)
    variables = jax.eval_shape(
        lambda x, m=model: m.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x),
        x)
    shapes[precision] = jax.tree.map(lambda s: (s.shape, s.dtype), variables)
    seen = []

    def record(h, k, seen=seen):
      seen.append((k, h.dtype))
      return h

    logits = jax.eval_shape(lambda v, x, m=model: m.apply(v, x, train=False, mix=record),
                            variables, x)
    assert logits.dtype == jnp.float32, (name, precision)
    # every mix point hands `mix` a float32 tensor (the laws are never evaluated in bfloat16)
    assert [k for k, _ in seen] == list(range(model.num_mix_points))
    assert all(dtype == jnp.float32 for _, dtype in seen), (name, precision, seen)
  assert shapes['float32'] == shapes['bfloat16']
  assert all(dtype == jnp.float32 for _, dtype in jax.tree.leaves(
      shapes['bfloat16'], is_leaf=lambda v: isinstance(v, tuple)))


def _loss_fn(model, strategy, params, batch_stats, x, y):
  return steps.mixed_loss(params, batch_stats, x, y, jax.random.key(3), model=model,
                          strategy=strategy, num_classes=5)[0]


def test_convolutions_and_dense_layers_compute_in_bfloat16():
  model = models.get_model('envnet', 5, precision='bfloat16', **SMALL['envnet'])
  strategy = mixing.get_strategy('standard')
  opt = steps.OptimizerSpec(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, num_epochs=2,
                            steps_per_epoch=2, schedule=(0.5,), warmup_epochs=0)
  state = jax.eval_shape(lambda k: steps._init_state(model, opt.tx(), k, model.input_length),
                         jax.random.key(0))
  x = jax.ShapeDtypeStruct((4, model.input_length), jnp.float32)
  y = jax.ShapeDtypeStruct((4,), jnp.int32)
  with cpu_ops.force('plain'):   # the accelerator's program: one convolution op per product
    jaxpr = jax.make_jaxpr(jax.grad(lambda p, bs, x, y: _loss_fn(model, strategy, p, bs, x, y)))(
        state.params, state.batch_stats, x, y)
  ops = {}

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ('conv_general_dilated', 'dot_general'):
        ops.setdefault(eqn.primitive.name, []).append(
            tuple(str(v.aval.dtype) for v in eqn.invars))
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr
          if hasattr(sub, 'eqns'):
            walk(sub)

  walk(jaxpr.jaxpr)
  # forward, input gradient and weight gradient of the 4 convolutions (conv1 needs no input
  # gradient) and of the 3 dense layers, all on bfloat16 operands, except the classifier's two
  # backward products, which take the float32 gradient of the float32 logits as they are (2 small
  # products: num_classes columns)
  assert sorted(ops['conv_general_dilated']) == [('bfloat16', 'bfloat16')] * 11
  assert sorted(ops['dot_general']) == ([('bfloat16', 'bfloat16')] * 7
                                        + [('float32', 'bfloat16')] * 2), ops['dot_general']
  # the train step keeps parameters, BatchNorm statistics, optimiser state and metrics float32
  new_state, metrics = jax.eval_shape(
      lambda s, b, k: steps.train_step(s, b, k, model=model, strategy=strategy, tx=opt.tx(),
                                       num_classes=5), state, dict(x=x, y=y), jax.random.key(0))
  floats = [leaf.dtype for leaf in jax.tree.leaves((new_state.params, new_state.batch_stats,
                                                     new_state.opt_state))
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  assert floats and all(dtype == jnp.float32 for dtype in floats)
  assert metrics['loss'].dtype == jnp.float32


def _conv_block_case(precision, impl, x, train=True):
  with cpu_ops.force(impl):
    return _conv_block(precision, x, train)


def _conv_block(precision, x, train):
  block = layers.ConvBNReLU(12, (1, 9), (1, 2), ((0, 0), (3, 3)),
                            dtype=layers.compute_dtype(precision))
  variables = block.init(jax.random.key(0), x, train=False)
  target = jax.random.normal(jax.random.key(5), block.apply(variables, x, train=False).shape)

  def loss(params, x):
    h, _ = block.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=train,
                       mutable=['batch_stats'])
    return jnp.sum(h.astype(jnp.float32) * target), h

  (_, h), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
      variables['params'], x)
  return h, grads


def test_conv_block_and_dense_agree_with_float32_to_bfloat16_rounding():
  x = jax.random.normal(jax.random.key(1), (4, 1, 600, 3), jnp.float32)
  h32, (gp32, gx32) = _conv_block_case('float32', 'plain', x)
  errors = {}
  for impl in ('plain', 'cpu'):
    h16, (gp16, gx16) = _conv_block_case('bfloat16', impl, x)
    assert h16.dtype == jnp.bfloat16 and gx16.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(gp16))
    errors[impl] = [_rel(h32, h16), _rel(gx32, gx16)] + [
        _rel(a, b) for a, b in zip(jax.tree.leaves(gp32), jax.tree.leaves(gp16))]
  x = jax.random.normal(jax.random.key(2), (8, 40), jnp.float32)
  outs = {}
  for precision in ('float32', 'bfloat16'):
    dense = layers.Dense(7, layers.compute_dtype(precision))
    params = dense.init(jax.random.key(0), x)
    outs[precision] = jax.value_and_grad(
        lambda p, x, d=dense: jnp.sum(jnp.sin(d.apply(p, x).astype(jnp.float32))), (0, 1))(params, x)
  errors['dense'] = [_rel(outs['float32'][0], outs['bfloat16'][0])] + [
      _rel(a, b) for a, b in zip(jax.tree.leaves(outs['float32'][1]),
                                 jax.tree.leaves(outs['bfloat16'][1]))]
  # outputs: a few roundings of 2^-9 (measured 0.3 %); gradients: also the ReLU elements whose
  # sign the rounding flips (a fraction ~2^-8 of them switch their whole gradient on or off),
  # measured 2.6 % for the block's input gradient
  assert errors['plain'][0] < 1e-2 and errors['cpu'][0] < 1e-2, errors
  assert max(max(e) for e in errors.values()) < 5e-2, errors


@pytest.mark.parametrize('x_shape, w_shape, strides', [
    ((2, 1, 1100, 10), (1, 9, 10, 6), (1, 1)),    # FFT weight gradient
    ((2, 1, 900, 1), (1, 16, 1, 6), (1, 1)),      # im2col gradients
    ((2, 1, 900, 3), (1, 8, 3, 5), (1, 2)),       # space-to-depth fold of a strided conv
    ((2, 24, 60, 10), (3, 3, 10, 4), (1, 1)),     # FFT weight gradient, 2-D
])
def test_cpu_rewrites_in_bfloat16_agree_with_the_float32_convolution(x_shape, w_shape, strides):
  x = jax.random.normal(jax.random.key(0), x_shape, jnp.float32)
  w = jax.random.normal(jax.random.key(1), w_shape, jnp.float32) / math.sqrt(np.prod(w_shape[:3]))
  g = jax.random.normal(jax.random.key(2), layers.plain_conv(x, w, strides).shape)

  def run(impl, dtype):
    def f(x, w):
      y = layers.conv2d(x.astype(dtype), w.astype(dtype), strides)
      return jnp.sum(y.astype(jnp.float32) * g), y
    with cpu_ops.force(impl):
      return jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True))(x, w)

  (_, y32), (dx32, dw32) = run('plain', jnp.float32)
  (_, y16), (dx16, dw16) = run('cpu', jnp.bfloat16)
  assert y16.dtype == jnp.bfloat16 and dx16.dtype == jnp.float32 and dw16.dtype == jnp.float32
  # no ReLU or max-pool here: only roundings (measured <= 0.4 %)
  assert _rel(y32, y16) < 1e-2 and _rel(dx32, dx16) < 1e-2 and _rel(dw32, dw16) < 1e-2


def step_agreement(name='envnet', strategy='intermix', batch=8, **mixing_options):
  """float32 vs bfloat16 loss and gradient of `steps.mixed_loss` at initialisation, on a batch of
  decaying tones plus noise; also the float32 gradient on the input rounded to bfloat16.

  Returns dict(loss32, loss16, cosine, rel16 (relative L2 error of the bfloat16 gradient, all
  parameters as one vector), rel_input (the same for float32 on the rounded input)).
  """
  strategy = mixing.get_strategy(strategy, **mixing_options)
  rng = np.random.default_rng(0)
  fns = {}
  for precision in ('float32', 'bfloat16'):
    model = models.get_model(name, 5, precision=precision, **SMALL[name])
    fns[precision] = jax.jit(jax.value_and_grad(
        lambda p, bs, x, y, m=model: _loss_fn(m, strategy, p, bs, x, y)))
  t = np.arange(model.input_length) / model.sample_rate
  f0 = rng.uniform(100, 2000, (batch, 1))
  x = (0.3 * np.sin(2 * np.pi * f0 * t) * np.exp(-3 * t)
       + 0.01 * rng.standard_normal((batch, model.input_length))).astype(np.float32)
  y = np.arange(batch, dtype=np.int32) % 5
  variables = jax.jit(lambda k: model.init({'params': k, 'dropout': k}, x[:2]))(jax.random.key(0))
  args = (variables['params'], variables['batch_stats'])
  loss32, grad32 = fns['float32'](*args, x, y)
  loss16, grad16 = fns['bfloat16'](*args, x, y)
  x_rounded = np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32))
  _, grad32_rounded_input = fns['float32'](*args, x_rounded, y)
  a, b, c = _flat(grad32), _flat(grad16), _flat(grad32_rounded_input)
  return dict(loss32=float(loss32), loss16=float(loss16),
              cosine=float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)),
              rel16=_rel(a, b), rel_input=_rel(a, c))


def test_bfloat16_train_loss_and_gradient_agree_with_float32():
  r = step_agreement('piczakcnn', 'intermix')
  assert abs(r['loss16'] - r['loss32']) <= 0.01 * r['loss32'], r     # measured 0.06 %
  assert r['cosine'] >= 0.98, r                                       # measured 0.996
  assert r['rel16'] <= 0.2, r                                         # measured 0.09
  assert r['rel16'] <= 2 * r['rel_input'] + 0.05, r                   # float32 alone: 0.08
