"""EnvNet-v2 (Tokozume, Ushiku & Harada 2018, the BC-learning paper; docs/method.md §4).

Input: (N, 66650) waveform at 44.1 kHz (about 1.51 s), normalised to [-1, 1).

    layer        op (NHWC)                                      output (N, H, W, C), width 1
    conv1        Conv 32 x (1,64) stride (1,2)                  (N, 1, 33294, 32)
    conv2        Conv 64 x (1,16) stride (1,2)                  (N, 1, 16640, 64)
                 max-pool (1,64); swap channels and height      (N, 64, 260, 1)    mix point 1
    conv3, conv4 Conv 32 x (8,8), twice                          (N, 50, 246, 32)
                 max-pool (5,3)                                 (N, 10, 82, 32)    mix point 2
    conv5, conv6 Conv 64 x (1,4), twice; max-pool (1,2)          (N, 10, 38, 64)    mix point 3
    conv7, conv8 Conv 128 x (1,2), twice; max-pool (1,2)         (N, 10, 18, 128)   mix point 4
    conv9, conv10 Conv 256 x (1,2), twice; max-pool (1,2)        (N, 10, 8, 256)
    fc11, fc12   Dense 4096 + ReLU + dropout 0.5, twice
    fc13         Dense num_classes                              logits (N, num_classes)

Conv = conv without bias + BatchNorm + ReLU. Mix points (K = 5): 0 = the input waveform (N, T);
1..4 as marked, presented to `mix` channel-first as in the reference code, e.g. point 1 is
(N, 1, 64, 260) and point 2 (N, 32, 10, 82). `width` scales every conv's channels (so also the
height after the swap); `fc_units` the hidden dense layers.

On GPU/TPU the same function may be computed in another form (`accel_ops.variant()`, read when
traced: the front end as 1-D convolutions, conv3 over stacked rows, polyphase-blocked conv1);
the parameters are the same whatever the form.
"""
from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from intermix_jax.models import accel_ops, layers


class EnvNetV2(layers.Backbone):
  """EnvNet-v2: raw waveform (N, 66650) at 44.1 kHz -> logits (N, num_classes).

  Fields (validated, see `layers.Backbone`): num_classes, width, fc_units (default 4096), precision.
  """
  published_fc_units = 4096
  sample_rate = 44100
  input_length = 66650
  num_mix_points = 5

  @classmethod
  def check_width(cls, width: float) -> None:
    """The swapped height c(64) must survive two (8,8) convs and the (5,3) pool: c(64) >= 19."""
    if layers.scaled(64, width) < 19:
      raise ValueError(f'models: envnetv2 needs round(64 * width) >= 19 (conv2 channels become the '
                       f'image height, which must be >= 19; e.g. width 0.3), got width={width}')

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mix: layers.MixFn = None) -> jax.Array:
    """x: (N, 66650) float32 waveform; train: BN batch statistics and dropout; mix: (h, k) -> h."""
    c = lambda n: layers.scaled(n, self.width)
    dt = layers.compute_dtype(self.precision)
    block = lambda name, f, k, s=(1, 1), form='conv': layers.ConvBNReLU(f, k, s, dtype=dt,
                                                                        form=form, name=name)
    pool = layers.max_pool
    # How the same function is computed (accel_ops: chosen when traced, never a model option).
    variant = accel_ops.variant()
    one_d = variant != 'plain'
    conv1_form = 'blocked' if variant == 'blocked' else 'conv'
    conv3_form = {'conv1d_rows': 'rows', 'blocked': 'rows_blocked'}.get(variant, 'conv')

    x = layers.check_waveform(x, self.input_length, 'envnetv2')
    x = layers.mix_point(self, x, 0, mix)
    if one_d:  # (N, T, 1): conv1, conv2 and the pool as 1-D ops; the swap (N, W, C) -> (N, C, W, 1)
      h = x[:, :, None]
      h = block('conv1', c(32), (1, 64), (1, 2), conv1_form)(h, train)
      h = block('conv2', c(64), (1, 16), (1, 2))(h, train)
      h = jnp.transpose(accel_ops.max_pool1d(h, 64), (0, 2, 1))[..., None]
    else:
      h = layers.waveform_to_nhwc(x)
      h = block('conv1', c(32), (1, 64), (1, 2))(h, train)
      h = block('conv2', c(64), (1, 16), (1, 2))(h, train)
      h = layers.swap_channels_and_height(pool(h, (1, 64)))
    h = layers.hidden_mix_point(self, h, 1, mix)
    h = block('conv3', c(32), (8, 8), form=conv3_form)(h, train)
    h = block('conv4', c(32), (8, 8))(h, train)
    h = layers.hidden_mix_point(self, pool(h, (5, 3)), 2, mix)
    h = block('conv5', c(64), (1, 4))(h, train)
    h = block('conv6', c(64), (1, 4))(h, train)
    h = layers.hidden_mix_point(self, pool(h, (1, 2)), 3, mix)
    h = block('conv7', c(128), (1, 2))(h, train)
    h = block('conv8', c(128), (1, 2))(h, train)
    h = layers.hidden_mix_point(self, pool(h, (1, 2)), 4, mix)
    h = block('conv9', c(256), (1, 2))(h, train)
    h = block('conv10', c(256), (1, 2))(h, train)
    h = layers.flatten(pool(h, (1, 2)))
    h = layers.HiddenFC(self.fc_units, dt, name='fc11')(h, train)
    h = layers.HiddenFC(self.fc_units, dt, name='fc12')(h, train)
    return layers.Dense(self.num_classes, dt, float32_output=True, name='fc13')(h)
