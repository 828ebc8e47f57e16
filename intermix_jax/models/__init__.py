"""The five backbones and their registry (docs/method.md §4; contract in docs/architecture.md).

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

Options (OPTIONS; validated by the model's constructor, `layers.Backbone`): width (float > 0, channel
multiplier of every conv; 1.0 = published), fc_units (int > 0 or None = the published width above),
precision ('float32' | 'bfloat16': the compute dtype of convolutions and dense layers; parameters,
BatchNorm statistics, mix points and logits stay float32, see `layers`). On the CPU backend the
convolutions and pools run as equivalent rewrites (`cpu_ops`), chosen by backend, not an option;
EnvNet-v2's forward pass has alternative forms of the same function for GPU/TPU (`accel_ops`,
default 'plain' = as written until a window measures a faster one), chosen the same way.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn

from intermix_jax.models import accel_ops  # noqa: F401  (models.accel_ops.force / set_forced)
from intermix_jax.models import cpu_ops  # noqa: F401  (models.cpu_ops.force / set_forced)
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
OPTIONS = ('width', 'fc_units', 'precision')


def get_model(name: str, num_classes: int, **options: Any) -> nn.Module:
  """The backbone `name` with a `num_classes`-way output.

  Args:
    name: a key of MODELS (the backbone registry above).
    num_classes: positive int.
    **options: width (default 1.0), fc_units (default None: the published hidden FC width),
      precision (default 'float32'; or 'bfloat16').
  Raises:
    ValueError: unknown name or option, or an invalid value (one line naming the option and, for
      names and options, listing the valid ones).
  """
  if name not in MODELS:
    raise ValueError(f'models: unknown backbone {name!r}; valid names: {sorted(MODELS)}')
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    raise ValueError(f'models: unknown option(s) {unknown} for {name!r}; valid options: {list(OPTIONS)}')
  return MODELS[name](num_classes=num_classes, **options)


__all__ = ['get_model', 'MODELS', 'OPTIONS', 'EnvNet', 'EnvNetV2', 'M18', 'SoundNet5', 'PiczakCNN']
