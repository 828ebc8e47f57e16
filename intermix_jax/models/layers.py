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

Convolutions go through `convolution.conv2d` with the model's `conv_impl` ('auto' | 'plain' | 'cpu',
see intermix_jax/models/convolution.py: 'plain' is `lax.conv_general_dilated` as written, 'cpu' are
equivalent rewrites that are fast on XLA:CPU, 'auto' picks 'cpu' on the CPU backend).
Pooling follows the same switch: with 'cpu', a max-pool whose stride equals its window is a reshape
and a max with a saved argmax (`max_along`: the gradient is an elementwise select) instead of
`reduce_window`, whose gradient (select-and-scatter) is slow on CPU. Both send a window's gradient
to its first maximal element, so values and gradients are identical.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from intermix_jax.models.convolution import IMPLS, Padding, conv2d, resolve_impl  # noqa: F401

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


MAX_FLAT_INDEX = 2**31 - 1  # max_along's gradient scatters by flat int32 index up to this size


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_along(x: jax.Array, axis: int) -> jax.Array:
  """max over `axis`, whose gradient goes to the first maximal element only.

  The index of the maximum is saved in the forward pass, so the backward pass never compares
  recomputed values (an `x == max(x)` mask can miss when XLA recomputes x inside another fusion
  with different rounding, and it splits the gradient among ties).
  """
  return jnp.max(x, axis=axis)


def _first_max_index(x: jax.Array, axis: int) -> Tuple[jax.Array, jax.Array]:
  """(max, index of its first occurrence) along `axis`, exactly as `jnp.argmax` picks it.

  Two plain reductions (the max, then the smallest position holding it) vectorise on XLA:CPU, where
  the variadic (value, index) reduction of `jnp.argmax` does not (EnvNet's (1, 160) pool at batch
  32: 32 ms vs 71 ms). XLA may recompute x's producer (BatchNorm + ReLU) inside each reduction; if
  that ever rounded differently, no position would hold the max: that case is detected and
  recomputed with `jnp.argmax` (under `lax.cond`, so it costs nothing when it does not happen).
  """
  m = jnp.max(x, axis=axis)
  positions = lax.broadcasted_iota(jnp.int32, x.shape, axis)
  size = x.shape[axis]
  index = jnp.min(jnp.where(x == jnp.expand_dims(m, axis), positions, size), axis=axis)
  index = lax.cond(jnp.any(index == size), lambda: jnp.argmax(x, axis=axis).astype(jnp.int32),
                   lambda: index)
  return m, index


def _max_along_fwd(x, axis):
  m, index = _first_max_index(x, axis % x.ndim)
  return m, (index, x.shape)


def _max_along_bwd(axis, residuals, g):
  # A scatter of g to the saved positions, addressed by flat indices. (A select against g broadcast
  # over the window would be cheaper alone, but XLA:CPU then fuses g's producer -- e.g. the next
  # layer's input gradient -- into it and recomputes it once per window element: 7 s per EnvNet step
  # at batch 32; an optimization_barrier does not stop that fusion on CPU.)
  index, shape = residuals
  axis = axis % len(shape)
  if math.prod(shape) > MAX_FLAT_INDEX:  # flat int32 indices would overflow
    return (jnp.put_along_axis(jnp.zeros(shape, g.dtype), jnp.expand_dims(index, axis),
                               jnp.expand_dims(g, axis), axis, inplace=False),)
  strides = [math.prod(shape[d + 1:]) for d in range(len(shape))]
  flat = index * strides[axis]
  for d in range(len(shape)):
    if d != axis:
      flat = flat + lax.broadcasted_iota(jnp.int32, index.shape, d - (d > axis)) * strides[d]
  dx = jnp.zeros(math.prod(shape), g.dtype).at[flat.reshape(-1)].set(
      g.reshape(-1), unique_indices=True, mode='promise_in_bounds')
  return (dx.reshape(shape),)


max_along.defvjp(_max_along_fwd, _max_along_bwd)


def max_pool(x: jax.Array, window: Sequence[int], strides: Optional[Sequence[int]] = None,
             impl: str = 'plain') -> jax.Array:
  """Max-pool x (N, H, W, C) without padding (floor: a partial window at the end is dropped).

  Args:
    window: (wh, ww).
    strides: (sh, sw); default = window.
    impl: 'plain' uses `lax.reduce_window` (gradient: select-and-scatter, to the first maximum of
      each window in row-major order); 'cpu', when strides == window, reshapes and takes the max
      along the window axes with `max_along` (width first, then height), whose gradient goes to the
      same element: values and gradients equal the plain ones.
  Returns:
    (N, (H - wh) // sh + 1, (W - ww) // sw + 1, C).
  """
  window = tuple(int(v) for v in window)
  strides = window if strides is None else tuple(int(v) for v in strides)
  n, h, w, c = x.shape
  ho, wo = (h - window[0]) // strides[0] + 1, (w - window[1]) // strides[1] + 1
  if ho < 1 or wo < 1:
    raise ValueError(f'models: cannot max-pool a {h}x{w} map with a {window[0]}x{window[1]} window')
  if resolve_impl(impl) == 'cpu' and strides == window:
    wh, ww = window
    x = x[:, :ho * wh, :wo * ww, :].reshape(n, ho, wh, wo, ww, c)
    x = max_along(x, 4) if ww > 1 else x[:, :, :, :, 0]      # (N, ho, wh, wo, C)
    return max_along(x, 2) if wh > 1 else x[:, :, 0]         # (N, ho, wo, C)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1,) + window + (1,), (1,) + strides + (1,),
                           'VALID')


def scaled(channels: int, width: float) -> int:
  """Channel count scaled by the width multiplier (rounded, at least 1)."""
  return max(1, int(round(channels * width)))


class Conv(nn.Module):
  """Bias-free convolution with a He-normal float32 kernel `kernel` (kh, kw, C_in, features).

  `dtype` is the compute dtype: input and kernel are cast to it and the output has it.
  """
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  padding: Padding = ((0, 0), (0, 0))
  impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x (N, H, W, C_in) -> (N, H', W', features) in `dtype`."""
    kernel = self.param('kernel', he_normal,
                        tuple(self.kernel_size) + (x.shape[-1], self.features), jnp.float32)
    return conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, self.padding,
                  self.impl)


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
  impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x (N, H, W, C_in) -> (N, H', W', features) in `dtype`, non-negative."""
    h = Conv(self.features, self.kernel_size, self.strides, self.padding, self.impl, self.dtype,
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
  `mix` changes the shape.

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
    if mixed.shape != h.shape:
      raise ValueError(f'models: mix(h, {k}) must keep the shape {h.shape}, returned {mixed.shape}')
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
