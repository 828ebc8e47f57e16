"""Building blocks shared by the backbones: conv and conv-BN-ReLU modules, max-pooling, dense layers,
and numbered mix points.

Layout: activations are NHWC (batch, height, width, channels), kernels HWIO. A raw waveform
(N, T) enters as (N, 1, T, 1): time is the width axis, as in the reference Chainer code (which is
NCHW with H = 1).

Precision (`compute_dtype(precision)`, precision 'float32' | 'bfloat16'; the model option
`precision`): parameters are always float32 (so are the optimiser state and the BatchNorm running
statistics). With 'bfloat16', convolutions and dense layers cast their input and kernel to bfloat16
and return bfloat16 (on GPU/TPU the products accumulate in float32 inside the kernel); BatchNorm
normalises in float32 (batch mean and variance are float32 reductions, `x - mean` promotes) and
returns the compute dtype, so ReLU, max-pooling and dropout run on bfloat16 (exact operations
on the rounded values). Kept float32 whatever the precision: the waveform, the PiczakCNN front
end (a log of a power), every mix point as `mix` sees it (`mix_point`; see there why), global
average pools, and the logits (the classifier accumulates and returns float32). No loss scaling is
needed: bfloat16 has float32's exponent range (float16, which would need it, is not offered).

Initialisation follows the reference Chainer code (`mil-tokyo/bc_learning_sound`): convolutions
He-normal (untruncated normal, std sqrt(2 / fan_in), fan_in = kh * kw * c_in), dense layers
LeCun-normal (std sqrt(1 / fan_in)), zero biases; BatchNorm momentum 0.9 (Chainer's decay), eps 2e-5.

Convolutions (`conv2d`) and max-pools (`max_pool`) are the plain `lax.conv_general_dilated` and
`lax.reduce_window` on GPU/TPU; on the CPU backend they call the equivalent rewrites of
`cpu_ops` (same values and gradients, chosen when traced; never a model option).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from intermix_jax.models import accel_ops, cpu_ops

__all__ = ['Backbone', 'Conv', 'ConvBNReLU', 'Dense', 'HiddenFC', 'conv2d', 'plain_conv', 'max_pool',
           'compute_dtype', 'PRECISIONS', 'mix_point', 'hidden_mix_point', 'scaled']

BN_MOMENTUM = 0.9
BN_EPSILON = 2e-5
DROPOUT_RATE = 0.5

# Chainer's HeNormal / LeCunNormal: untruncated normal with std sqrt(scale / fan_in).
he_normal = jax.nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
lecun_normal = jax.nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')

MixFn = Optional[Callable[[jax.Array, int], jax.Array]]

PRECISIONS = ('float32', 'bfloat16')
_COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(precision: str):
  """The dtype of convolutions and dense layers for `precision` ('float32' | 'bfloat16')."""
  if precision not in _COMPUTE_DTYPES:
    raise ValueError(f'models: precision must be one of {list(PRECISIONS)}, got {precision!r}')
  return _COMPUTE_DTYPES[precision]


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class Backbone(nn.Module):
  """The options every backbone takes, validated by the constructor (one-line ValueErrors naming
  the field). Subclasses set `sample_rate` (Hz), `input_length` (samples), `num_mix_points` and
  `published_fc_units` (the published hidden dense width; None where there is no hidden dense
  layer), may set `vmap_runs_on_accelerators` (True where K stacked runs train faster as one
  vmapped step than unrolled on a GPU/TPU: measured, benchmarks/README.md "Runs in one program on
  an H200"; it decides `multirun.resolve_method('auto', ...)`), and may override `check_width`.

    num_classes  int >= 1, the output width.
    width        float > 0, the channel multiplier of every conv (1.0 = the published model).
    fc_units     int >= 1, the hidden dense width; None = `published_fc_units` (accepted and
                 ignored by backbones without a hidden dense layer).
    precision    'float32' | 'bfloat16', the compute dtype of convolutions and dense layers
                 (parameters stay float32; see the module docstring).
  """
  num_classes: int
  width: float = 1.0
  fc_units: Optional[int] = None
  precision: str = 'float32'

  published_fc_units = None
  # Measured per backbone on an H200 (benchmarks/README.md): vmapped (grouped) convolutions of
  # EnvNet-v2 ran many times slower than unrolled ones. Unmeasured backbones take unroll.
  vmap_runs_on_accelerators = False

  @classmethod
  def check_width(cls, width: float) -> None:
    """Raises ValueError if `width` leaves a layer without output (default: any width > 0 works)."""
    del width

  def __post_init__(self):
    if not _is_int(self.num_classes) or self.num_classes < 1:
      raise ValueError(f'models: num_classes must be a positive int, got {self.num_classes!r}')
    width = self.width
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width) \
        or not width > 0:
      raise ValueError(f'models: width must be a positive number, got {width!r}')
    self.check_width(float(width))
    fc_units = self.fc_units
    if fc_units is not None and (not _is_int(fc_units) or fc_units < 1):
      raise ValueError(f'models: fc_units must be a positive int or None, got {fc_units!r}')
    if self.precision not in PRECISIONS:
      raise ValueError(f'models: precision must be one of {list(PRECISIONS)}, '
                       f'got {self.precision!r}')
    # Normalised values (a Flax module is immutable once its own __post_init__ has run).
    object.__setattr__(self, 'num_classes', int(self.num_classes))
    object.__setattr__(self, 'width', float(width))
    object.__setattr__(self, 'fc_units',
                       self.published_fc_units if fc_units is None else int(fc_units))
    super().__post_init__()


Padding = Tuple[Tuple[int, int], Tuple[int, int]]
_NO_PADDING = ((0, 0), (0, 0))


def _normalise_padding(padding) -> Padding:
  (a, b), (c, d) = padding
  return (int(a), int(b)), (int(c), int(d))


def plain_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
               padding: Padding = _NO_PADDING) -> jax.Array:
  """`lax.conv_general_dilated`, x (N, H, W, C) * kernel (kh, kw, C, O) -> NHWC.

  Zero padding `((top, bottom), (left, right))`; output (N, (H+pads-kh)//sh + 1, (W+pads-kw)//sw + 1, O).
  """
  return lax.conv_general_dilated(x, kernel, tuple(int(s) for s in strides),
                                  _normalise_padding(padding),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Padding = _NO_PADDING) -> jax.Array:
  """Zero-padded convolution x (N, H, W, C) * kernel (kh, kw, C, O) -> (N, H', W', O).

  `plain_conv`, or on the CPU backend (`cpu_ops.enabled()`) `cpu_ops.conv2d`: the same function.
  """
  padding = _normalise_padding(padding)
  strides = tuple(int(s) for s in strides)
  if cpu_ops.enabled():
    return cpu_ops.conv2d(x, kernel, strides, padding)
  return plain_conv(x, kernel, strides, padding)


def max_pool(x: jax.Array, window: Sequence[int], strides: Optional[Sequence[int]] = None) -> jax.Array:
  """Max-pool x (N, H, W, C) without padding (floor: a partial window at the end is dropped).

  Args:
    window: (wh, ww).
    strides: (sh, sw); default = window.
  Returns:
    (N, (H - wh) // sh + 1, (W - ww) // sw + 1, C). `lax.reduce_window`, whose gradient goes to the
    first maximum of each window in row-major order; on the CPU backend (`cpu_ops.enabled()`) a
    pool with strides == window is `cpu_ops.max_pool`: the same values and gradients.
  """
  window = tuple(int(v) for v in window)
  strides = window if strides is None else tuple(int(v) for v in strides)
  _, h, w, _ = x.shape
  ho, wo = (h - window[0]) // strides[0] + 1, (w - window[1]) // strides[1] + 1
  if ho < 1 or wo < 1:
    raise ValueError(f'models: cannot max-pool a {h}x{w} map with a {window[0]}x{window[1]} window')
  if strides == window and cpu_ops.enabled():
    return cpu_ops.max_pool(x, window)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1,) + window + (1,), (1,) + strides + (1,),
                           'VALID')


def scaled(channels: int, width: float) -> int:
  """Channel count scaled by the width multiplier (rounded, at least 1)."""
  return max(1, int(round(channels * width)))


class Conv(nn.Module):
  """Bias-free convolution with a He-normal float32 kernel `kernel` (kh, kw, C_in, features).

  `dtype` is the compute dtype: input and kernel are cast to it and the output has it.
  `form` (`CONV_FORMS`) picks how the same function is computed (`accel_ops`; the parameter is
  the same (kh, kw, C_in, features) kernel whatever the form): 'conv' = `conv2d`; an input of
  rank 3, (N, W, C_in), with a unit-height kernel = a 1-D convolution (`accel_ops.conv1d`, or
  with form 'blocked' `accel_ops.blocked_conv1d`); 'rows' / 'rows_blocked' = `accel_ops.rows_conv`
  (a one-channel input, stride 1). The non-'conv' forms take no padding.
  """
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  padding: Padding = ((0, 0), (0, 0))
  dtype: Any = jnp.float32
  form: str = 'conv'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x (N, H, W, C_in) -> (N, H', W', features) in `dtype`; x (N, W, C_in) -> (N, W', features)."""
    kernel = self.param('kernel', he_normal,
                        tuple(self.kernel_size) + (x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.form not in CONV_FORMS:
      raise ValueError(f'models: Conv form must be one of {list(CONV_FORMS)}, got {self.form!r}')
    if x.ndim == 3 or self.form != 'conv':
      if _normalise_padding(self.padding) != _NO_PADDING:
        raise ValueError('models: a padded convolution has only the form \'conv\' on a 4-D input')
    if x.ndim == 3:
      stride = int(self.strides[1])
      if self.form == 'blocked':
        return accel_ops.blocked_conv1d(x, kernel[0], stride, accel_ops.CONV1_BLOCK)
      return accel_ops.conv1d(x, kernel, stride)
    if self.form in ('rows', 'rows_blocked'):
      if tuple(self.strides) != (1, 1):
        raise ValueError('models: the rows forms are stride-1 convolutions')
      return accel_ops.rows_conv(x, kernel,
                                 accel_ops.CONV3_BLOCK if self.form == 'rows_blocked' else None)
    if self.form == 'blocked':
      raise ValueError('models: the blocked form is a 1-D convolution: x must be (N, W, C)')
    return conv2d(x, kernel, self.strides, self.padding)


CONV_FORMS = ('conv', 'blocked', 'rows', 'rows_blocked')


class ConvBNReLU(nn.Module):
  """Conv (no bias) -> BatchNorm (momentum 0.9, eps 2e-5) -> ReLU, as the reference `ConvBNReLU`.

  Parameters: conv/kernel (kh*kw*C_in*features), bn/scale and bn/bias (features each); batch_stats
  bn/mean and bn/var. In train mode BN normalises with the batch statistics and updates the running
  averages (`mutable=['batch_stats']`); in eval mode it uses the running averages. Parameters and
  statistics are float32 and BN computes in float32 whatever `dtype` (the compute dtype of the
  conv and of the block's output).
  """
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  padding: Padding = ((0, 0), (0, 0))
  dtype: Any = jnp.float32
  form: str = 'conv'  # `Conv.form`

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x (N, H, W, C_in) -> (N, H', W', features) in `dtype`, non-negative (or x (N, W, C_in))."""
    h = Conv(self.features, self.kernel_size, self.strides, self.padding, self.dtype, self.form,
             name='conv')(x)
    # flax computes the statistics with float32 reductions and normalises in float32 (the float32
    # mean promotes x - mean); `dtype` is only the dtype of the result.
    h = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                     dtype=self.dtype, param_dtype=jnp.float32, name='bn')(h)
    return nn.relu(h)


def _dot_float32_out(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general` accumulating and returning float32 (operands in their own dtype)."""
  del preferred_element_type
  return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                         preferred_element_type=jnp.float32)


class Dense(nn.Module):
  """Fully connected layer, float32 LeCun-normal kernel (fan_in, features), zero bias (features,).

  dtype: the compute dtype (input and kernel are cast to it). float32_output: return float32, the
  product accumulated in float32 (the classifier: logits are never rounded to bfloat16).
  """
  features: int
  dtype: Any = jnp.float32
  float32_output: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x (N, fan_in) -> (N, features), in `dtype` (float32 with float32_output)."""
    dot = _dot_float32_out if self.float32_output else None
    y = nn.Dense(self.features, kernel_init=lecun_normal, bias_init=nn.initializers.zeros,
                 dtype=self.dtype, param_dtype=jnp.float32, dot_general=dot, name='dense')(x)
    return y.astype(jnp.float32) if self.float32_output else y


class HiddenFC(nn.Module):
  """Dense -> ReLU -> Dropout(0.5) (train mode only; needs rngs={'dropout': key}), in `dtype`."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x (N, fan_in) -> (N, features) in `dtype`."""
    h = nn.relu(Dense(self.features, self.dtype, name='fc')(x))
    return nn.Dropout(DROPOUT_RATE, deterministic=not train)(h)


def waveform_to_nhwc(x: jax.Array) -> jax.Array:
  """(N, T) -> (N, 1, T, 1)."""
  return x[:, None, :, None]


def swap_channels_and_height(h: jax.Array) -> jax.Array:
  """(N, 1, W, C) -> (N, C, W, 1): the reference's `F.swapaxes(h, 1, 2)` of NCHW, in NHWC."""
  return jnp.transpose(h, (0, 3, 2, 1))


def nhwc_to_channel_first(h: jax.Array, one_d: bool) -> jax.Array:
  """(N, H, W, C) -> (N, C, H, W), or (N, C, W) when `one_d` (H = 1)."""
  if one_d:
    return jnp.transpose(h[:, 0], (0, 2, 1))
  return jnp.transpose(h, (0, 3, 1, 2))


def channel_first_to_nhwc(h: jax.Array, one_d: bool) -> jax.Array:
  """Inverse of `nhwc_to_channel_first`."""
  if one_d:
    return jnp.transpose(h, (0, 2, 1))[:, None]
  return jnp.transpose(h, (0, 2, 3, 1))


def mix_point(module: nn.Module, h: jax.Array, k: int, mix: MixFn) -> jax.Array:
  """Mix point k: `h = mix(h, k)` when mix is given, then sow h as intermediates/mix_point_{k}.

  The mixing function and the sown value see h as given here (the models pass channel-first
  tensors: the reference code's NCHW layout, so a flattened tensor reads as the reference's signal),
  in float32 whatever the compute dtype; the result is cast back to h's dtype. Raises ValueError if
  `mix` changes the shape (other than halving the rows).

  Why the mixing laws must not run in bfloat16 (8 significant bits): BC's p comes from A-weighted
  levels, 10 log10 of a power summed over thousands of squared samples (a bfloat16 running sum
  stops growing once the terms fall below 2^-9 of it, and a level error of d dB moves p's odds by
  a factor 10^(d/20)); InterMix's interference term 2 sqrt(a b) cos(dphi) cancels against a + b when
  cos(dphi) ~ -1 (the result (sqrt a - sqrt b)^2 can be far smaller than the 2^-9 (a + b) rounding
  of a bfloat16 sum), and its derivative sqrt(b) / sqrt(a) near a = 0 amplifies the rounding of a
  small a.
  """
  if mix is not None:
    mixed = mix(h.astype(jnp.float32), k)
    halved = (h.shape[0] // 2,) + h.shape[1:]  # independent pairs: one mixture per pair
    if mixed.shape != h.shape and mixed.shape != halved:
      raise ValueError(f'models: mix(h, {k}) must keep the shape {h.shape} (or halve its rows, '
                       f'{halved}), returned {mixed.shape}')
    h = mixed.astype(h.dtype)
  module.sow('intermediates', f'mix_point_{k}', h.astype(jnp.float32))
  return h


def hidden_mix_point(module: nn.Module, h: jax.Array, k: int, mix: MixFn,
                     one_d: bool = False) -> jax.Array:
  """`mix_point` on an NHWC activation, presented channel-first: (N, C, H, W) or (N, C, W).

  Returns the (possibly mixed) activation in NHWC again. When neither mixing nor sowing uses the
  channel-first copy, XLA removes the transposes.
  """
  cf = nhwc_to_channel_first(h, one_d)
  cf = mix_point(module, cf, k, mix)
  if mix is None:
    return h
  return channel_first_to_nhwc(cf, one_d)


def check_waveform(x: jax.Array, input_length: int, name: str) -> jax.Array:
  """Validates a (N, input_length) float waveform batch; returns it as float32."""
  if x.ndim != 2 or x.shape[1] != input_length:
    raise ValueError(f'models: {name} expects waveforms of shape (N, {input_length}) '
                     f'(samples at its rate), got {tuple(x.shape)}')
  return x.astype(jnp.float32)


def flatten(h: jax.Array) -> jax.Array:
  """(N, ...) -> (N, prod(...))."""
  return h.reshape(h.shape[0], math.prod(h.shape[1:]))
