"""TFDS builder `urbansound8k`: UrbanSound8K, one split per predefined fold, one config per rate.

Configs `sr8000`, `sr16000`, `sr22050`, `sr44100` (any other rate via a `SampleRateConfig`);
splits `fold1`..`fold10`. Clips (<= 4 s, mixed native rates, bit depths and channel counts) are
decoded with soundfile, downmixed, resampled with soxr; no zero trimming (ESC-only protocol).
"""
import tensorflow_datasets as tfds

from intermix_jax.data import audio_builder
from intermix_jax.data import layouts
from intermix_jax.data import sources

_INSTRUCTIONS = """\
To prepare UrbanSound8K offline, give a local copy of the official layout: set
config.manual_dir (or tfds DownloadConfig(manual_dir=...)) to a directory holding
  audio/fold1..fold10/*.wav  and  metadata/UrbanSound8K.csv
(e.g. the extracted https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz, or the archive).
"""


class Urbansound8k(audio_builder.AudioClipBuilder):
  """UrbanSound8K (Salamon et al. 2014): 8732 urban sound excerpts <= 4 s, 10 classes, 10 folds."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: int16 mono, resampled with soxr.'}
  BUILDER_CONFIGS = audio_builder.sample_rate_configs('', 'urbansound8k')
  DEFAULT_BUILDER_CONFIG_NAME = 'sr44100'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  DOWNLOAD_URL = 'https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz'
  DESCRIPTION = 'UrbanSound8K: 8732 labelled urban sound excerpts (<= 4 s), 10 classes, 10 folds.'
  HOMEPAGE = 'https://urbansounddataset.weebly.com/urbansound8k.html'
  CITATION = ('J. Salamon, C. Jacoby, J. P. Bello. A Dataset and Taxonomy for Urban Sound '
              'Research. ACM Multimedia 2014.')

  def class_names(self):
    return layouts.URBANSOUND8K_CLASS_NAMES

  def num_folds(self):
    return layouts.URBANSOUND8K_NUM_FOLDS

  def source_root(self, manual_dir):
    return sources.local_root(manual_dir, self.data_dir_root / 'downloads',
                              layouts.find_urbansound8k_root)

  def source_records(self, root):
    return layouts.read_urbansound8k(root)

  def _split_generators(self, dl_manager):
    root = sources.locate(dl_manager, what='UrbanSound8K', url=self.DOWNLOAD_URL,
                          find_root=layouts.find_urbansound8k_root, instructions=_INSTRUCTIONS)
    records = self.source_records(root)
    self._record_source(root, records)
    return self._fold_splits(records, trim=False)
