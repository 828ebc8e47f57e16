"""M18 (Dai, Dai, Qu, Li & Das, "Very deep convolutional neural networks for raw waveforms",
ICASSP 2017; docs/method.md §4): 17 convolutions and one dense layer on the raw waveform.

Input: (N, 32000) waveform at 8 kHz: 4 s, the published model's input (the BC/InterMix setup does
not state it; docs/method.md §4 says to take the published value).

    layer          op (NHWC, H = 1)                              output (N, 1, W, C), width 1
    conv1          Conv 64 x 80 stride 4; max-pool 4             (N, 1, 1995, 64)   mix point 1
    conv2-conv5    4 x Conv 64 x 3; max-pool 4                   (N, 1, 496, 64)    mix point 2
    conv6-conv9    4 x Conv 128 x 3; max-pool 4                  (N, 1, 122, 128)   mix point 3
    conv10-conv13  4 x Conv 256 x 3; max-pool 4                  (N, 1, 28, 256)    mix point 4
    conv14-conv17  4 x Conv 512 x 3                              (N, 1, 20, 512)
                   global average pool over time                 (N, 512)
    fc18           Dense num_classes                             logits (N, num_classes)

Conv = conv without bias + BatchNorm + ReLU, 'VALID' padding as every backbone of docs/method.md §4 (the
published Keras model pads 'same', which gives 2000/500/125/31 instead of 1995/496/122/28 steps;
the global average pool makes the classifier independent of that length). M18 has no hidden dense
layer: `fc_units` is accepted for a uniform config and ignored. Mix points (K = 5): 0 = the input
waveform (N, T); 1..4 after each pooling stage, presented to `mix` channel-first (N, C, W),
e.g. (N, 64, 1995) at point 1.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from intermix_jax.models import layers


class M18(layers.Backbone):
  """M18: raw waveform (N, 32000) at 8 kHz -> logits (N, num_classes).

  Fields (validated, see `layers.Backbone`): num_classes, width, fc_units (no hidden dense layer:
  accepted and ignored), precision.
  """
  sample_rate = 8000
  input_length = 32000
  num_mix_points = 5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mix: layers.MixFn = None) -> jax.Array:
    """x: (N, 32000) float32 waveform; train: BN batch statistics; mix: (h, k) -> h."""
    c = lambda n: layers.scaled(n, self.width)
    dt = layers.compute_dtype(self.precision)
    x = layers.check_waveform(x, self.input_length, 'm18')
    x = layers.mix_point(self, x, 0, mix)
    h = layers.waveform_to_nhwc(x)
    h = layers.ConvBNReLU(c(64), (1, 80), (1, 4), dtype=dt, name='conv1')(h, train)
    h = layers.max_pool(h, (1, 4))
    h = layers.hidden_mix_point(self, h, 1, mix, one_d=True)
    index = 2
    for stage, channels in enumerate((64, 128, 256, 512)):
      for _ in range(4):
        h = layers.ConvBNReLU(c(channels), (1, 3), dtype=dt, name=f'conv{index}')(h, train)
        index += 1
      if stage < 3:
        h = layers.max_pool(h, (1, 4))
        h = layers.hidden_mix_point(self, h, stage + 2, mix, one_d=True)
    h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
    return layers.Dense(self.num_classes, dt, float32_output=True, name='fc18')(h)
