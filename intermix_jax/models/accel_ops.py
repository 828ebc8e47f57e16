"""Alternative forms of EnvNet-v2's forward pass for GPU/TPU, in one module (issue 28 item 2).

Each variant computes the SAME function of the SAME parameters as today's path ('plain'): the
parameter tree (names, shapes, float32) is identical, so checkpoints are interchangeable, and
outputs and gradients agree to float32 rounding (another summation order of the same products;
zero taps added by a rewrite contribute exact zeros). tests/test_accel_ops.py compares each
variant with 'plain' in train mode, with BatchNorm and a mix at every mix point. Like `cpu_ops`
this is never a model option: not in a config, `config.json` or a model's fields.

Choosing the variant (read when the model is TRACED, as `cpu_ops`):
  variant()            the forced one if set, else DEFAULTS[jax.default_backend()], else 'plain'.
  force(name)          context manager, tests and benchmarks only; restored on exit.
  set_forced(name)     the same for the rest of the process (benchmark scripts); None clears it.
DEFAULTS is empty: every backend runs 'plain' until a window's A/B (`python -m
benchmarks.envnet_ab`) measures a faster variant on that platform; then it becomes that
backend's entry here, by measurement (benchmarks/README.md "EnvNet-v2 forward-pass variants").
A jitted function keeps the program of its first trace: force the variant around the first call
(or `.lower`) of a fresh function.

The variants (only EnvNet-v2 reads them; `VARIANTS`):
  plain        today's path: conv1, conv2 and the (1,64) pool as 2-D NHWC ops on (N, 1, T, C).
  conv1d       the front end as true 1-D ops on (N, T, C): `conv1d` ('NWC'/'WIO'/'NWC'
               dimension numbers, the kernel's unit height dropped) and `max_pool1d`; the swap of
               channels and height becomes (N, W, C) -> (N, C, W)[..., None].
  conv1d_rows  conv1d, and conv3 (8x8 kernel over a ONE-channel map after the swap) as a (1,8)
               convolution over its 8 shifted rows stacked as channels (`rows_conv`): 8 input
               channels instead of 1 (a convolution with one input channel is memory-bound).
  blocked      conv1d_rows, and the two one-/few-channel convolutions also blocked along time
               (`blocked_conv1d`, polyphase): conv1 (1 channel, 64 taps, stride 2) becomes a
               stride-1 convolution over blocks of 2F samples (F = CONV1_BLOCK) with ceil((2F +
               62) / 2F) taps, 2F input and F*32 output channels; conv3's stacked rows the same
               with F = CONV3_BLOCK. Zero taps make its FLOPs ~1.5x conv1's, in a shape with
               enough channels for tensor cores.
On the CPU backend (`cpu_ops.enabled()`) `conv1d` and `max_pool1d` call the CPU rewrites on a
unit-height view, so a variant forced on CPU still trains at the CPU path's speed.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from intermix_jax.models import cpu_ops

__all__ = ['VARIANTS', 'DEFAULTS', 'variant', 'force', 'set_forced', 'conv1d', 'max_pool1d',
           'rows_conv', 'blocked_conv1d']

VARIANTS = ('plain', 'conv1d', 'conv1d_rows', 'blocked')
# backend -> variant, entered only from a measured A/B (benchmarks/README.md); none yet.
DEFAULTS: dict = {}
CONV1_BLOCK = 16   # output steps per block of conv1 in 'blocked' (32 samples: 3 taps, 32 -> 512 ch)
CONV3_BLOCK = 8    # output steps per block of conv3's stacked rows (8 steps: 2 taps, 64 -> 256 ch)

_forced: Optional[str] = None


def _check(name, allow_none: bool) -> None:
  if name is None and allow_none:
    return
  if name not in VARIANTS:
    valid = list(VARIANTS) + ([None] if allow_none else [])
    raise ValueError(f'accel_ops: variant must be one of {valid}, got {name!r}')


def variant() -> str:
  """The variant EnvNet-v2 traces now: the forced one, else this backend's DEFAULTS entry, else
  'plain'."""
  if _forced is not None:
    return _forced
  return DEFAULTS.get(jax.default_backend(), 'plain')


def set_forced(name: Optional[str]) -> Optional[str]:
  """Forces a variant for the rest of the process (None: by backend again); returns the previous."""
  global _forced
  _check(name, allow_none=True)
  previous, _forced = _forced, name
  return previous


@contextlib.contextmanager
def force(name: str) -> Iterator[None]:
  """Within the block, trace variant `name` on any backend (tests and benchmarks only)."""
  _check(name, allow_none=False)
  previous = set_forced(name)
  try:
    yield
  finally:
    set_forced(previous)


# --- 1-D front end -----------------------------------------------------------------------------

def conv1d(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """Unpadded 1-D convolution x (N, W, C) * kernel (1, kw, C, O) (the 2-D module's HWIO kernel,
  unit height) with stride `stride` -> (N, (W - kw) // stride + 1, O); equals the 2-D convolution
  of x[:, None] with a unit-height kernel, [:, 0]."""
  if kernel.shape[0] != 1:
    raise ValueError(f'accel_ops: conv1d needs a kernel of height 1, got {kernel.shape}')
  if cpu_ops.enabled():
    return cpu_ops.conv2d(x[:, None], kernel, (1, stride))[:, 0]
  return lax.conv_general_dilated(x, kernel[0], (int(stride),), ((0, 0),),
                                  dimension_numbers=('NWC', 'WIO', 'NWC'))


def max_pool1d(x: jax.Array, window: int) -> jax.Array:
  """Max-pool x (N, W, C) with stride = window, no padding -> (N, W // window, C); the first
  maximum of a window takes its gradient, as `layers.max_pool`."""
  if cpu_ops.enabled():
    return cpu_ops.max_pool(x[:, None], (1, window))[:, 0]
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, 1), (1, window, 1), 'VALID')


# --- few-channel convolutions as convolutions with more channels -------------------------------

def stack_rows(x: jax.Array, kh: int) -> jax.Array:
  """x (N, H, W, 1) -> (N, H - kh + 1, W, kh): channel i holds row h + i."""
  ho = x.shape[1] - kh + 1
  return jnp.concatenate([x[:, i:i + ho] for i in range(kh)], axis=-1)


def rows_kernel(kernel: jax.Array) -> jax.Array:
  """kernel (kh, kw, 1, O) -> (1, kw, kh, O), the kernel of `stack_rows`' output."""
  kh, kw, c, o = kernel.shape
  assert c == 1, kernel.shape
  return jnp.transpose(kernel[:, :, 0, :], (1, 0, 2))[None]


def blocked_kernel(kernel: jax.Array, stride: int, block: int) -> jax.Array:
  """kernel (kw, C, O) -> (Q, B*C, F*O), B = stride * F, Q = ceil((stride (F-1) + kw) / B):
  K'[q, b*C + c, f*O + o] = kernel[q*B + b - stride*f, c, o], zero outside 0..kw-1."""
  kw, c, o = kernel.shape
  f = block
  b = stride * f
  q = -(-(stride * (f - 1) + kw) // b)
  tap = (np.arange(q)[:, None, None] * b + np.arange(b)[None, :, None]
         - stride * np.arange(f)[None, None, :])                         # (Q, B, F)
  valid = (tap >= 0) & (tap < kw)
  k = jnp.where(jnp.asarray(valid)[..., None, None],
                kernel[jnp.asarray(np.clip(tap, 0, kw - 1))], 0)          # (Q, B, F, C, O)
  return jnp.transpose(k, (0, 1, 3, 2, 4)).reshape(q, b * c, f * o)


def blocked_conv1d(x: jax.Array, kernel: jax.Array, stride: int, block: int) -> jax.Array:
  """Unpadded strided 1-D convolution x (N, W, C) * kernel (kw, C, O) -> (N, (W - kw)//s + 1, O),
  computed as a stride-1 convolution over blocks of B = s*F samples (F = `block` outputs per
  block): input (N, U + Q - 1, B*C), kernel `blocked_kernel` (Q, B*C, F*O), output (N, U, F*O)
  read as (N, U*F, O) and cut to length. Samples past the last one the plain convolution reads
  only meet zero taps (or are zero padding), so the values are the plain ones."""
  n, w, c = x.shape
  kw, _, o = kernel.shape
  w_out = (w - kw) // stride + 1
  kb = blocked_kernel(kernel, stride, block)
  q, bc, _ = kb.shape
  b = bc // c
  u = -(-w_out // block)
  length = (u + q - 1) * b
  x = x[:, :length] if length <= w else jnp.pad(x, ((0, 0), (0, length - w), (0, 0)))
  x = x.reshape(n, u + q - 1, b * c)
  y = lax.conv_general_dilated(x, kb, (1,), ((0, 0),), dimension_numbers=('NWC', 'WIO', 'NWC'))
  return y.reshape(n, u * block, o)[:, :w_out]


def rows_conv(x: jax.Array, kernel: jax.Array, block: Optional[int] = None) -> jax.Array:
  """Unpadded stride-1 convolution x (N, H, W, 1) * kernel (kh, kw, 1, O) -> (N, H-kh+1, W-kw+1,
  O), as a (1, kw) convolution over the kh stacked rows (`stack_rows`, `rows_kernel`); with
  `block`, that convolution blocked along W (`blocked_conv1d`, rows folded into the batch)."""
  kh, kw, _, o = kernel.shape
  xs = stack_rows(x, kh)                                                  # (N, Ho, W, kh)
  k = rows_kernel(kernel)                                                 # (1, kw, kh, O)
  if block is None:
    if cpu_ops.enabled():
      return cpu_ops.conv2d(xs, k)
    return lax.conv_general_dilated(xs, k, (1, 1), ((0, 0), (0, 0)),
                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  n, ho, w, _ = xs.shape
  y = blocked_conv1d(xs.reshape(n * ho, w, kh), k[0], 1, block)
  return y.reshape(n, ho, y.shape[1], o)
