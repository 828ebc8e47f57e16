"""TFDS builder `custom_audio`: your own labelled sounds (`config.dataset='custom'`).

Two layouts: `audio_dir=DIR` (DIR/<class>/<files>) or `metadata_csv=FILE.csv` (columns
`filename,label[,fold]`); classes, folds (`assign_folds` without a fold column), accepted audio,
bad files and the cache under `config.data_dir`/custom_audio/<folder>_<fingerprint>_sr<rate>/:
docs/own_data_and_models.md §1. Malformed layouts raise `LayoutError` naming the file (and line).

    layout = custom.scan(audio_dir='my_sounds')             # no audio decoded
    builder = custom.get_builder(config, 16000)  # reads config.audio_dir, metadata_csv, num_folds
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from intermix_jax import config_lib
from intermix_jax.data import audio_builder
from intermix_jax.data import audio_decode
from intermix_jax.data import layouts

DATASET = 'custom'  # the config.dataset value
AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.oga', '.opus', '.mp3', '.aif', '.aiff')
DEFAULT_NUM_FOLDS = 5
# The config fields of configs/custom.py besides every config's (config_lib.FIELDS).
CONFIG_FIELDS = (
    config_lib.Field('audio_dir', None, 'the folder of YOUR audio: <audio_dir>/<class>/<files>, or '
                     "(with metadata_csv) the folder the csv's file names are relative to (None: "
                     "the csv's folder)", str),
    config_lib.Field('metadata_csv', None, 'a csv with columns filename,label[,fold] (labels any '
                     'strings); None: the folder layout of audio_dir', str),
    config_lib.Field('num_folds', DEFAULT_NUM_FOLDS, 'folds assigned (stratified, deterministic) '
                     'when there is no fold column; >= 2'),
)
_EXTENSIONS = ' '.join(AUDIO_EXTENSIONS)
MAX_FOLDS = 1000
AUDIO_EXPECTATION = audio_decode.AudioExpectation(
    subtypes=audio_decode.SUPPORTED_SUBTYPES | audio_decode.COMPRESSED_SUBTYPES)

log = logging.getLogger(__name__)


class CustomConfigError(config_lib.ConfigError):
  """A config field for dataset='custom' is missing or unusable (the message names it); a
  ConfigError, so `intermix_jax.main` prints it as one line."""


@dataclasses.dataclass(frozen=True)
class CustomLayout:
  """A scanned user dataset (file list, labels, folds; no audio decoded).

  Attributes:
    root: absolute folder the file names are relative to.
    metadata_csv: absolute csv path, or '' for the folder layout.
    class_names: C names; label index = position.
    records: ClipRecords (filename = path relative to root with '/' separators, or the csv's
      `filename` as written), in folder order (class, then name) or csv order.
    num_folds: K; folds are 1..K and each holds clips.
    folds_assigned: True when folds were assigned by `assign_folds` (no fold column).
    fingerprint: 12 hex digits identifying the file list, labels, folds, sizes and mtimes.
  """
  root: str
  metadata_csv: str
  class_names: tuple[str, ...]
  records: tuple[layouts.ClipRecord, ...]
  num_folds: int
  folds_assigned: bool
  fingerprint: str

  def config_name(self, sample_rate: int) -> str:
    """TFDS config name, e.g. 'my_sounds_3fa9c02e11d4_sr16000'."""
    slug = re.sub(r'[^a-z0-9]+', '_', os.path.basename(self.root.rstrip(os.sep)).lower())
    slug = slug.strip('_')[:40] or 'audio'
    return audio_builder.config_name(sample_rate, f'{slug}_{self.fingerprint}_')


def sort_class_names(labels) -> tuple[str, ...]:
  """Distinct labels, sorted numerically when every label is an integer, else as strings."""
  names = sorted(set(labels))
  if names and all(re.fullmatch(r'[+-]?\d+', n) for n in names):
    names.sort(key=lambda n: (int(n), n))
  return tuple(names)


def assign_folds(filenames, labels, num_folds: int) -> np.ndarray:
  """Deterministic stratified k-fold: int32 (N,) folds in 1..num_folds.

  For class c (the c-th label in sorted order) with n files, its i-th file by sorted name goes to
  fold ((i * K) // n + c) mod K + 1 (why: docs/own_data_and_models.md, "Folds").

  Args:
    filenames: N unique strings. labels: N labels (any sortable hashable values).
    num_folds: K >= 1.
  """
  filenames, labels = list(filenames), list(labels)
  if len(filenames) != len(labels):
    raise ValueError(f'assign_folds: {len(filenames)} filenames but {len(labels)} labels')
  folds = np.zeros(len(filenames), np.int32)
  for c, label in enumerate(sorted(set(labels))):
    members = sorted((f, i) for i, (f, lab) in enumerate(zip(filenames, labels)) if lab == label)
    n = len(members)
    for rank, (_, i) in enumerate(members):
      folds[i] = ((rank * num_folds) // n + c) % num_folds + 1
  return folds


def is_audio_file(name: str) -> bool:
  return name.lower().endswith(AUDIO_EXTENSIONS) and not os.path.basename(name).startswith('.')


def list_audio_files(folder: str) -> tuple[list[str], int]:
  """(sorted audio file paths under `folder`, recursively; number of other files ignored); hidden
  files and folders (name starting with '.') are skipped."""
  found, ignored = [], 0
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    visible = [f for f in filenames if not f.startswith('.')]
    found += [os.path.join(dirpath, f) for f in visible if is_audio_file(f)]
    ignored += sum(not is_audio_file(f) for f in visible)
  return sorted(found), ignored


def _scan_folder(root: str) -> list[tuple[str, str, str]]:
  """[(filename relative to root, absolute path, label)] of the class-folder layout."""
  entries = sorted(os.listdir(root))
  loose = [e for e in entries if is_audio_file(e) and os.path.isfile(os.path.join(root, e))]
  if loose:
    raise layouts.LayoutError(
        f'{root}: audio files directly in the dataset folder ({", ".join(loose[:3])}'
        f'{", ..." if len(loose) > 3 else ""}); put each class\'s files in a sub-folder named '
        'after the class, or describe the files in a csv (metadata_csv)')
  classes = [e for e in entries if not e.startswith('.') and os.path.isdir(os.path.join(root, e))]
  if not classes:
    csvs = [e for e in entries if e.lower().endswith('.csv')]
    hint = (f'; to use {csvs[0]!r}, set metadata_csv={os.path.join(root, csvs[0])}' if csvs
            else '')
    raise layouts.LayoutError(f'{root}: no class sub-folders; expected {root}/<class>/<audio '
                              f'files> ({_EXTENSIONS}){hint}')
  items, ignored_total = [], 0
  for c in classes:
    files, ignored = list_audio_files(os.path.join(root, c))
    ignored_total += ignored
    if not files:
      raise layouts.LayoutError(f'{os.path.join(root, c)}: class folder {c!r} holds no audio file '
                                f'({_EXTENSIONS})')
    items += [(os.path.relpath(path, root).replace(os.sep, '/'), path, c) for path in files]
  if ignored_total:
    log.warning('%s: ignored %d file(s) that are not audio (%s)', root, ignored_total,
                _EXTENSIONS)
  return items


def _scan_csv(csv_path: str, root: str) -> tuple[list[tuple[str, str, str]], list[int] | None]:
  """[(filename, absolute path, label)] and the folds (None without a fold column) of a csv."""
  if not os.path.isfile(csv_path):
    raise CustomConfigError(f'config.metadata_csv={csv_path!r} is not a file')
  rows = layouts.read_csv(csv_path, ('filename', 'label'))
  if not rows:
    raise layouts.LayoutError(f'{csv_path}: no rows (expected columns filename,label[,fold])')
  has_fold = 'fold' in rows[0][1]
  items, folds = [], [] if has_fold else None
  for line, row in rows:
    name, label = ((row.get(column) or '').strip() for column in ('filename', 'label'))
    for column, value in (('filename', name), ('label', label)):
      if not value:
        raise layouts.LayoutError(f'{csv_path}, line {line}: column {column!r} is empty')
    if has_fold:
      folds.append(layouts.int_field(csv_path, line, row, 'fold', 1, MAX_FOLDS))
    items.append((name, os.path.join(root, name), label))
  return items, folds


def scan(audio_dir: str | None = None, metadata_csv: str | None = None,
         num_folds: int | None = DEFAULT_NUM_FOLDS) -> CustomLayout:
  """Reads the layout of a user dataset (see module docstring); decodes no audio.

  Args:
    audio_dir, metadata_csv, num_folds: as the config fields of these names (CONFIG_FIELDS;
      num_folds None: DEFAULT_NUM_FOLDS).

  Raises:
    CustomConfigError: neither given, a path that does not exist, num_folds < 2.
    layouts.LayoutError: a malformed csv or folder (naming it), fewer than 2 classes, a fold of
      the csv without clips, more folds than files.
  """
  num_folds = DEFAULT_NUM_FOLDS if num_folds is None else num_folds
  if not layouts.is_int_in(num_folds, 2, MAX_FOLDS):
    raise CustomConfigError(f'config.num_folds={num_folds!r}: cross-validation needs an integer '
                            f'number of folds in 2..{MAX_FOLDS}')
  num_folds = int(num_folds)
  if not audio_dir and not metadata_csv:
    raise CustomConfigError(
        "dataset='custom' needs config.audio_dir (a folder of class sub-folders of audio files) "
        'or config.metadata_csv (a csv with columns filename,label[,fold]). Note: config.data_dir '
        'is where the prepared TFDS copy is written, not the folder of your audio.')
  full_path = lambda p: os.path.abspath(os.path.expanduser(os.fspath(p))) if p else ''
  csv_path = full_path(metadata_csv)
  root = full_path(audio_dir) or os.path.dirname(csv_path)  # names in a csv: relative to its folder
  if audio_dir and not os.path.isdir(root):
    raise CustomConfigError(f'config.audio_dir={audio_dir!r} is not a directory')
  items, folds = _scan_csv(csv_path, root) if csv_path else (_scan_folder(root), None)
  if csv_path and not any(os.path.exists(path) for _, path, _ in items):
    # Nothing resolves: the folder the names resolve against is wrong, not the files.
    raise layouts.LayoutError(
        f'{csv_path}: none of the {len(items)} files it lists exists; '
        f'{resolution(csv_path, root, bool(audio_dir), *items[0][:2], hint=True)}')
  where = csv_path or root
  layouts.check_unique(where, [layouts.ClipRecord(name, path, 0, 0) for name, path, _ in items])

  class_names = sort_class_names(label for _, _, label in items)
  if len(class_names) < 2:
    raise layouts.LayoutError(f'{where}: found {len(class_names)} class(es) {list(class_names)}; '
                              'a classifier needs at least 2')
  index = {name: i for i, name in enumerate(class_names)}
  assigned = folds is None
  if assigned:
    if len(items) < num_folds:
      raise layouts.LayoutError(f'{where}: {len(items)} file(s) cannot fill num_folds={num_folds} '
                                'folds; lower config.num_folds or add files')
    folds = assign_folds([n for n, _, _ in items], [label for _, _, label in items],
                         num_folds).tolist()
  else:
    num_folds = max(folds)
    if num_folds < 2:
      raise layouts.LayoutError(f'{where}: column fold has only fold 1; cross-validation needs '
                                'folds 1..K with K >= 2 (or drop the column to assign folds)')
    empty = sorted(set(range(1, num_folds + 1)) - set(folds))
    if empty:
      raise layouts.LayoutError(f'{where}: column fold goes up to {num_folds} but fold(s) '
                                f'{empty} hold no clip; number the folds 1..K without gaps')
  records = tuple(layouts.ClipRecord(name, path, int(fold), index[label])
                  for (name, path, label), fold in zip(items, folds))
  # A missing file counts as (-1, -1): reported per file when decoding.
  files = [(r.filename, r.label, r.fold) + layouts.size_and_mtime(r.path) for r in records]
  fingerprint = layouts.json_digest([str(CustomAudio.VERSION), root, csv_path, list(class_names),
                                     num_folds, files], ensure_ascii=True)
  return CustomLayout(root=root, metadata_csv=csv_path, class_names=class_names, records=records,
                      num_folds=num_folds, folds_assigned=assigned, fingerprint=fingerprint)


def resolution(csv_path: str, root: str, audio_dir_given: bool, filename: str, path: str, *,
               hint: bool = False) -> str:
  """How the csv's file names resolve, shown on a missing file (`filename` as the csv writes it,
  `path` what it resolved to); one line. `hint` adds which field to set."""
  against = (f'config.audio_dir={root}' if audio_dir_given else
             f"the csv's own folder {os.path.dirname(csv_path)} (config.audio_dir is not set)")
  if os.path.isabs(filename):
    return (f'file names resolve against {against} unless absolute; e.g. {filename!r} '
            '(absolute) is missing')
  if hint:
    hint = ('; set audio_dir to the folder the names are relative to' if not audio_dir_given
            else '; is audio_dir the folder the names are relative to?')
  return (f'file names resolve against {against}: e.g. {filename!r} -> {path} '
          f'is missing{hint or ""}')


def config_field(config, name, default=None):
  """config.<name> of a ConfigDict, dict or object (`default` when it has none)."""
  return config.get(name, default) if hasattr(config, 'get') else getattr(config, name, default)


def scan_config(config) -> CustomLayout:
  """`scan` with config.audio_dir, config.metadata_csv and config.num_folds (CONFIG_FIELDS)."""
  return scan(**{f.key: config_field(config, f.key) for f in CONFIG_FIELDS})


@dataclasses.dataclass(eq=False)
class CustomConfig(audio_builder.SampleRateConfig):
  """A user dataset at `sample_rate` Hz (name = `layout.config_name(sample_rate)`): the
  `CustomLayout` scanned when the builder was made."""
  layout: CustomLayout | None = dataclasses.field(default=None, repr=False)


class CustomAudio(audio_builder.AudioClipBuilder):
  """A user's own labelled audio files (folder of class sub-folders, or a csv)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: int16 mono, resampled with soxr, no trimming.'}
  BUILDER_CONFIGS = []  # one config per user dataset and rate, made by `get_builder`
  AUDIO_EXPECTATION = AUDIO_EXPECTATION
  DESCRIPTION = ('Your own audio: a folder of class sub-folders, or a csv with columns '
                 'filename,label[,fold]; resampled to the config\'s rate, mono, int16.')

  def class_names(self):
    return self.builder_config.layout.class_names

  def num_folds(self):
    return self.builder_config.layout.num_folds

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are local
    made = self.builder_config.layout
    # K is what `scan` assigns without a fold column, and is checked against the fold column.
    layout = scan(made.root, made.metadata_csv or None, made.num_folds)
    if layout.fingerprint != made.fingerprint:
      raise layouts.LayoutError(
          f'{layout.metadata_csv or layout.root}: the files changed since this builder was made '
          f'(fingerprint {layout.fingerprint}, expected {made.fingerprint}); run again')
    self.info.metadata['folds_assigned'] = layout.folds_assigned
    return self._fold_splits(layout.metadata_csv or layout.root, list(layout.records))


