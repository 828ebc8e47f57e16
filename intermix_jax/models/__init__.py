"""The five backbones and their registry (SPEC §4; contract in docs/architecture.md).

    model = get_model('envnetv2', num_classes=50)                 # width=1.0: the published model
    variables = model.init({'params': k1, 'dropout': k2}, x, train=False)   # x: (N, model.input_length)
    logits, updates = model.apply(variables, x, train=True, mix=mix_fn,
                                  rngs={'dropout': key}, mutable=['batch_stats'])
    logits = model.apply(variables, x, train=False)                # eval: deterministic

Every model has `sample_rate` (Hz), `input_length` (samples) and `num_mix_points` K: at point
k = 0..K-1 it calls `h = mix(h, k)` (when mix is given) and sows h as intermediates/mix_point_{k};
point 0 is the input waveform (N, T), the others follow pooling stages (non-negative activations),
presented channel-first ((N, C, H, W), or (N, C, T) for the 1-D backbones). Each module's docstring
lists its layers, shapes and points.

    name        rate (Hz)  input (samples)  K  hidden FC (fc_units default)
    envnet      16000      24014            4  2 x 4096
    envnetv2    44100      66650            5  2 x 4096
    m18         8000       32000            5  none (fc_units ignored)
    soundnet5   22050      110250           4  none (fc_units ignored)
    piczakcnn   22050      20480            3  2 x 5000

Options: width (float > 0, channel multiplier of every conv; 1.0 = published), fc_units (int > 0 or
None = the published width above), conv_impl ('auto' | 'plain' | 'cpu', see `convolution`: 'plain' is
`lax.conv_general_dilated` as written, 'cpu' equivalent rewrites that are fast on XLA:CPU, 'auto'
picks 'cpu' on the CPU backend and 'plain' on accelerators), precision ('float32' | 'bfloat16': the
compute dtype of convolutions and dense layers; parameters, BatchNorm statistics, mix points and
logits stay float32, see `layers`).
"""
from __future__ import annotations

import numbers
from typing import Any

import flax.linen as nn

from intermix_jax.models import layers
from intermix_jax.models.envnet import EnvNet
from intermix_jax.models.envnetv2 import EnvNetV2
from intermix_jax.models.m18 import M18
from intermix_jax.models.piczak import PiczakCNN
from intermix_jax.models.soundnet import SoundNet5

MODELS = {
    'envnet': EnvNet,
    'envnetv2': EnvNetV2,
    'm18': M18,
    'soundnet5': SoundNet5,
    'piczakcnn': PiczakCNN,
}
OPTIONS = ('width', 'fc_units', 'conv_impl', 'precision')


def get_model(name: str, num_classes: int, **options: Any) -> nn.Module:
  """The backbone `name` with a `num_classes`-way output.

  Args:
    name: one of MODELS ('envnet', 'envnetv2', 'm18', 'soundnet5', 'piczakcnn').
    num_classes: positive int.
    **options: width (default 1.0), fc_units (default None: the published hidden FC width),
      conv_impl (default 'auto'), precision (default 'float32'; or 'bfloat16').
  Raises:
    ValueError: unknown name or option, or an invalid value (the message lists the valid ones).
  """
  if name not in MODELS:
    raise ValueError(f'models: unknown backbone {name!r}; valid names: {sorted(MODELS)}')
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    raise ValueError(f'models: unknown option(s) {unknown} for {name!r}; valid options: {list(OPTIONS)}')
  if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
    raise ValueError(f'models: num_classes must be a positive int, got {num_classes!r}')
  cls = MODELS[name]
  kwargs = {'num_classes': int(num_classes)}
  width = options.get('width', 1.0)
  if isinstance(width, bool) or not isinstance(width, numbers.Real) or not width > 0:
    raise ValueError(f'models: width must be a positive number, got {width!r}')
  cls.check_width(float(width))
  kwargs['width'] = float(width)
  fc_units = options.get('fc_units')
  if fc_units is not None:
    if isinstance(fc_units, bool) or not isinstance(fc_units, numbers.Integral) or fc_units < 1:
      raise ValueError(f'models: fc_units must be a positive int or None, got {fc_units!r}')
    kwargs['fc_units'] = int(fc_units)
  conv_impl = options.get('conv_impl', 'auto')
  if conv_impl not in layers.IMPLS:
    raise ValueError(f'models: conv_impl must be one of {list(layers.IMPLS)}, got {conv_impl!r}')
  kwargs['conv_impl'] = conv_impl
  precision = options.get('precision', 'float32')
  if precision not in layers.PRECISIONS:
    raise ValueError(f'models: precision must be one of {list(layers.PRECISIONS)}, got {precision!r}')
  kwargs['precision'] = precision
  return cls(**kwargs)


__all__ = ['get_model', 'MODELS', 'OPTIONS', 'EnvNet', 'EnvNetV2', 'M18', 'SoundNet5', 'PiczakCNN']
