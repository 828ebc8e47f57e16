"""SoundNet5 (Aytar, Vondrick & Torralba, "SoundNet", NeurIPS 2016: the 5-layer network; docs/method.md §4).

Input: (N, 110250) waveform at 22.05 kHz: 5 s, the clip length SoundNet was evaluated on for
ESC-50 (the BC/InterMix setup does not state it; docs/method.md §4 says to take the published value). With
these paddings and strides it is also the length for which conv5 sees the whole clip: one output
step (a 1.5 s input would leave conv5 no step at all).

    layer   op (NHWC, H = 1)                              output (N, 1, W, C), width 1
    conv1   Conv 32 x 64 stride 2 pad 32; max-pool 8      (N, 1, 6890, 32)    mix point 1
    conv2   Conv 64 x 32 stride 2 pad 16; max-pool 8      (N, 1, 430, 64)     mix point 2
    conv3   Conv 128 x 16 stride 2 pad 8; max-pool 8      (N, 1, 27, 128)     mix point 3
    conv4   Conv 256 x 8 stride 2 pad 4                   (N, 1, 14, 256)
    conv5   Conv 1024 x 16 stride 12 pad 4                (N, 1, 1, 1024)
    head    global average pool over time; Dense classes  logits (N, num_classes)

Conv = conv without bias + BatchNorm + ReLU (SoundNet itself uses BN after every conv); "pad p"
is p zeros on both sides of the time axis, as in SoundNet. Classifier head (docs/method.md §4 leaves it open):
global average pool over the conv5 steps, then one dense layer; there is no hidden dense layer, so
`fc_units` is accepted for a uniform config and ignored. Mix points (K = 4): 0 = the input
waveform (N, T); 1..3 after each pooling stage, presented to `mix` channel-first (N, C, W).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from intermix_jax.models import layers

# (channels, kernel, stride, pad, max-pool after) per layer, SoundNet's 5-layer table.
_LAYERS = ((32, 64, 2, 32, 8), (64, 32, 2, 16, 8), (128, 16, 2, 8, 8), (256, 8, 2, 4, None),
           (1024, 16, 12, 4, None))


class SoundNet5(layers.Backbone):
  """SoundNet5: raw waveform (N, 110250) at 22.05 kHz -> logits (N, num_classes).

  Fields (validated, see `layers.Backbone`): num_classes, width, fc_units (no hidden dense layer:
  accepted and ignored), precision.
  """
  sample_rate = 22050
  input_length = 110250
  num_mix_points = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mix: layers.MixFn = None) -> jax.Array:
    """x: (N, 110250) float32 waveform; train: BN batch statistics; mix: (h, k) -> h."""
    x = layers.check_waveform(x, self.input_length, 'soundnet5')
    x = layers.mix_point(self, x, 0, mix)
    h = layers.waveform_to_nhwc(x)
    dt = layers.compute_dtype(self.precision)
    for i, (channels, kernel, stride, pad, pool) in enumerate(_LAYERS):
      h = layers.ConvBNReLU(layers.scaled(channels, self.width), (1, kernel), (1, stride),
                            ((0, 0), (pad, pad)), dtype=dt,
                            name=f'conv{i + 1}')(h, train)
      if pool is not None:
        h = layers.max_pool(h, (1, pool))
        h = layers.hidden_mix_point(self, h, i + 1, mix, one_d=True)
    h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    return layers.Dense(self.num_classes, dt, float32_output=True, name='fc')(h)