def get_builder(config, sample_rate: int) -> CustomAudio:
  """The (maybe unprepared) builder of the user dataset of `config` at `sample_rate` Hz."""
  layout = scan_config(config)
  skip_bad_files = bool(config_field(config, 'skip_bad_files', False))
  missing = [r for r in layout.records if layout.metadata_csv and not os.path.exists(r.path)]
  if missing and not skip_bad_files:  # some do exist (`scan` refuses a csv of which none does)
    how = resolution(layout.metadata_csv, layout.root, bool(config_field(config, 'audio_dir')),
                     missing[0].filename, missing[0].path)
    raise audio_decode.BadAudioFileError(missing[0].path, (
        f'file is missing: {len(missing)} of the {len(layout.records)} files listed in '
        f'{layout.metadata_csv} are missing; {how}. Fix the csv, or set skip_bad_files=True '
        '(config.skip_bad_files) to skip the missing files'))
  builder_config = CustomConfig(
      name=layout.config_name(sample_rate), sample_rate=int(sample_rate), subset=DATASET,
      description=f'{layout.metadata_csv or layout.root} at {int(sample_rate)} Hz', layout=layout)
  # TFDS logs 'Using custom data configuration' for every user dataset: dropped.
  quiet = lambda record: not str(record.msg).startswith('Using custom data configuration')
  logging.getLogger('absl').addFilter(quiet)
  try:
    return CustomAudio(data_dir=config_field(config, 'data_dir'), config=builder_config,
                       file_format='array_record', skip_bad_files=skip_bad_files)
  finally:
    logging.getLogger('absl').removeFilter(quiet)
