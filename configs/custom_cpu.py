"""A first run on your own short sounds on a CPU: configs/custom.py with a small-budget recipe.

    python -m intermix_jax.main \
        --config=configs/custom_cpu.py:audio_dir=/path/recordings,metadata_csv=/path/labels.csv \
        --workdir=runs/my_sounds/fold1

Takes the same arguments as configs/custom.py (audio_dir, metadata_csv, num_folds, fold, seed, and
any field by its dotted name; docs/own_data_and_models.md). The recipe is for clips of up to about
1 s (words, clicks, short events), a few thousand of them:

  backbone  piczakcnn: a log-mel front end (60 bands) and two convolutions. Its input is 20480
            samples at 22.05 kHz = 0.93 s, so a clip of up to 0.9 s fits whole into every crop
            (each of the 10 test crops holds most of it). Any input rate works: 8 kHz speech is
            resampled, and its bands above 4 kHz stay empty.
  size      model.width=0.5 (40 filters per conv), model.fc_units=256 (the published 5000-unit
            hidden layers hold over 99 % of the parameters): 132 k parameters, 10-20 steps of 64
            clips a second on 2 busy CPU cores.
  strategy  standard: mixing strategies (intermix, bc, ...) regularise over long schedules and
            double the epochs; in a short budget they lag (on FSDD's validation fold, InterMix
            at 30 epochs doubled to 60: 13.7 % error; standard at 60 epochs: 1.0 %).
  schedule  60 epochs, LR 0.01 (the docs/method.md §5 row these backbones take), x0.1 after
            epochs 30 and 45, no warm-up (BatchNorm after every conv), batch 64; a test every 10
            epochs (the error before the first decay jumps around; read the last ones). About
            2500 steps for 2700 training clips; time grows with the number of clips.

MEASURED (docs/own_data_and_models.md, "A first run on a CPU", for the exact command): the Free
Spoken Digit Dataset (3000 clips of 10 spoken digits at 8 kHz, 6 speakers), test fold 1 = its
official test set (recordings 0-4 of every speaker and digit, 300 clips), jax 0.10.2: test error
0.67 % (2 of 300 wrong) after 2 min 51 s wall clock from a fresh data_dir, on 2 CPU cores under a
load average of about 6 (shared with 2 other training runs and tests); 4 min 41 s at about 8.5.
With a speaker held out instead (5 training voices), 30.6-54.8 % error: see the docs.
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
