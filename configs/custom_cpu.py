"""A first run on your own short sounds on a CPU: configs/custom.py with a small-budget recipe.

    python -m intermix_jax.main \
        --config=configs/custom_cpu.py:audio_dir=/work/fsdd/recordings,metadata_csv=fsdd.csv,fold=1 \
        --workdir=runs/fsdd/fold1

Takes the same arguments as configs/custom.py (audio_dir, metadata_csv, num_folds, fold, seed, and
any field by its dotted name; docs/own_data_and_models.md). The recipe, for clips of up to about
1 s (words, clicks, short events) and a few thousand of them:

  backbone  piczakcnn: a log-mel front end (60 bands) and two convolutions; its input is 20480
            samples at 22.05 kHz = 0.93 s, so a clip of <= 0.9 s fits whole in every crop (the
            10 test crops all hold most of it). Its mel front end suits speech and short events.
            Any input rate works (8 kHz speech is resampled; the bands above 4 kHz stay empty).
  size      model.width=0.5 (40 filters per conv), model.fc_units=256 (the published 5000-unit
            hidden layers are 99 % of the parameters): about 20 steps/s of 64 clips on 2 CPU cores
            on their own, 10 under a load of 2 other busy processes.
  strategy  standard: mixing strategies (intermix, bc, ...) regularise over long schedules (and
            double the epochs); in a short budget they lag (see docs/own_data_and_models.md,
            "A first run on a CPU").
  schedule  60 epochs, LR 0.01 (the EnvNet row these backbones take, docs/method.md §5), x0.1
            after epochs 30 and 45, no warm-up (BatchNorm after every conv), batch 64; test
            every 10 epochs. Time grows with the number of clips: about 42 steps an epoch for
            2700 training clips.

MEASURED (docs/own_data_and_models.md, "A first run on a CPU"): the Free Spoken Digit Dataset
(3000 clips of 10 spoken digits at 8 kHz), test fold 1 = its official test set (recordings 0-4 of
every speaker and digit, 300 clips): see that section for the test error, the wall time and the
machine load.
"""
from intermix_jax import config_lib
from intermix_jax.data import custom


def get_config(arg=None):
  return config_lib.experiment(
      arg, dataset=custom.DATASET, backbone='piczakcnn', strategy='standard',
      audio_dir=(None, str), metadata_csv=(None, str), num_folds=custom.DEFAULT_NUM_FOLDS,
      fields={
          'model.width': 0.5,
          'model.fc_units': 256,
          'num_epochs': 60,
          'opt.lr': 0.01,
          'opt.schedule': (0.5, 0.75),
          'opt.warmup_epochs': 0,
          'eval_every_epochs': 10,
          'checkpoint_every_epochs': 10,
          'log_every_steps': 100,
      })
