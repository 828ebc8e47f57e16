"""TFDS builder `esc50`: ESC-50 and its ESC-10 subset, one split per fold, one config per rate.

Configs: `esc50_sr{rate}` (50 classes) and `esc10_sr{rate}` (the 400 esc10 clips relabelled in
docs/method.md §5 order 0,10,11,20,38,21,40,41,1,12 -> 0..9) for rate in 8000, 16000, 22050, 44100;
any other rate via `Esc50(config=SampleRateConfig(name='esc50_sr11025', sample_rate=11025,
subset='esc50'))`. Splits `fold1`..`fold5`. Clips are trimmed of leading/trailing exact-zero
samples after resampling (the ESC protocol).

    builder = Esc50(data_dir=..., config='esc10_sr16000', file_format='array_record')
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))
    source = builder.as_data_source(split='fold1')   # random access, no TensorFlow
"""
import tensorflow_datasets as tfds

from intermix_jax.data import audio_builder
from intermix_jax.data import layouts
from intermix_jax.data import sources

SUBSETS = ('esc50', 'esc10')

_INSTRUCTIONS = """\
To prepare ESC-50 / ESC-10 offline, give a local copy of the official layout: set
config.manual_dir (or tfds DownloadConfig(manual_dir=...)) to a directory holding
  audio/*.wav  and  meta/esc50.csv
(e.g. the extracted https://github.com/karolpiczak/ESC-50/archive/master.zip, or the zip itself).
"""


class Esc50(audio_builder.AudioClipBuilder):
  """ESC-50 / ESC-10 (Piczak 2015): 5 s environmental sound clips, 5 folds."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: int16 mono, resampled with soxr, zero-trimmed.'}
  BUILDER_CONFIGS = [c for subset in SUBSETS
                     for c in audio_builder.sample_rate_configs(f'{subset}_', subset)]
  DEFAULT_BUILDER_CONFIG_NAME = 'esc50_sr44100'
  TRIMS_ZEROS = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  DOWNLOAD_URL = 'https://github.com/karolpiczak/ESC-50/archive/master.zip'
  DESCRIPTION = ('ESC-50: 2000 labelled 5-second environmental recordings, 50 classes, 5 folds; '
                 'ESC-10: its 400-clip, 10-class subset.')
  HOMEPAGE = 'https://github.com/karolpiczak/ESC-50'
  CITATION = ('K. J. Piczak. ESC: Dataset for Environmental Sound Classification. '
              'ACM Multimedia 2015. doi:10.1145/2733373.2806390')

  @property
  def subset(self) -> str:
    subset = self.builder_config.subset
    if subset not in SUBSETS:
      raise ValueError(f'esc50 builder config {self.builder_config.name!r}: subset is '
                       f'{subset!r}, expected one of {SUBSETS}')
    return subset

  def class_names(self):
    return layouts.ESC10_CLASS_NAMES if self.subset == 'esc10' else layouts.ESC50_CLASS_NAMES

  def num_folds(self):
    return layouts.ESC_NUM_FOLDS

  def source_root(self, manual_dir):
    return sources.local_root(manual_dir, self.data_dir_root / 'downloads',
                              layouts.find_esc50_root)

  def source_records(self, root):
    return layouts.read_esc50(root, esc10=self.subset == 'esc10')

  def _split_generators(self, dl_manager):
    root = sources.locate(dl_manager, what='ESC-50', url=self.DOWNLOAD_URL,
                          find_root=layouts.find_esc50_root, instructions=_INSTRUCTIONS)
    records = self.source_records(root)
    self._record_source(root, records)
    return self._fold_splits(records, trim=self.TRIMS_ZEROS)

