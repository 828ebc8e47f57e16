"""Your own sounds (dataset='custom'): a folder of class sub-folders, or a csv.

    python -m intermix_jax.main \
        --config=configs/custom.py:audio_dir=/path/my_sounds,backbone=envnet,strategy=intermix \
        --workdir=runs/my_sounds/envnet/intermix/fold1
    python -m intermix_jax.main \
        --config=configs/custom.py:metadata_csv=/path/labels.csv,fold=all --workdir=runs/my_cv

Arguments of this config besides the declared ones of every config (dataset, backbone, strategy,
fold, seed; intermix_jax/config_lib.py), also config fields (see docs/own_data_and_models.md):
  audio_dir     the folder of YOUR audio: <audio_dir>/<class>/<files> (.wav .flac .ogg .oga .opus
                .mp3 .aif .aiff; any rate, mono or stereo), or, with metadata_csv, the folder the
                csv's file names are relative to (default: the csv's folder).
  metadata_csv  a csv with columns filename,label[,fold]; labels may be any strings.
  num_folds     folds assigned (stratified, deterministic) when there is no fold column (default 5).
`data_dir` keeps its meaning: where the prepared TFDS copy is written (default
~/tensorflow_datasets), NOT the folder of your audio. (The issue text wrote `data_dir=DIR` for the
audio folder; that name was already taken, so the audio folder is `audio_dir`.)

Defaults are every config's (EnvNet-v2, InterMix, the docs/method.md §5 ESC-50 row of the
backbone: e.g. EnvNet 600 epochs, doubled for mixing): hours to days on a CPU. For a first run on
a CPU, configs/custom_cpu.py takes the same arguments with a measured small-budget recipe.
"""
from intermix_jax import config_lib
from intermix_jax.data import custom


def get_config(arg=None):
  return config_lib.experiment(arg, dataset=custom.DATASET,
                               **{f.key: f for f in custom.CONFIG_FIELDS})
