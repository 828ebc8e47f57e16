"""TFDS builders `esc50` and `urbansound8k`: the official datasets, one split per fold.

Configs: `esc50_sr{rate}` (50 classes) and `esc10_sr{rate}` (the 400 esc10 clips relabelled in
docs/method.md §5 order 0,10,11,20,38,21,40,41,1,12 -> 0..9), and UrbanSound8K's `sr{rate}`, for
rate in `audio_builder.SAMPLE_RATES`; any other rate via a `SampleRateConfig` (e.g.
`Esc50(config=SampleRateConfig(name='esc50_sr11025', sample_rate=11025, subset='esc50'))`).
Splits `fold1`..`fold5` (ESC) and `fold1`..`fold10` (UrbanSound8K). ESC clips are trimmed of
leading/trailing exact-zero samples after resampling (the ESC protocol); UrbanSound8K's are not.

    builder = Esc50(data_dir=..., config='esc10_sr16000', file_format='array_record')
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))
    source = builder.as_data_source(split='fold1')   # random access, no TensorFlow
"""
import tensorflow_datasets as tfds

from intermix_jax.data import audio_builder
from intermix_jax.data import layouts
from intermix_jax.data import sources

ESC_SUBSETS = ('esc50', 'esc10')


def _instructions(what: str, layout: str, url: str) -> str:
  return (f'To prepare {what} offline, give a local copy of the official layout: set\n'
          'config.manual_dir (or tfds DownloadConfig(manual_dir=...)) to a directory holding\n'
          f'  {layout}\n(e.g. the extracted {url}, or the archive itself).\n')


class _OfficialBuilder(audio_builder.AudioClipBuilder, skip_registration=True):
  """A builder of an official layout: subclasses set WHAT (for messages), FIND_ROOT (a
  `layouts.find_*_root`), DOWNLOAD_URL, MANUAL_DOWNLOAD_INSTRUCTIONS and `source_records`."""

  WHAT = ''
  FIND_ROOT = None

  def source_root(self, manual_dir):
    return sources.local_root(manual_dir, self.data_dir_root / 'downloads', type(self).FIND_ROOT)

  def _split_generators(self, dl_manager):
    root = sources.locate(dl_manager, what=self.WHAT, url=self.DOWNLOAD_URL,
                          find_root=type(self).FIND_ROOT,
                          instructions=self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    records = self.source_records(root)
    self._record_source(root, records)
    return self._fold_splits(records, trim=self.TRIMS_ZEROS)


class Esc50(_OfficialBuilder):
  """ESC-50 / ESC-10 (Piczak 2015): 5 s environmental sound clips, 5 folds."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: int16 mono, resampled with soxr, zero-trimmed.'}
  BUILDER_CONFIGS = [c for subset in ESC_SUBSETS
                     for c in audio_builder.sample_rate_configs(f'{subset}_', subset)]
  DEFAULT_BUILDER_CONFIG_NAME = 'esc50_sr44100'
  TRIMS_ZEROS = True
  WHAT = 'ESC-50'
  FIND_ROOT = staticmethod(layouts.find_esc50_root)
  DOWNLOAD_URL = 'https://github.com/karolpiczak/ESC-50/archive/master.zip'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(
      'ESC-50 / ESC-10', 'audio/*.wav  and  meta/esc50.csv', DOWNLOAD_URL)
  DESCRIPTION = ('ESC-50: 2000 labelled 5-second environmental recordings, 50 classes, 5 folds; '
                 'ESC-10: its 400-clip, 10-class subset.')
  HOMEPAGE = 'https://github.com/karolpiczak/ESC-50'
  CITATION = ('K. J. Piczak. ESC: Dataset for Environmental Sound Classification. '
              'ACM Multimedia 2015. doi:10.1145/2733373.2806390')

  @property
  def subset(self) -> str:
    subset = self.builder_config.subset
    if subset not in ESC_SUBSETS:
      raise ValueError(f'esc50 builder config {self.builder_config.name!r}: subset is '
                       f'{subset!r}, expected one of {ESC_SUBSETS}')
    return subset

  def class_names(self):
    return layouts.ESC10_CLASS_NAMES if self.subset == 'esc10' else layouts.ESC50_CLASS_NAMES

  def num_folds(self):
    return layouts.ESC_NUM_FOLDS

  def source_records(self, root):
    return layouts.read_esc50(root, esc10=self.subset == 'esc10')


class Urbansound8k(_OfficialBuilder):
  """UrbanSound8K (Salamon et al. 2014): 8732 urban sound excerpts <= 4 s, 10 classes, 10 folds."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: int16 mono, resampled with soxr.'}
  BUILDER_CONFIGS = audio_builder.sample_rate_configs('', 'urbansound8k')
  DEFAULT_BUILDER_CONFIG_NAME = 'sr44100'
  WHAT = 'UrbanSound8K'
  FIND_ROOT = staticmethod(layouts.find_urbansound8k_root)
  DOWNLOAD_URL = 'https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(
      'UrbanSound8K', 'audio/fold1..fold10/*.wav  and  metadata/UrbanSound8K.csv', DOWNLOAD_URL)
  DESCRIPTION = 'UrbanSound8K: 8732 labelled urban sound excerpts (<= 4 s), 10 classes, 10 folds.'
  HOMEPAGE = 'https://urbansounddataset.weebly.com/urbansound8k.html'
  CITATION = ('J. Salamon, C. Jacoby, J. P. Bello. A Dataset and Taxonomy for Urban Sound '
              'Research. ACM Multimedia 2014.')

  def class_names(self):
    return layouts.URBANSOUND8K_CLASS_NAMES

  def num_folds(self):
    return layouts.URBANSOUND8K_NUM_FOLDS

  def source_records(self, root):
    return layouts.read_urbansound8k(root)
