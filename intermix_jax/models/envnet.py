"""EnvNet (Tokozume & Harada, ICASSP 2017; the BC-learning reference code; docs/method.md §4).

Input: (N, 24014) waveform at 16 kHz (about 1.5 s), normalised to [-1, 1).

    layer        op (NHWC)                                      output (N, H, W, C), width 1
    conv1        Conv 40 x (1,8)                                (N, 1, 24007, 40)
    conv2        Conv 40 x (1,8)                                (N, 1, 24000, 40)
                 max-pool (1,160); swap channels and height     (N, 40, 150, 1)    mix point 1
    conv3        Conv 50 x (8,13); max-pool (3,3)               (N, 11, 46, 50)    mix point 2
    conv4        Conv 50 x (1,5); max-pool (1,3)                (N, 11, 14, 50)    mix point 3
    fc5, fc6     Dense 4096 + ReLU + dropout 0.5, twice
    fc7          Dense num_classes                              logits (N, num_classes)

Conv = conv without bias + BatchNorm + ReLU. Mix points (K = 4): 0 = the input waveform (N, T);
1..3 after each pooling stage, presented to `mix` channel-first as in the reference code:
(N, 1, 40, 150), (N, 50, 11, 46), (N, 50, 11, 14). `width` scales every conv's channels (so also
the height after the swap); `fc_units` the hidden dense layers.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from intermix_jax.models import layers


class EnvNet(layers.Backbone):
  """EnvNet: raw waveform (N, 24014) at 16 kHz -> logits (N, num_classes).

  Fields (validated, see `layers.Backbone`): num_classes, width, fc_units (default 4096), precision.
  """
  published_fc_units = 4096
  sample_rate = 16000
  input_length = 24014
  num_mix_points = 4

  @classmethod
  def check_width(cls, width: float) -> None:
    """The swapped height c(40) must survive the (8,13) conv and the (3,3) pool: c(40) >= 10."""
    if layers.scaled(40, width) < 10:
      raise ValueError(f'models: envnet needs round(40 * width) >= 10 (conv2 channels become the '
                       f'image height, which must be >= 10; width 0.25 is the smallest quarter), '
                       f'got width={width}')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mix: layers.MixFn = None) -> jax.Array:
    """x: (N, 24014) float32 waveform; train: BN batch statistics and dropout; mix: (h, k) -> h."""
    c = lambda n: layers.scaled(n, self.width)
    dt = layers.compute_dtype(self.precision)
    block = lambda name, f, k: layers.ConvBNReLU(f, k, dtype=dt, name=name)
    pool = layers.max_pool

    x = layers.check_waveform(x, self.input_length, 'envnet')
    x = layers.mix_point(self, x, 0, mix)
    h = layers.waveform_to_nhwc(x)
    h = block('conv1', c(40), (1, 8))(h, train)
    h = block('conv2', c(40), (1, 8))(h, train)
    h = layers.swap_channels_and_height(pool(h, (1, 160)))
    h = layers.hidden_mix_point(self, h, 1, mix)
    h = block('conv3', c(50), (8, 13))(h, train)
    h = layers.hidden_mix_point(self, pool(h, (3, 3)), 2, mix)
    h = block('conv4', c(50), (1, 5))(h, train)
    h = layers.flatten(layers.hidden_mix_point(self, pool(h, (1, 3)), 3, mix))
    h = layers.HiddenFC(self.fc_units, dt, name='fc5')(h, train)
    h = layers.HiddenFC(self.fc_units, dt, name='fc6')(h, train)
    return layers.Dense(self.num_classes, dt, float32_output=True, name='fc7')(h)
