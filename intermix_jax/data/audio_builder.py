"""Common base of the audio TFDS builders: features, one config per sample rate, bad-file policy.

Per clip: audio int16 (n,) mono at the config's `sample_rate` (a `tfds.features.Tensor`: no
TensorFlow), label, filename (unique key) and fold (int32, 1-based; split `fold<k>` holds fold k).

The prepared copy's metadata (`builder.info.metadata`): sample_rate (Hz); skipped_files [[path,
problem]] and skipped_clips (dicts: path, filename, fold, label, problem) of the bad files skipped;
source (the folder or csv read); source_fingerprint (`layouts.content_fingerprint` of the records
read, compared by `catalog.check_prepared`); source_clips (records listed); source_sample_rates
({native Hz as text: clips}; absent for generated data and older copies). data/README.md.
"""
import collections
import dataclasses
import inspect
import logging
import warnings
from typing import Iterable, Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from intermix_jax.data import audio_decode
from intermix_jax.data import layouts

SAMPLE_RATES = (8000, 16000, 22050, 44100)  # M18, EnvNet, SoundNet5/PiczakCNN, EnvNet-v2

log = logging.getLogger(__name__)

_show_tfds_lines = True  # TFDS's own lines printed when preparing: `quiet_preparation`


def quiet_preparation(quiet: bool = True) -> None:
  """Hides (quiet=True) or shows TFDS's progress bars and the lines TFDS prints (with `print`)
  when a builder here is prepared (data/README.md)."""
  global _show_tfds_lines
  _show_tfds_lines = not quiet
  if quiet:
    tfds.disable_progress_bar()
  else:
    tfds.enable_progress_bar()


class SkippedFilesWarning(UserWarning):
  """Some input files were bad and skipped (`skip_bad_files=True`)."""


@dataclasses.dataclass(eq=False)
class SampleRateConfig(tfds.core.BuilderConfig):
  """A builder config: clips resampled to `sample_rate` Hz; `subset` selects a variant."""
  sample_rate: int = 16000
  subset: str = ''


def sample_rate_configs(prefix: str = '', subset: str = '',
                        rates: Iterable[int] = SAMPLE_RATES) -> list[SampleRateConfig]:
  return [SampleRateConfig(name=config_name(rate, prefix), sample_rate=rate, subset=subset,
                           description=f'{subset or "clips"} at {rate} Hz')
          for rate in rates]


def config_name(sample_rate: int, prefix: str = '') -> str:
  """E.g. config_name(16000, 'esc10_') == 'esc10_sr16000'; ValueError unless `sample_rate` is a
  positive integer number of Hz."""
  if int(sample_rate) != sample_rate or sample_rate <= 0:
    raise ValueError(f'sample_rate must be a positive integer number of Hz, got {sample_rate!r}')
  return f'{prefix}sr{int(sample_rate)}'


class AudioClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base class. Subclasses define VERSION, BUILDER_CONFIGS, CLASS_NAMES and NUM_FOLDS (or
  `class_names()`, `num_folds()` where the config decides), `_split_generators` (usually
  returning `_fold_splits(source, records)`) and DESCRIPTION."""

  DESCRIPTION = ''
  HOMEPAGE = ''
  CITATION = ''
  READS_SOURCE_FILES = True  # False: generated data (manual_dir is ignored)
  TRIMS_ZEROS = False  # True: clips lose leading/trailing exact-zero samples (ESC protocol)
  AUDIO_EXPECTATION = audio_decode.AudioExpectation()  # accepted channels, rates, sample formats
  CLASS_NAMES: tuple[str, ...] = ()  # C names, index = label
  NUM_FOLDS = 0  # K: splits fold1..foldK

  def __init__(self, *, skip_bad_files: bool = False, **kwargs):
    """Args: skip_bad_files: skip unusable input files with a warning instead of failing;
    **kwargs: tfds.core.GeneratorBasedBuilder arguments (data_dir, config, file_format...)."""
    self.skip_bad_files = bool(skip_bad_files)
    self._skipped: list[dict] = []  # path, filename, fold, label, problem of skipped files
    self._source_rates = collections.Counter()  # native rate (Hz) -> clips read
    super().__init__(**kwargs)

  def source_root(self, manual_dir) -> str | None:
    """The root of the local copy a preparation would read now (config.manual_dir, else TFDS's
    default manual dir), or None (no local copy: generated data or the download)."""
    del manual_dir
    return None

  def source_records(self, root: str) -> list[layouts.ClipRecord]:
    """The records a preparation from the copy at `root` would read (no audio decoded)."""
    raise NotImplementedError

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """The builder's source file (without TFDS's lookup, which imports `importlib_resources`)."""
    return epath.Path(inspect.getfile(cls))

  def class_names(self) -> tuple[str, ...]:
    return self.CLASS_NAMES

  def num_folds(self) -> int:
    return self.NUM_FOLDS

  @property
  def sample_rate(self) -> int:
    return self.builder_config.sample_rate

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'audio': tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding='bytes'),
            'label': tfds.features.ClassLabel(names=list(self.class_names())),
            'filename': tfds.features.Text(),
            'fold': tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=('audio', 'label'),
        homepage=self.HOMEPAGE or None,
        citation=self.CITATION or None,
        metadata=tfds.core.MetadataDict(),
    )

  def _log_download_bytes(self) -> None:
    if _show_tfds_lines:
      super()._log_download_bytes()

  def _log_download_done(self) -> None:
    if _show_tfds_lines:
      super()._log_download_done()

  def _download_and_prepare(self, dl_manager, download_config=None):
    self._skipped = []
    self._source_rates.clear()
    super()._download_and_prepare(dl_manager, download_config)
    self.info.metadata['sample_rate'] = self.sample_rate
    if self.READS_SOURCE_FILES:
      self.info.metadata['source_sample_rates'] = {
          str(rate): n for rate, n in sorted(self._source_rates.items())}
    self.info.metadata['skipped_files'] = [[s['path'], s['problem']] for s in self._skipped]
    self.info.metadata['skipped_clips'] = list(self._skipped)
    if self._skipped:
      listing = '\n'.join(f'  {s["path"]}: {s["problem"]}' for s in self._skipped)
      warnings.warn(SkippedFilesWarning(
          f'{self.name}/{self.builder_config.name}: skipped {len(self._skipped)} bad '
          f'file(s) (skip_bad_files=True):\n{listing}'), stacklevel=2)

  def _fold_splits(self, source: str, records: list[layouts.ClipRecord]) -> dict:
    """{'fold<k>': example generator} for k = 1..num_folds (records grouped by fold)."""
    self.info.metadata['source'] = source
    self.info.metadata['source_fingerprint'] = layouts.content_fingerprint(
        records, self.class_names())
    self.info.metadata['source_clips'] = len(records)
    splits = {}
    for k in range(1, self.num_folds() + 1):
      fold_records = [r for r in records if r.fold == k]
      if not fold_records:
        raise layouts.LayoutError(
            f'{self.name}: the metadata csv lists no clip of fold {k}; every fold 1..'
            f'{self.num_folds()} needs clips (cross-validation tests on each fold)')
      splits[f'fold{k}'] = self._generate_examples(fold_records)
    return splits

  def _generate_examples(self, records: list[layouts.ClipRecord]) -> Iterator:
    """Decodes each file (trim=TRIMS_ZEROS); bad files raise or (skip_bad_files) are listed."""
    yielded = 0
    for r in records:
      try:
        audio, native_rate = audio_decode.load_audio_and_rate(
            r.path, self.sample_rate, trim=self.TRIMS_ZEROS, expect=self.AUDIO_EXPECTATION)
      except audio_decode.BadAudioFileError as e:
        if not self.skip_bad_files:
          raise audio_decode.BadAudioFileError(
              e.path, f'{e.problem}. Fix or remove the file, or set skip_bad_files=True '
              '(config.skip_bad_files) to skip bad files.') from e
        log.warning('skipping bad file %s', e)
        self._skipped.append(dict(path=e.path, filename=r.filename, fold=int(r.fold),
                                  label=int(r.label), problem=e.problem))
        continue
      yielded += 1
      self._source_rates[native_rate] += 1
      yield r.filename, {'audio': audio, 'label': r.label, 'filename': r.filename,
                         'fold': r.fold}
    if not yielded:
      raise audio_decode.BadAudioFileError(
          records[0].path, f'every one of the {len(records)} files of fold {records[0].fold} is '
          'bad (each one is logged above): no clip is left for this fold')


def resampling_note(source_sample_rates, sample_rate: int) -> str | None:
  """One line saying how clips at other rates were resampled to `sample_rate`; None when every
  clip is at `sample_rate` or the rates are unknown.

  Args:
    source_sample_rates: the metadata's {native rate in Hz (text or int): clips}, or None.
    sample_rate: Hz the clips were resampled to (the backbone's).
  """
  rates = {int(r): int(n) for r, n in (source_sample_rates or {}).items()}
  if not rates or set(rates) == {int(sample_rate)}:
    return None
  listing = ', '.join(f'{r} Hz' + (f' ({n} clips)' if len(rates) > 1 else '')
                      for r, n in sorted(rates.items()))
  what = []
  up = [r for r in sorted(rates) if r < sample_rate]
  down = [r for r in sorted(rates) if r > sample_rate]
  if up:
    nyquist = ', '.join(f'{r / 2:g}' for r in up)
    what.append(f'upsampled from {", ".join(map(str, up))} Hz, so nothing above '
                + (f'{nyquist} Hz (the source\'s Nyquist frequency)' if len(up) == 1 else
                   f'each source\'s Nyquist frequency ({nyquist} Hz)') + ' is real signal')
  if down:
    what.append(f'downsampled from {", ".join(map(str, down))} Hz, so content above '
                f'{sample_rate / 2:g} Hz is removed')
  return (f'source audio at {listing} resampled to {int(sample_rate)} Hz, the backbone\'s rate: '
          f'{"; ".join(what)} (source_sample_rates in dataset.json and results.json)')
