"""Every CPU-only rewrite of the backbones' convolutions and max-pools, in one module.

`layers.conv2d` and `layers.max_pool` call this module's `conv2d` / `max_pool` when `enabled()`:
on the CPU backend (`jax.default_backend() == 'cpu'` when the model is traced), never on GPU/TPU,
where cuDNN and the TPU emitter have fast kernels for the plain `lax.conv_general_dilated` and
`lax.reduce_window`. Each function here computes the same values and gradients as the plain op
(tests/test_models.py and tests/test_precision.py compare them, forcing each path with `force`);
the FFT weight gradient agrees to float32 rounding (relative 1e-5), the rest exactly or to the
rounding of another summation order. So this is never a model option: it is not in a config, in
`config.json` or in a model's fields, and a checkpoint trained on one backend runs on the other.

Choosing the path:
  enabled()            the override if one is set, else whether the default backend is the CPU.
  force(impl)          context manager, tests and benchmarks only: 'plain' (lax ops as written) or
                       'cpu' (these rewrites) whatever the backend, restored on exit.
  set_forced(impl)     the same for the rest of the process (benchmark scripts); None clears it.
The choice is made when a function is TRACED: a jitted function traced under one setting keeps its
program (jit caches traces by function and arguments, not by this setting), so force the path
around the first call (or `.lower`) of a fresh function.

Layout: x is NHWC (N, H, W, C), kernels HWIO (kh, kw, C, O); a waveform is (N, 1, T, C). x and the
kernel share one dtype, float32 or bfloat16 (the model's compute dtype), which the output and both
gradients keep; the FFT weight gradient computes in float32 (jnp.fft has no bfloat16) from the
bfloat16 operands and rounds its result, as a bfloat16 convolution accumulating in float32 does.

The convolution rewrites (`conv2d`), each avoiding a slow path of XLA:CPU (jaxlib 0.10.2, whose
convolutions run through YNNPACK; the measurements behind each choice and the commands that
repeat them are in benchmarks/README.md, "The CPU rewrites and host memory: the numbers"):
  1. padding is applied with `jnp.pad`, so every convolution below is unpadded;
  2. a stride-s convolution along time (kernel height 1) becomes a stride-1 convolution on a
     space-to-depth input (`space_to_depth_conv`): (N, H, W, C) -> (N, H, W/s, s*C), kernel
     (1, kw, C, O) -> (1, ceil(kw/s), s*C, O) with zero taps appended. The gradients of a strided
     convolution are an input-dilated (transposed) and a kernel-dilated convolution, which have
     no fast CPU kernel; after the rewrite they are ordinary convolutions;
  3. an unpadded stride-1 convolution runs with one zero column of padding on the right and the
     extra output column sliced off (`pad_one_and_slice_conv`): XLA:CPU takes a faster path for
     padded convolutions, in the forward pass and in the weight gradient;
  4. for convolutions with many taps and channels over long signals (`fft_pays_off`), the weight
     gradient, a correlation of the input with the output gradient at kh x kw lags, is computed
     with FFTs (`fft_weight_gradient`) instead of XLA's convolution with a window as large as
     the signal; forward pass and input gradient stay convolutions;
  5. for kernels of 8..128 taps over 1- or 2-channel inputs (`col2im_pays_off`: EnvNet conv1 and
     conv3, EnvNet-v2 conv1 after the fold and conv3), both gradients are those of `im2col_conv`:
     the input gradient is (g @ kernel^T) summed back into the image, not a convolution with 1
     or 2 output channels, and the weight gradient is patches^T @ g in row blocks
     (`im2col_weight_gradient`), not a correlation with a window as large as the signal.
The max-pool rewrite (`max_pool`): a pool whose stride equals its window is a reshape and a max
along the window axes with a saved argmax (`max_along`, whose gradient is a scatter to the saved
positions) instead of `reduce_window`, whose gradient (select-and-scatter) is slow on CPU. Both
send a window's gradient to its first maximal element, so values and gradients are identical.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ['enabled', 'force', 'set_forced', 'IMPLS', 'conv2d', 'max_pool', 'max_along',
           'space_to_depth_conv', 'pad_one_and_slice_conv', 'fft_weight_gradient', 'fft_pays_off',
           'im2col_conv', 'im2col_weight_gradient', 'col2im_pays_off']

IMPLS = ('plain', 'cpu')  # what `force` and `set_forced` accept
_forced: Optional[str] = None

Padding = Tuple[Tuple[int, int], Tuple[int, int]]
_NO_PADDING = ((0, 0), (0, 0))
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')

# When the FFT weight gradient is used (benchmarks/README.md gives the measured speed-ups): at
# least this many input channels and kernel taps, and output positions per example.
FFT_MIN_CHANNELS = 8
FFT_MIN_TAPS = 8
FFT_MIN_POSITIONS = 1024
_FFT_BLOCK = 512  # overlap-save block of the 1-D FFT gradient (samples)


# --- which path --------------------------------------------------------------------------------

def _check_impl(impl, allow_none: bool) -> None:
  if impl is None and allow_none:
    return
  if impl not in IMPLS:
    valid = list(IMPLS) + ([None] if allow_none else [])
    raise ValueError(f'cpu_ops: impl must be one of {valid}, got {impl!r}')


def enabled() -> bool:
  """Whether `layers.conv2d` / `layers.max_pool` use this module's rewrites when traced now:
  the forced path if one is set (`force`, `set_forced`), else `jax.default_backend() == 'cpu'`."""
  if _forced is not None:
    return _forced == 'cpu'
  return jax.default_backend() == 'cpu'


def set_forced(impl: Optional[str]) -> Optional[str]:
  """Forces 'plain' or 'cpu' for the rest of the process (None: by backend again); returns the
  previous setting. For benchmark scripts; tests use the `force` context manager."""
  global _forced
  _check_impl(impl, allow_none=True)
  previous, _forced = _forced, impl
  return previous


@contextlib.contextmanager
def force(impl: str) -> Iterator[None]:
  """Within the block, trace 'plain' (lax ops as written) or 'cpu' (these rewrites) on any backend.

  Test and benchmark use only (e.g. to check that both paths agree, or to count the accelerator's
  FLOPs on a CPU host). The previous setting is restored on exit.
  """
  _check_impl(impl, allow_none=False)
  previous = set_forced(impl)
  try:
    yield
  finally:
    set_forced(previous)


# --- convolutions ------------------------------------------------------------------------------

def _xla_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
              padding: Padding = _NO_PADDING) -> jax.Array:
  """`lax.conv_general_dilated` in NHWC / HWIO (the plain convolution, as `layers.plain_conv`)."""
  return lax.conv_general_dilated(x, kernel, tuple(strides), padding,
                                  dimension_numbers=_DIMENSION_NUMBERS)


def space_to_depth_conv(x: jax.Array, kernel: jax.Array, stride: int,
                        conv: Callable[[jax.Array, jax.Array], jax.Array] = _xla_conv) -> jax.Array:
  """A stride-`stride` convolution along W (unpadded) as a stride-1 one on a folded input.

  Equals the plain `lax.conv_general_dilated` with strides (1, stride).

  Args:
    x: (N, H, W, C).
    kernel: (kh, kw, C, O).
    stride: the W stride s >= 1 (the H stride is 1).
    conv: the unpadded stride-1 convolution to call, `conv(x, kernel)`.
  Returns:
    (N, H - kh + 1, (W - kw) // s + 1, O).
  """
  n, h, w, c = x.shape
  kh, kw, kc, o = kernel.shape
  if kc != c:
    raise ValueError(f'models: kernel expects {kc} input channels, the input has {c}')
  w_out = (w - kw) // stride + 1
  if w_out < 1:
    raise ValueError(f'models: input width {w} is shorter than the kernel width {kw}')
  taps = -(-kw // stride)  # ceil
  kw_padded = taps * stride
  length = (w_out - 1) * stride + kw_padded
  # Samples past (w_out - 1) * s + kw only meet the appended zero taps, so zero-padding is exact.
  if length <= w:
    x = x[:, :, :length, :]
  else:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, length - w), (0, 0)))
  x = x.reshape(n, h, length // stride, stride * c)
  kernel = jnp.pad(kernel, ((0, 0), (0, kw_padded - kw), (0, 0), (0, 0)))
  kernel = kernel.reshape(kh, taps, stride * c, o)  # [.., j, phase * C + c, ..] = k[.., j*s + phase, c, ..]
  return conv(x, kernel)


def pad_one_and_slice_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """An unpadded stride-1 convolution computed with one zero column on the right, then sliced.

  Equals the plain unpadded convolution: x (N, H, W, C) -> (N, H - kh + 1, W - kw + 1, O).
  """
  return _xla_conv(x, kernel, (1, 1), ((0, 0), (0, 1)))[:, :, :-1, :]


# --- FFT weight gradient ----------------------------------------------------------------------

def _fft_size(n: int) -> int:
  """Smallest 2^a 3^b 5^c >= n (a fast FFT length)."""
  best = 1 << max(0, (n - 1).bit_length())
  p5 = 1
  while p5 < best:
    p35 = p5
    while p35 < best:
      p = p35
      while p < n:
        p *= 2
      best = min(best, p)
      p35 *= 3
    p5 *= 5
  return best


def _inverse_dft_rows(lags: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Real inverse DFT from a half spectrum, restricted to lags 0..lags-1: (cos, sin) (lags, size//2+1).

  x[t] = sum_f (cos[t, f] Re X[f] - sin[t, f] Im X[f]) for a real signal of length `size`.
  """
  f = size // 2 + 1
  weight = np.full(f, 2.0)
  weight[0] = 1.0
  if size % 2 == 0:
    weight[-1] = 1.0
  angle = 2.0 * np.pi * np.outer(np.arange(lags), np.arange(f)) / size
  return ((np.cos(angle) * weight / size).astype(np.float32),
          (np.sin(angle) * weight / size).astype(np.float32))


def _cross_spectrum(xf: jax.Array, gf: jax.Array) -> jax.Array:
  """sum_m X[m, f, c] conj(G[m, f, o]): complex xf (M, F, C), gf (M, F, O) -> (F, C, O).

  One complex batched matmul over the frequencies (on CPU it beat the equivalent real matmul on
  stacked real and imaginary parts, which needs a twice larger operand).
  """
  return jnp.einsum('mfc,mfo->fco', xf, jnp.conj(gf))


def _fft_weight_gradient_1d(x: jax.Array, g: jax.Array, taps: int) -> jax.Array:
  """dW (taps, C, O) = sum_{n, t} x[n, t + j] g[n, t], x (N, L, C), g (N, L - taps + 1, O).

  Overlap-save: the outputs are cut into blocks of B = P - taps + 1 steps, each correlated with its
  P-sample input segment by size-P FFTs (no wrap-around reaches lags < taps).
  """
  n, length, c = x.shape
  o = g.shape[-1]
  out = length - taps + 1
  p = _FFT_BLOCK
  while p < 4 * taps:
    p *= 2
  block = p - taps + 1
  nb = -(-out // block)
  x = jnp.pad(x, ((0, 0), (0, (nb + 1) * block - length), (0, 0))).reshape(n, nb + 1, block, c)
  segments = jnp.concatenate([x[:, :nb], x[:, 1:, :taps - 1]], axis=2)             # (N, nb, P, C)
  g = jnp.pad(g, ((0, 0), (0, nb * block - out), (0, 0))).reshape(n, nb, block, o)
  xf = jnp.fft.rfft(segments, n=p, axis=2).reshape(n * nb, p // 2 + 1, c)
  gf = jnp.fft.rfft(g, n=p, axis=2).reshape(n * nb, p // 2 + 1, o)
  d = _cross_spectrum(xf, gf)                                                      # (F, C, O)
  re, im = jnp.real(d), jnp.imag(d)
  cos, sin = _inverse_dft_rows(taps, p)
  return (jnp.einsum('tf,fco->tco', cos, re)
          - jnp.einsum('tf,fco->tco', sin, im))


def _fft_weight_gradient_2d(x: jax.Array, g: jax.Array, kh: int, kw: int) -> jax.Array:
  """dW (kh, kw, C, O) by whole-map 2-D FFTs: x (N, H, W, C), g (N, H - kh + 1, W - kw + 1, O)."""
  n, h, w, c = x.shape
  o = g.shape[-1]
  hp, wp = _fft_size(h), _fft_size(w)
  # Zero-padding both to (hp, wp) >= (H, W): circular correlation equals the linear one at lags
  # below the kernel size (t + lag <= H - 1 < hp).
  xf = jnp.fft.rfftn(x, s=(hp, wp), axes=(1, 2))
  gf = jnp.fft.rfftn(g, s=(hp, wp), axes=(1, 2))
  wf = wp // 2 + 1
  d = _cross_spectrum(xf.reshape(n, hp * wf, c), gf.reshape(n, hp * wf, o)).reshape(hp, wf, c, o)
  rows = np.exp(2j * np.pi * np.outer(np.arange(kh), np.arange(hp)) / hp).astype(np.complex64)
  d = jnp.einsum('ih,hwco->iwco', rows, d)       # lags along H
  cos, sin = _inverse_dft_rows(kw, wp)
  cos, sin = cos / hp, sin / hp
  return (jnp.einsum('jw,iwco->ijco', cos, jnp.real(d))
          - jnp.einsum('jw,iwco->ijco', sin, jnp.imag(d)))


def fft_weight_gradient(x: jax.Array, g: jax.Array, kernel_hw: Tuple[int, int]) -> jax.Array:
  """Weight gradient of an unpadded stride-1 convolution, by FFT correlation.

  Args:
    x: the convolution's input (N, H, W, C).
    g: the gradient of its output (N, H - kh + 1, W - kw + 1, O).
    kernel_hw: (kh, kw).
  Returns:
    dW (kh, kw, C, O) = sum_{n, h, w} x[n, h + i, w + j, c] g[n, h, w, o], float32 (bfloat16
    operands are widened first: jnp.fft computes in float32 at least).
  """
  kh, kw = kernel_hw
  widen = lambda a: a.astype(jnp.promote_types(a.dtype, jnp.float32))
  x, g = widen(x), widen(g)
  if x.shape[1] == 1 and kh == 1:
    return _fft_weight_gradient_1d(x[:, 0], g[:, 0], kw)[None]
  return _fft_weight_gradient_2d(x, g, kh, kw)


def fft_pays_off(x_shape: Sequence[int], kernel_shape: Sequence[int]) -> bool:
  """Whether `conv2d` computes the weight gradient by FFT (see the FFT_* thresholds)."""
  _, h, w, c = x_shape
  kh, kw = kernel_shape[:2]
  return (c >= FFT_MIN_CHANNELS and kh * kw >= FFT_MIN_TAPS
          and (h - kh + 1) * (w - kw + 1) >= FFT_MIN_POSITIONS)


@jax.custom_vjp
def conv_fft_weight_gradient(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`pad_one_and_slice_conv` whose kernel gradient is `fft_weight_gradient` (same values)."""
  return pad_one_and_slice_conv(x, kernel)


def _conv_fft_fwd(x, kernel):
  return pad_one_and_slice_conv(x, kernel), (x, kernel)


def _conv_fft_bwd(residuals, g):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: pad_one_and_slice_conv(x, kernel), x)
  (dx,) = input_vjp(g)
  dw = fft_weight_gradient(x, g, kernel.shape[:2]).astype(kernel.dtype)
  return dx, dw


conv_fft_weight_gradient.defvjp(_conv_fft_fwd, _conv_fft_bwd)


# --- few-channel inputs: gradients by im2col ---------------------------------------------------

def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """(N, H, W, C) -> patches (N, H', W', kh*kw*C), [.., (i*kw + j)*C + c] = x[.., h+i, w+j, c]."""
  n, h, w, c = x.shape
  ho, wo = h - kh + 1, w - kw + 1
  patches = jnp.stack([x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)], axis=3)
  return patches.reshape(n, ho, wo, kh * kw * c)


def im2col_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """An unpadded stride-1 convolution as patches @ kernel: equals the plain unpadded convolution.

  The patches (N, H', W', kh*kw*C) are kh*kw/O times the output's size: meant for C = 1 or 2.
  """
  kh, kw, c, o = kernel.shape
  return jnp.einsum('nhwk,ko->nhwo', _patches(x, kh, kw), kernel.reshape(kh * kw * c, o))


SPLIT_K_CHUNKS = 8  # row blocks of the im2col weight gradient (>= the cores of a CPU host)


def im2col_weight_gradient(x: jax.Array, g: jax.Array, kernel_hw: Tuple[int, int]) -> jax.Array:
  """dW (kh, kw, C, O) = patches(x)^T @ g, as SPLIT_K_CHUNKS row-block products, then summed.

  x (N, H, W, C), g (N, H - kh + 1, W - kw + 1, O). One (kh*kw*C x M) @ (M x O) product with
  M = N*H'*W' ~ 10^6 rows and a tiny output runs on XLA:CPU at a fraction of the matmul rate; a
  batch of row blocks parallelises (timings in benchmarks/README.md).
  Zero rows pad M to a multiple of the block count (they add nothing).
  """
  kh, kw = kernel_hw
  c, o = x.shape[-1], g.shape[-1]
  patches = _patches(x, kh, kw).reshape(-1, kh * kw * c)
  g = g.reshape(-1, o)
  rows = patches.shape[0]
  chunks = max(1, min(SPLIT_K_CHUNKS, rows))
  block = -(-rows // chunks)
  pad = ((0, chunks * block - rows), (0, 0))
  patches = jnp.pad(patches, pad).reshape(chunks, block, kh * kw * c)
  g = jnp.pad(g, pad).reshape(chunks, block, o)
  dw = jnp.einsum('bmk,bmo->bko', patches, g, preferred_element_type=jnp.float32).sum(0)
  return dw.reshape(kh, kw, c, o)


COL2IM_MAX_TAPS = 128  # im2col builds one slice per tap: more would mostly cost compile time


def col2im_pays_off(x_shape: Sequence[int], kernel_shape: Sequence[int]) -> bool:
  """Whether `conv2d` computes both gradients by im2col (`conv_im2col_gradients`): a kernel
  of 8..128 taps over a 1- or 2-channel input (EnvNet conv1 and conv3, EnvNet-v2 conv1 after the
  space-to-depth fold and conv3). XLA:CPU has no fast kernel for a convolution with 1 or 2 output
  channels, which is what the input gradient of such a convolution is, and its weight gradient
  (a correlation over the whole signal) is slower than `im2col_weight_gradient`."""
  kh, kw, c = kernel_shape[:3]
  return c <= 2 and 8 <= kh * kw <= COL2IM_MAX_TAPS


@jax.custom_vjp
def conv_im2col_gradients(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`pad_one_and_slice_conv` whose gradients are those of `im2col_conv` (same values): dx is
  g @ kernel^T summed back into the image, dW is `im2col_weight_gradient`."""
  return pad_one_and_slice_conv(x, kernel)


def _conv_im2col_fwd(x, kernel):
  return pad_one_and_slice_conv(x, kernel), (x, kernel)


def _conv_im2col_bwd(residuals, g):
  x, kernel = residuals
  (dx,) = jax.vjp(lambda x: im2col_conv(x, kernel), x)[1](g)      # (g @ kernel^T), summed back
  dw = im2col_weight_gradient(x, g, kernel.shape[:2]).astype(kernel.dtype)
  return dx, dw


conv_im2col_gradients.defvjp(_conv_im2col_fwd, _conv_im2col_bwd)


def _stride1_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  if fft_pays_off(x.shape, kernel.shape):
    return conv_fft_weight_gradient(x, kernel)
  if col2im_pays_off(x.shape, kernel.shape):
    return conv_im2col_gradients(x, kernel)
  return pad_one_and_slice_conv(x, kernel)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Tuple[int, int] = (1, 1),
           padding: Padding = _NO_PADDING) -> jax.Array:
  """The CPU form of `layers.conv2d`: x (N, H, W, C) * kernel (kh, kw, C, O) -> (N, H', W', O).

  strides (sh, sw) and zero padding ((top, bottom), (left, right)); the rewrites of the
  module docstring (a 2-D strided convolution, which no backbone has, stays the plain one).
  """
  (top, bottom), (left, right) = padding
  padding = (int(top), int(bottom)), (int(left), int(right))
  strides = tuple(int(s) for s in strides)
  if padding != _NO_PADDING:
    x = jnp.pad(x, ((0, 0),) + padding + ((0, 0),))
  sh, sw = strides
  if sh == 1 and sw > 1 and kernel.shape[0] == 1:
    return space_to_depth_conv(x, kernel, sw, conv=_stride1_conv)
  if strides == (1, 1):
    return _stride1_conv(x, kernel)
  return _xla_conv(x, kernel, strides)


# --- max-pooling -------------------------------------------------------------------------------

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
  the variadic (value, index) reduction of `jnp.argmax` does not (timings in benchmarks/README.md).
  XLA may recompute x's producer (BatchNorm + ReLU) inside each reduction; if
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
  # layer's input gradient -- into it and recomputes it once per window element, several times
  # slower (benchmarks/README.md); an optimization_barrier does not stop that fusion on CPU.)
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



def max_pool(x: jax.Array, window: Tuple[int, int]) -> jax.Array:
  """The CPU form of `layers.max_pool` for stride == window: x (N, H, W, C) ->
  (N, H // wh, W // ww, C) (a partial window at the end is dropped).

  Reshapes and takes the max along the window axes with `max_along` (width first, then height),
  whose gradient goes to the first maximum of each window in row-major order, the element
  `reduce_window`'s select-and-scatter picks: values and gradients equal the plain ones.
  """
  wh, ww = window
  n, h, w, c = x.shape
  ho, wo = h // wh, w // ww
  x = x[:, :ho * wh, :wo * ww, :].reshape(n, ho, wh, wo, ww, c)
  x = max_along(x, 4) if ww > 1 else x[:, :, :, :, 0]      # (N, ho, wh, wo, C)
  return max_along(x, 2) if wh > 1 else x[:, :, 0]         # (N, ho, wo, C)
