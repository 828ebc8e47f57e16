"""From config fields to prepared TFDS builders: `config.dataset` -> builder class and config.

    builder = catalog.prepare(config, sample_rate=16000)  # download_and_prepare on first use
    info = catalog.dataset_info(config)                   # static: needs no preparation

Prepared as array_record under `config.data_dir`; which prepared copy is reused and the
preparation lock (`<data_dir>/.locks/`): data/README.md "Preparing".
"""
import collections
import contextlib
import dataclasses
import errno
import fcntl
import functools
import glob
import logging
import os
import shutil
import warnings

import tensorflow_datasets as tfds

from intermix_jax import io_errors
from intermix_jax import workdir
from intermix_jax.data import audio_builder
from intermix_jax.data import audio_decode
from intermix_jax.data import custom
from intermix_jax.data import layouts
from intermix_jax.data import official
from intermix_jax.data import synthetic

FILE_FORMAT = 'array_record'
INCOMPLETE_PREFIX = 'incomplete.'  # TFDS's temporary preparation directories
LOCK_DIR = '.locks'

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset before reading it: name (`config.dataset`),
  num_classes C, class_names (C names, index = label), num_folds (config.fold picks the test one).
  """
  name: str
  num_classes: int
  class_names: tuple[str, ...]
  num_folds: int


# A catalog dataset: builder class (subset = the dataset's name), config-name prefix, static facts.
_Entry = collections.namedtuple('_Entry', 'builder prefix class_names num_folds')
# config.dataset -> its entry: THE list of the datasets the library knows (with custom.DATASET).
_DATASETS = {
    'esc50': _Entry(official.Esc50, 'esc50_', layouts.ESC50_CLASS_NAMES, layouts.ESC_NUM_FOLDS),
    'esc10': _Entry(official.Esc50, 'esc10_', layouts.ESC10_CLASS_NAMES, layouts.ESC_NUM_FOLDS),
    'urbansound8k': _Entry(official.Urbansound8k, '', layouts.URBANSOUND8K_CLASS_NAMES,
                           layouts.URBANSOUND8K_NUM_FOLDS),
    'synthetic': _Entry(synthetic.SyntheticSounds, '', synthetic.CLASS_NAMES, synthetic.NUM_FOLDS),
}
DATASETS = tuple(_DATASETS) + (custom.DATASET,)


def _entry(dataset: str) -> _Entry:
  if dataset == custom.DATASET:
    raise ValueError("dataset 'custom' is described by config fields (audio_dir, metadata_csv, "
                     'num_folds): use catalog.prepare(config, rate) or custom.get_builder(config, '
                     'rate)')
  if dataset not in _DATASETS:
    raise ValueError(f'config.dataset is {dataset!r}; the data pipeline knows {DATASETS}')
  return _DATASETS[dataset]


def known_num_folds(dataset: str) -> int | None:
  """The folds of `dataset` when known without reading any data; None for 'custom' (its files
  tell) and for names the catalog does not know."""
  return _DATASETS[dataset].num_folds if dataset in _DATASETS else None


def trims_zeros(dataset: str) -> bool:
  """Whether `dataset`'s clips are trimmed of leading/trailing exact-zero samples (the ESC
  protocol): what `predict` must do to a new file to match the training clips."""
  return dataset in _DATASETS and _DATASETS[dataset].builder.TRIMS_ZEROS


def get_builder(dataset: str, sample_rate: int, *, data_dir=None,
                skip_bad_files: bool = False) -> audio_builder.AudioClipBuilder:
  """The (maybe unprepared) builder of `dataset` at `sample_rate` Hz (a rate outside
  `audio_builder.SAMPLE_RATES` gets a config built on the fly, named e.g. `sr11025`)."""
  cls, prefix, _, _ = _entry(dataset)
  name = audio_builder.config_name(sample_rate, prefix)
  # A registered config goes by name (a builder pickled to a grain worker re-finds it by name).
  config = name if name in {c.name for c in cls.BUILDER_CONFIGS} else (
      audio_builder.sample_rate_configs(prefix, dataset, [int(sample_rate)])[0])
  return cls(data_dir=data_dir, config=config, file_format=FILE_FORMAT,
             skip_bad_files=skip_bad_files)


def prepare_builder(builder: audio_builder.AudioClipBuilder, *, manual_dir=None) -> None:
  """download_and_prepare unless already prepared (waiting for another process preparing the same
  config; deleting its dead preparations' `incomplete.*`), then `check_prepared`; clips resampled
  from other rates are warned about once per process (`audio_builder.resampling_note`).

  Raises:
    FileNotFoundError: manual_dir is given but is not a directory (when preparing).
    PreparationWriteError: the disk of data_dir is full (or the quota exhausted): one line naming
      data_dir; the partial preparation is removed, copies prepared before are untouched.
    layouts.LayoutError, audio_decode.BadAudioFileError: see `check_prepared`.
  """
  if not builder.READS_SOURCE_FILES:
    manual_dir = None
  if not _is_prepared(builder):
    if manual_dir is not None and not os.path.isdir(manual_dir):
      raise FileNotFoundError(f'config.manual_dir is {manual_dir!r}, which is not a directory; '
                              f'it must hold a copy of the official layout of {builder.name}')
    with _preparation_lock(builder) as locked:
      if _is_prepared(builder):  # another process prepared it while this one waited
        builder.info.read_from_directory(builder.data_path)
      else:
        if locked:
          remove_stale_incomplete_dirs(builder)
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        try:
          builder.download_and_prepare(download_config=download_config, file_format=FILE_FORMAT)
        except Exception as e:  # pylint: disable=broad-except
          # Processes without the lock (e.g. where file locks are unsupported) preparing into
          # one data_dir: the slower one's final rename fails.
          if isinstance(e, OSError) and builder.data_path.exists():
            builder.info.read_from_directory(builder.data_path)
          elif io_errors.is_disk_full(e):
            if locked:  # nobody else writes this config's incomplete.* now: free their space
              remove_stale_incomplete_dirs(builder, quiet=True)
            root = os.fspath(builder.data_dir_root)
            raise PreparationWriteError(errno.ENOSPC, (
                f'cannot prepare {builder.name}/{builder.builder_config.name} in {root} '
                f'(config.data_dir): no space left on device{io_errors.free_space(root)}; the '
                'partial preparation was removed and nothing prepared before is touched: free '
                'some space there or set config.data_dir to another disk, and rerun the same '
                'command')) from e
          else:
            raise
  check_prepared(builder, manual_dir=manual_dir)
  meta = builder.info.metadata or {}
  note = audio_builder.resampling_note(meta.get('source_sample_rates'), builder.sample_rate)
  if note:
    _warn_once(f'{meta.get("source") or builder.data_path}: {note}')


class PreparationWriteError(io_errors.WriteError):
  """A dataset could not be prepared for lack of space: one line naming config.data_dir."""


def _is_prepared(builder) -> bool:
  """builder.is_prepared() without TFDS's warning when it is not."""
  return os.path.isfile(os.path.join(os.fspath(builder.data_path), 'dataset_info.json'))


@functools.cache  # once per process (prepare runs once per loader)
def _warn_once(message: str) -> None:
  log.warning('%s', message)


def check_prepared(builder: audio_builder.AudioClipBuilder, *, manual_dir=None) -> None:
  """Refuses a prepared copy that is not what this run would prepare now.

  Raises:
    audio_decode.BadAudioFileError: the copy skipped bad files (prepared with
      skip_bad_files=True) and builder.skip_bad_files is False; names the first file.
    layouts.LayoutError: the copy was prepared from other files than the local copy the builder
      would read now (`builder.source_root(manual_dir)`), by `layouts.content_fingerprint`.
  """
  meta = builder.info.metadata or {}
  where = os.fspath(builder.data_path)
  skipped = list(meta.get('skipped_files') or [])
  if skipped and not builder.skip_bad_files:
    path, problem = skipped[0]
    others = f' and {len(skipped) - 1} other bad file(s)' if len(skipped) > 1 else ''
    raise audio_decode.BadAudioFileError(
        path, f'{problem} (the prepared copy {where} skipped it{others}: it was prepared with '
        'skip_bad_files=True). Set skip_bad_files=True (config.skip_bad_files) to train without '
        f'them, or fix or remove them and prepare again (delete {where}; a custom dataset is '
        'prepared anew by itself)')
  stored = meta.get('source_fingerprint')
  try:
    with warnings.catch_warnings():  # "fewer clips than the official ...": said when preparing
      warnings.simplefilter('ignore')
      root = builder.source_root(manual_dir)  # None for generated data (nothing to compare)
      records = None if root is None else builder.source_records(root)
  except (layouts.LayoutError, official.SourceUnavailableError, OSError) as e:
    _warn_once(f'{where}: cannot read the local copy to compare it with this prepared copy '
               f'({e}); using the prepared copy as it is')
    return
  if records is not None and stored is None:
    _warn_once(f'{where} was prepared before copies were fingerprinted: cannot tell whether it '
               f'was prepared from {root}; delete it to prepare it again from there')
  elif records is not None:
    now = layouts.content_fingerprint(records, builder.class_names())
    if now != stored:
      raise layouts.LayoutError(
          f'{where} was prepared from another copy of the data ({meta.get("source_clips")} clips '
          f'listed by {meta.get("source")}, fingerprint {stored}) than the one read now '
          f'({len(records)} clips listed by {root}, fingerprint {now}; '
          f'config.manual_dir={manual_dir!r}): delete {where} to prepare it from the copy now '
          'given, or use another config.data_dir')


def _lock_path(builder) -> str:
  return os.path.join(os.fspath(builder.data_dir_root), LOCK_DIR,
                      f'{builder.name}.{builder.builder_config.name}.lock')


@contextlib.contextmanager
def _preparation_lock(builder):
  """Holds an exclusive flock on this builder config's lock file (released when the process
  dies); yields True when held, False where file locks are unavailable."""
  path = _lock_path(builder)
  fd = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      log.warning('waiting for another process preparing %s/%s (lock %s)', builder.name,
                  builder.builder_config.name, path)
      fcntl.flock(fd, fcntl.LOCK_EX)
  except OSError as e:
    if fd is not None:
      os.close(fd)
      fd = None
    if e.errno not in workdir.NO_FILE_LOCKS + (errno.EACCES, errno.EROFS, errno.EPERM):
      raise
    log.warning('no file lock for preparing %s (%s); leftover incomplete.* directories are kept',
                builder.name, e)
  try:
    yield fd is not None
  finally:
    if fd is not None:
      os.close(fd)  # releases the lock


def remove_stale_incomplete_dirs(builder, *, quiet: bool = False) -> list[str]:
  """Deletes the `incomplete.*` directories of builder's config (call holding its lock: then no
  live preparation is writing one). Returns the deleted paths; `quiet`: without the warning."""
  parent = glob.escape(os.path.dirname(os.fspath(builder.data_path)))
  removed = sorted(filter(os.path.isdir, glob.glob(os.path.join(parent, INCOMPLETE_PREFIX + '*'))))
  for path in removed:
    shutil.rmtree(path, ignore_errors=True)
  if removed and not quiet:
    log.warning('deleted %d leftover incomplete preparation(s) of %s/%s: %s', len(removed),
                builder.name, builder.builder_config.name, ', '.join(removed))
  return removed


def prepare(config, sample_rate: int) -> audio_builder.AudioClipBuilder:
  """The prepared builder for `config.dataset` at `sample_rate` (prepared on first use)."""
  field = functools.partial(custom.config_field, config)
  if config.dataset == custom.DATASET:
    builder, manual_dir = custom.get_builder(config, sample_rate), None
  else:
    builder = get_builder(config.dataset, sample_rate, data_dir=field('data_dir'),
                          skip_bad_files=bool(field('skip_bad_files', False)))
    manual_dir = field('manual_dir')
  prepare_builder(builder, manual_dir=manual_dir)
  return builder


def dataset_info(config) -> DatasetInfo:
  """Static facts about `config.dataset` (no preparation, no audio decoded; 'custom' lists
  the user's folder or reads the csv)."""
  facts = (custom.scan_config(config) if config.dataset == custom.DATASET
           else _entry(config.dataset))
  return DatasetInfo(name=config.dataset, num_classes=len(facts.class_names),
                     class_names=tuple(facts.class_names), num_folds=facts.num_folds)


def check_fold(config, info: DatasetInfo) -> int:
  """config.fold as the one test fold of `info` (an integer in 1..info.num_folds), else ValueError
  naming the field; the data loaders need one fold ('all' is split into folds by the trainer)."""
  if not layouts.is_int_in(config.fold, 1, info.num_folds):
    raise ValueError(f'config.fold={config.fold!r} but the data loaders need one test fold of '
                     f'{info.name}: an integer in 1..{info.num_folds}')
  return int(config.fold)
