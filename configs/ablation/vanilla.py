"""Paper table 2 (ablation), vanilla InterMix: input space (mix point 0), r-weighting.

EnvNet-v2 + strong augmentation, strategy intermix. The two phase-shifted waveforms are mixed
at the input with the ratio r itself (no A-weighted p-weighting); the waveform is signed, so the
mix is the normalised sum (signed_mode=superpose).

One fold (dataset esc50 | esc10 | urbansound8k, fold 1..5 or 1..10 on UrbanSound8K):

    python -m intermix_jax.main --config=configs/ablation/vanilla.py:dataset=esc10,fold=1,seed=0 \
        --workdir=runs/table2/esc10/envnetv2/intermix-vanilla/seed0/fold1

The whole ablation (3 variants x 3 datasets x folds), then the report (its "Ablation" section):

    python launch/sweep.py --table=2 --root=runs/table2 [--run]
    python -m intermix_jax.report runs/table2

Schedule: EnvNet-v2's docs/method.md §5 row of the dataset (see configs/table1/envnetv2_aug.py),
doubled for mixing.

Expected result (paper table 2; error %, ESC-50 / ESC-10 / US8K): 13.6 / 7.9 / 21.0
(vanilla 13.6 / 7.9 / 21.0; + hidden mixing 13.3 / 7.7 / 20.8; + p-weighting 12.9 / 7.2 / 20.5).
"""
from intermix_jax import config_lib


def get_config(arg=None):
  """ESC-50 by default; `dataset=esc10` or `dataset=urbansound8k` after the colon."""
  return config_lib.experiment(arg, backbone='envnetv2', strategy='intermix', fields={
      'strong_augment': True,
      'mixing.eligible_layers': (0,),
      'mixing.p_weighting': False,
  })
