"""intermix_jax: InterMix, SpeechMix and BC learning for sound classification in JAX/Flax.

Public API (`__all__`; shapes and units in each function's docstring):

  Signals      a_weighted_gain(x, fs), phase_shift(x, phi)
  Mixing laws  mix_ratio, bc_mix, interference_mix, mix_labels
  Strategies   get_strategy(name, **options) -> Strategy (plan / prepare_input / mixer / targets / loss),
               strategy_options(name), mix_point(h, k, mix, channel_axis), MixPlan, STRATEGY_NAMES,
               OPTION_NAMES
  Losses       kl_divergence, cross_entropy
  Models       get_model(name, num_classes, **options), MODELS, MODEL_OPTIONS

The core modules (audio, mixing, losses, melspec, models) import JAX, Flax and numpy only: no
config, TFDS or orbax module (tests/test_api.py checks it). The data pipeline (`intermix_jax.data`),
the trainer (`intermix_jax.train`) and the scaling helpers (`intermix_jax.parallel`) are the
harness: import them explicitly; they pull in TFDS, orbax and ml_collections.
"""
from intermix_jax import audio
from intermix_jax import losses
from intermix_jax import mixing
from intermix_jax import models
from intermix_jax.audio import a_weighted_gain
from intermix_jax.audio import phase_shift
from intermix_jax.losses import cross_entropy
from intermix_jax.losses import kl_divergence
from intermix_jax.mixing import bc_mix
from intermix_jax.mixing import get_strategy
from intermix_jax.mixing import interference_mix
from intermix_jax.mixing import mix_labels
from intermix_jax.mixing import mix_point
from intermix_jax.mixing import mix_ratio
from intermix_jax.mixing import MixPlan
from intermix_jax.mixing import OPTION_NAMES
from intermix_jax.mixing import Strategy
from intermix_jax.mixing import strategy_options
from intermix_jax.mixing import STRATEGY_NAMES
from intermix_jax.models import get_model
from intermix_jax.models import MODELS
from intermix_jax.models import OPTIONS as MODEL_OPTIONS

__version__ = '0.1.0'

__all__ = [
    'a_weighted_gain', 'phase_shift',
    'mix_ratio', 'bc_mix', 'interference_mix', 'mix_labels',
    'get_strategy', 'strategy_options', 'mix_point', 'Strategy', 'MixPlan', 'STRATEGY_NAMES',
    'OPTION_NAMES',
    'kl_divergence', 'cross_entropy',
    'get_model', 'MODELS', 'MODEL_OPTIONS',
]
