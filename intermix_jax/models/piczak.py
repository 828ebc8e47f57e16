"""PiczakCNN (Piczak, "Environmental sound classification with convolutional neural networks",
MLSP 2015; docs/method.md §4), with its log-mel + delta front end computed on the device.

Input: (N, 20480) waveform at 22.05 kHz (0.93 s). The front end (`intermix_jax.melspec`: 60 mel
bands, window 1024, hop 512, centred frames, dB with an 80 dB floor, width-9 deltas) turns it into
Piczak's 41-frame segment (the "short segment" variant: 41 frames, about 950 ms of context),
2 x 60 x 41 = (log-mel, delta) x bands x frames: 20480 is the shortest input giving 41 centred
frames (1 + T // 512).

    layer   op (NHWC)                                             output (N, H, W, C), width 1
    front   log-mel + delta                                       (N, 60, 41, 2)
    conv1   Conv 80 x (57,6); max-pool (4,3) stride (1,3)          (N, 1, 12, 80)     mix point 1
            dropout 0.5
    conv2   Conv 80 x (1,3); max-pool (1,3)                        (N, 1, 3, 80)      mix point 2
    fc3, fc4 Dense 5000 + ReLU + dropout 0.5, twice
    fc5     Dense num_classes                                     logits (N, num_classes)

Conv = conv without bias + BatchNorm + ReLU (the project's block; Piczak's original had biases and
no BN). Mix points (K = 3): 0 = the input waveform (N, T), before the front end; 1 and 2 after the
pooling stages (non-negative), presented to `mix` channel-first: (N, 80, 1, 12), (N, 80, 1, 3).
The front end's output itself (signed dB values) is not a mix point. `fc_units` defaults to the
published 5000.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from intermix_jax import melspec
from intermix_jax.models import layers

N_FFT = 1024
HOP_LENGTH = 512
N_MELS = 60


class PiczakCNN(layers.Backbone):
  """PiczakCNN: raw waveform (N, 20480) at 22.05 kHz -> logits (N, num_classes).

  Fields (validated, see `layers.Backbone`): num_classes, width, fc_units (default 5000), precision.
  """
  published_fc_units = 5000
  sample_rate = 22050
  input_length = 20480
  num_mix_points = 3
  vmap_runs_on_accelerators = True  # on an H200 vmap gained, unroll did not (benchmarks/README.md)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mix: layers.MixFn = None) -> jax.Array:
    """x: (N, 20480) float32 waveform; train: BN batch statistics and dropout; mix: (h, k) -> h."""
    c = lambda n: layers.scaled(n, self.width)
    dt = layers.compute_dtype(self.precision)
    x = layers.check_waveform(x, self.input_length, 'piczakcnn')
    x = layers.mix_point(self, x, 0, mix)
    h = melspec.log_mel_with_delta(x, self.sample_rate, N_FFT, HOP_LENGTH, N_MELS)  # (N, 60, 41, 2)
    h = layers.ConvBNReLU(c(80), (57, 6), dtype=dt, name='conv1')(h, train)
    h = layers.max_pool(h, (4, 3), (1, 3))
    h = layers.hidden_mix_point(self, h, 1, mix)
    h = nn.Dropout(layers.DROPOUT_RATE, deterministic=not train)(h)
    h = layers.ConvBNReLU(c(80), (1, 3), dtype=dt, name='conv2')(h, train)
    h = layers.hidden_mix_point(self, layers.max_pool(h, (1, 3)), 2, mix)
    h = layers.flatten(h)
    h = layers.HiddenFC(self.fc_units, dt, name='fc3')(h, train)
    h = layers.HiddenFC(self.fc_units, dt, name='fc4')(h, train)
    return layers.Dense(self.num_classes, dt, float32_output=True, name='fc5')(h)
