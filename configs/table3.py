"""Paper table 3 (docs/method.md §7): ESC-10 robustness to one-step FGSM, standard / BC / InterMix.

The paper does not name the attacked backbone: it is a config choice (`backbone=...` after the colon;
default EnvNet-v2 with its docs/method.md §5 ESC-10 row: 600 epochs, 1200 when mixing, LR 0.01,
decay x0.1 at [0.5, 0.75]). Train one fold, then attack its last checkpoint:

    python -m intermix_jax.main --config=configs/table3.py:strategy=bc,fold=1,seed=0 \
        --workdir=runs/table3/esc10/envnetv2/bc/seed0/fold1
    python -m intermix_jax.adversarial --workdir=runs/table3/esc10/envnetv2/bc/seed0/fold1
        # -> W/adversarial.json: clean and attacked 10-crop error for eps 1e-2, 1e-3, 1e-4, 1e-5

Everything (3 strategies x 5 folds: training, then the attack), then the report's table 3:

    python launch/sweep.py --table=3 --root=runs/table3 [--backbones=envnetv2] [--run]
    python -m intermix_jax.report runs/table3

The attack: x_adv = x + eps * sign(grad_x CE) on each crop of the normalised waveform x/32768 (the
crop's true label, model in eval mode), then the usual mean of the softmax over the 10 crops.

Expected result (paper table 3; ESC-10 error % under attack, eps = 1e-2 / 1e-3 / 1e-4 / 1e-5):
  standard  64.5 / 37.7 / 36.5 / 36.2
  BC        47.2 / 28.7 / 26.9 / 26.8
  InterMix  42.9 / 26.2 / 25.1 / 25.0
"""
from intermix_jax import config_lib


def get_config(arg=None):
  """ESC-10, EnvNet-v2 by default; `backbone=...`, `strategy=...` after the colon."""
  return config_lib.experiment(arg, dataset='esc10', backbone='envnetv2')
