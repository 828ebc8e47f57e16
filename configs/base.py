"""Every field of the experiment config with its default: intermix_jax/config_lib.py holds them.

Each config file is a thin `get_config(arg=None)` calling `config_lib.experiment` (see
configs/__init__.py); this one is the plain experiment, ESC-50 with EnvNet-v2 + InterMix, like
configs/esc50.py:

    python -m intermix_jax.main --config=configs/base.py:backbone=envnet,strategy=bc,fold=2 \
        --workdir=runs/esc50/envnet/bc/seed0/fold2

Every field at its default, before any dataset, protocol row or argument:
`intermix_jax.config_lib.base_config()`.
"""
from intermix_jax import config_lib


def get_config(arg=None):
  return config_lib.experiment(arg)
