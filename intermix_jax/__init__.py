"""intermix_jax: InterMix, SpeechMix and BC learning for sound classification in JAX/Flax.

Public API (re-exported here; see each module's docstring for shapes and units):
  audio      a_weighted_gain, phase_shift
  mixing     mix_ratio, bc_mix, interference_mix, mix_labels, get_strategy
  losses     kl_divergence, cross_entropy
  models     get_model
"""
