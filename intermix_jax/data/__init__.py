"""Datasets (TFDS builders) and input pipelines (docs/method.md §5, issue 4). No TensorFlow needed.

    info = data.dataset_info(config)   # DatasetInfo(name, num_classes, class_names, num_folds)
    train = data.make_train_loader(config, sample_rate, input_length,
                                   process_index=0, process_count=1)
    for batch in train.batches(epoch, start_step):   # x float32 (B_local, T), y int32 (B_local,)
      ...
    test = data.make_eval_loader(config, sample_rate, input_length)
    for batch in test.batches():   # x float32 (b, num_eval_crops, T), y int32 (b,),
      ...                          # mask bool (b,), index int32 (b,) (-1 on padding rows)

With config.data_on_device the trainer cuts the same training batches on the devices
(`data.on_device`, crop plans from `TrainLoader.plan`).

Config fields read: dataset (a name of `DATASETS`: data/catalog.py), fold (test fold, 1-based),
data_dir, manual_dir, skip_bad_files, batch_size, eval_batch_size, num_eval_crops, seed
(shuffle_buffer_seed, when set, replaces it for the data), strong_augment, strategy and mixing
(`mixing.build_strategy`: single sounds, pairs of different classes, or independent pairs); for
'custom' also audio_dir, metadata_csv, num_folds (data/custom.py). Builders: data/README.md.
"""

from intermix_jax import mixing
from intermix_jax.data import on_device, pipeline, run_data  # pylint: disable=g-multiple-import
from intermix_jax.data.audio_builder import (  # pylint: disable=g-multiple-import
    SAMPLE_RATES, SampleRateConfig, quiet_preparation, SkippedFilesWarning,
)
from intermix_jax.data.audio_decode import BadAudioFileError
from intermix_jax.data.catalog import (  # pylint: disable=g-multiple-import
    DATASETS, DatasetInfo, check_fold, dataset_info, get_builder, prepare, prepare_builder,
)
from intermix_jax.data.custom import CustomAudio
from intermix_jax.data.layouts import LayoutError
from intermix_jax.data.official import Esc50, SourceUnavailableError, Urbansound8k
from intermix_jax.data.pipeline import (  # pylint: disable=g-multiple-import
    ClipIndex, EvalLoader, TrainLoader,
)
from intermix_jax.data.run_data import RunData
from intermix_jax.data.synthetic import SyntheticSounds


def _index(config, sample_rate: int, test: bool, cache_bytes: int):
  """(the ClipIndex of the test fold (`test`) or of the other folds of `config`, its info)."""
  info = dataset_info(config)
  fold = check_fold(config, info)
  builder = prepare(config, sample_rate)
  folds = [fold] if test else [k for k in range(1, info.num_folds + 1) if k != fold]
  return ClipIndex([builder.as_data_source(split=f'fold{k}') for k in folds],
                   sort_by_filename=test, cache_bytes=cache_bytes), info


def make_train_loader(config, sample_rate: int, input_length: int, *, process_index: int = 0,
                      process_count: int = 1, num_threads: int = 1, prefetch: int = 2,
                      num_workers: int = 0,
                      cache_bytes: int = pipeline.DEFAULT_CACHE_BYTES) -> TrainLoader:
  """Training batches of the folds other than config.fold (see `pipeline.TrainLoader`).

  Args:
    config: the experiment config (fields listed in the module docstring).
    sample_rate: Hz of the backbone; input_length: T samples per crop.
    process_index, process_count: this host's shard (jax.process_index(), jax.process_count()).
    num_threads: background threads preparing batches (0: synchronous); prefetch: batches kept
      ready; num_workers: grain worker processes (0: none); cache_bytes: keep the split's clips
      in memory when their int16 samples fit in this many bytes (else read per batch).
  """
  index, info = _index(config, sample_rate, False, cache_bytes)
  strategy = mixing.build_strategy(config)
  seed = config.get('shuffle_buffer_seed') if hasattr(config, 'get') else None
  return TrainLoader(index, input_length=input_length, batch_size=int(config.batch_size),
                     seed=int(config.seed if seed is None else seed), pairs=strategy.mixes,
                     sounds_per_example=strategy.sounds_per_example,
                     strong_augment=bool(config.strong_augment), process_index=process_index,
                     process_count=process_count, num_threads=num_threads, prefetch=prefetch,
                     num_workers=num_workers, class_names=info.class_names)


def make_eval_loader(config, sample_rate: int, input_length: int, *, process_index: int = 0,
                     process_count: int = 1, num_threads: int = 1, prefetch: int = 2,
                     num_workers: int = 0,
                     cache_bytes: int = pipeline.DEFAULT_CACHE_BYTES) -> EvalLoader:
  """Evaluation batches of fold config.fold (see `pipeline.EvalLoader`); arguments as above."""
  return EvalLoader(_index(config, sample_rate, True, cache_bytes)[0], input_length=input_length,
                    batch_size=int(config.eval_batch_size),
                    num_crops=int(config.num_eval_crops), process_index=process_index,
                    process_count=process_count, num_threads=num_threads, prefetch=prefetch,
                    num_workers=num_workers)


describe_run_data = run_data.describe  # the run's RunData; contract in run_data.describe

__all__ = [
    'BadAudioFileError', 'ClipIndex', 'CustomAudio', 'DATASETS', 'DatasetInfo', 'Esc50',
    'EvalLoader', 'LayoutError', 'RunData', 'SAMPLE_RATES', 'SampleRateConfig',
    'SkippedFilesWarning', 'SourceUnavailableError', 'SyntheticSounds', 'TrainLoader',
    'Urbansound8k', 'dataset_info', 'describe_run_data', 'get_builder', 'make_eval_loader',
    'make_train_loader', 'prepare', 'prepare_builder', 'quiet_preparation',
]
