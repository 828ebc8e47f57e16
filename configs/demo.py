"""Offline demo: synthetic sounds, a small EnvNet, InterMix; a few minutes on 2 CPU cores.

    python -m intermix_jax.main --config=configs/demo.py --workdir=runs/demo
    bash launch/local.sh            # the same, creating .venv first if needed

No download: the `synthetic` dataset is generated (TFDS builder, 5 folds). Trains, evaluates
(10 crops), checkpoints, and writes runs/demo/results.json; `python -m intermix_jax.report runs/demo`
makes the tables and plots. Expected result: see MEASURED below.
"""
import os
import runpy

_base = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'base.py'))


def get_config(arg=None):
  return _base['get_dataset_config']('synthetic', arg, **{
      'backbone': 'envnet',
      'strategy': 'intermix',
      'model.width': 0.25,
      'model.fc_units': 128,
      'num_epochs': 10,
      'opt.lr': 0.01,
      'eval_every_epochs': 5,
      'checkpoint_every_epochs': 5,
      'log_every_steps': 10,
  })
