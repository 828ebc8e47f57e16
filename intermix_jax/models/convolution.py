"""2-D convolutions for the backbones: the plain XLA convolution and equivalent CPU-fast rewrites.

Layout: x is NHWC (N, H, W, C), kernels HWIO (kh, kw, C, O); a waveform is (N, 1, T, C). x and
the kernel share one dtype, float32 or bfloat16 (the model's compute dtype), which the output and
both gradients keep; the FFT weight gradient computes in float32 (jnp.fft has no bfloat16) from the
bfloat16 operands and rounds its result, as a bfloat16 convolution accumulating in float32 does.

`conv2d(x, kernel, strides, padding, impl)` computes the same function for every `impl`:
  'plain'  `lax.conv_general_dilated` exactly as written: the accelerator (GPU/TPU) path, where
           cuDNN / the TPU convolution emitter have fast kernels for every form used here.
  'cpu'    rewrites that avoid slow paths of XLA:CPU (measured on jaxlib 0.10.2, whose convolutions
           run through YNNPACK; `benchmarks/models.py --layers` times each convolution):
    1. padding is applied with `jnp.pad`, so every convolution below is unpadded;
    2. a stride-s convolution along time (kernel height 1) becomes a stride-1 convolution on a
       space-to-depth input (`space_to_depth_conv`): (N, H, W, C) -> (N, H, W/s, s*C), kernel
       (1, kw, C, O) -> (1, ceil(kw/s), s*C, O) with zero taps appended. The gradients of a strided
       convolution are an input-dilated (transposed) and a kernel-dilated convolution, which have
       no fast CPU kernel; after the rewrite they are ordinary convolutions;
    3. an unpadded stride-1 convolution runs with one zero column of padding on the right and the
       extra output column sliced off (`pad_one_and_slice_conv`): XLA:CPU takes a several times
       faster path for padded convolutions, in the forward pass and in the weight gradient;
    4. for convolutions with many taps and channels over long signals (`fft_pays_off`), the weight
       gradient, a correlation of the input with the output gradient at kh x kw lags, is computed
       with FFTs (`fft_weight_gradient`) instead of XLA's convolution with a window as large as
       the signal (a 2-3x slower path on CPU); forward pass and input gradient stay convolutions;
    5. for kernels of 8..128 taps over 1- or 2-channel inputs (`col2im_pays_off`: EnvNet conv1 and
       conv3, EnvNet-v2 conv1 after the fold and conv3), both gradients are those of `im2col_conv`:
       the input gradient is (g @ kernel^T) summed back into the image, not a convolution with 1
       or 2 output channels, and the weight gradient is patches^T @ g in row blocks
       (`im2col_weight_gradient`), not a correlation with a window as large as the signal.
    Every rewrite is tested to equal the plain convolution in value and gradient
    (tests/test_models.py); the FFT gradient agrees to float32 rounding (relative 1e-5).
  'auto'   'cpu' when the default JAX backend is the CPU, else 'plain'.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IMPLS = ('auto', 'plain', 'cpu')
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')

Padding = Tuple[Tuple[int, int], Tuple[int, int]]
_NO_PADDING = ((0, 0), (0, 0))

# When the FFT weight gradient is used. Measured on 2 AMD EPYC cores, batch 32, CPU time of the
# weight gradient alone: EnvNet-v2 conv4 4.4x, EnvNet conv2 ~3x, SoundNet5 conv2 1.8x, EnvNet-v2
# conv2 ~1.3x faster than XLA's; slower with 1-2 input channels or 3 taps.
FFT_MIN_CHANNELS = 8
FFT_MIN_TAPS = 8
FFT_MIN_POSITIONS = 1024
_FFT_BLOCK = 512  # overlap-save block of the 1-D FFT gradient (samples)


def resolve_impl(impl: str) -> str:
  """'auto' -> 'cpu' on the CPU backend, 'plain' elsewhere; validates the name."""
  if impl not in IMPLS:
    raise ValueError(f'models: conv_impl must be one of {IMPLS}, got {impl!r}')
  if impl == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'plain'
  return impl


def _normalise_padding(padding) -> Padding:
  (a, b), (c, d) = padding
  return (int(a), int(b)), (int(c), int(d))


def plain_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
               padding: Padding = _NO_PADDING) -> jax.Array:
  """The reference: `lax.conv_general_dilated`, x (N, H, W, C) * kernel (kh, kw, C, O) -> NHWC.

  Zero padding `((top, bottom), (left, right))`; output (N, (H+pads-kh)//sh + 1, (W+pads-kw)//sw + 1, O).
  """
  return lax.conv_general_dilated(x, kernel, tuple(strides), _normalise_padding(padding),
                                  dimension_numbers=_DIMENSION_NUMBERS)


def space_to_depth_conv(x: jax.Array, kernel: jax.Array, stride: int,
                        conv: Callable[[jax.Array, jax.Array], jax.Array] = plain_conv) -> jax.Array:
  """A stride-`stride` convolution along W (unpadded) as a stride-1 one on a folded input.

  Equals `plain_conv(x, kernel, (1, stride))`.

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

  Equals `plain_conv(x, kernel)`: x (N, H, W, C) -> (N, H - kh + 1, W - kw + 1, O).
  """
  return plain_conv(x, kernel, (1, 1), ((0, 0), (0, 1)))[:, :, :-1, :]


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

  One complex batched matmul over the frequencies (measured faster on CPU than the equivalent real
  matmul on stacked real and imaginary parts, which needs a twice larger operand).
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
  """Whether `conv2d('cpu')` computes the weight gradient by FFT (see the FFT_* thresholds)."""
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
  """An unpadded stride-1 convolution as patches @ kernel: equals `plain_conv(x, kernel)`.

  The patches (N, H', W', kh*kw*C) are kh*kw/O times the output's size: meant for C = 1 or 2.
  """
  kh, kw, c, o = kernel.shape
  return jnp.einsum('nhwk,ko->nhwo', _patches(x, kh, kw), kernel.reshape(kh * kw * c, o))


SPLIT_K_CHUNKS = 8  # row blocks of the im2col weight gradient (>= the cores of a CPU host)


def im2col_weight_gradient(x: jax.Array, g: jax.Array, kernel_hw: Tuple[int, int]) -> jax.Array:
  """dW (kh, kw, C, O) = patches(x)^T @ g, as SPLIT_K_CHUNKS row-block products, then summed.

  x (N, H, W, C), g (N, H - kh + 1, W - kw + 1, O). One (kh*kw*C x M) @ (M x O) product with
  M = N*H'*W' ~ 10^6 rows and a tiny output runs on XLA:CPU at a fraction of the matmul rate; a
  batch of row blocks parallelises (EnvNet at batch 32: conv1 58 -> 20 ms, conv3 75 -> 46 ms).
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
  """Whether `conv2d('cpu')` computes both gradients by im2col (`conv_im2col_gradients`): a kernel
  of 8..128 taps over a 1- or 2-channel input (EnvNet conv1 and conv3, EnvNet-v2 conv1 after the
  space-to-depth fold and conv3). XLA:CPU has no fast kernel for a convolution with 1 or 2 output
  channels, which is what the input gradient of such a convolution is, and its weight gradient
  (a correlation over the whole signal) runs 3-6x slower than `im2col_weight_gradient`."""
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


def _cpu_stride1_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  if fft_pays_off(x.shape, kernel.shape):
    return conv_fft_weight_gradient(x, kernel)
  if col2im_pays_off(x.shape, kernel.shape):
    return conv_im2col_gradients(x, kernel)
  return pad_one_and_slice_conv(x, kernel)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Padding = _NO_PADDING, impl: str = 'plain') -> jax.Array:
  """Zero-padded convolution x (N, H, W, C) * kernel (kh, kw, C, O) -> (N, H', W', O).

  `impl` 'plain' calls `lax.conv_general_dilated`; 'cpu' uses the equivalent rewrites of this
  module's docstring; 'auto' picks by backend. Every impl computes the same function.
  """
  impl = resolve_impl(impl)
  padding = _normalise_padding(padding)
  strides = tuple(int(s) for s in strides)
  if impl == 'plain':
    return plain_conv(x, kernel, strides, padding)
  if padding != _NO_PADDING:
    x = jnp.pad(x, ((0, 0),) + padding + ((0, 0),))
  sh, sw = strides
  if sh == 1 and sw > 1 and kernel.shape[0] == 1:
    return space_to_depth_conv(x, kernel, sw, conv=_cpu_stride1_conv)
  if strides == (1, 1):
    return _cpu_stride1_conv(x, kernel)
  return plain_conv(x, kernel, strides)
