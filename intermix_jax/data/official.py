"""TFDS builders `esc50` (configs `esc50_sr<rate>`, `esc10_sr<rate>`) and `urbansound8k` of the
official datasets; configs, splits, rates, trimming, sources: data/README.md (table, "Preparing").

    builder = Esc50(data_dir=..., config='esc10_sr16000', file_format='array_record')
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))
    source = builder.as_data_source(split='fold1')   # random access, no TensorFlow
"""
import hashlib
import os
import shutil
import socket
import tarfile
import urllib.parse
import zipfile

import tensorflow_datasets as tfds

from intermix_jax.data import audio_builder
from intermix_jax.data import layouts

ESC_SUBSETS = ('esc50', 'esc10')
ARCHIVE_SUFFIXES = ('.zip', '.tar.gz', '.tgz', '.tar')


class SourceUnavailableError(RuntimeError):
  """Neither a local copy nor the download is available (the message says how to fix it)."""


def archive_key(archive: str) -> str:
  """12 hex digits naming an archive's content: sha256 of its size and its first and last 64 KiB
  (a zip's central directory and a gzip's CRC and length trailer, which cover every member)."""
  size = os.path.getsize(archive)
  h = hashlib.sha256(str(size).encode())
  with open(archive, 'rb') as f:
    h.update(f.read(1 << 16))
    f.seek(max(0, size - (1 << 16)))
    h.update(f.read(1 << 16))
  return h.hexdigest()[:12]


def extract_archive(archive: str, extract_root: str) -> str:
  """Extracts a .zip / .tar(.gz) into `extract_root/<archive name>.<archive_key>.extracted`
  (reused when present; written to a temporary directory renamed at the end). Returns its path."""
  archive = os.fspath(archive)
  try:
    key = archive_key(archive)
  except OSError as e:
    raise SourceUnavailableError(f'{archive}: cannot read this archive ({e})') from e
  dest = os.path.join(os.fspath(extract_root), f'{os.path.basename(archive)}.{key}.extracted')
  if os.path.isdir(dest):
    return dest
  if zipfile.is_zipfile(archive):
    fmt = 'zip'
  elif tarfile.is_tarfile(archive):
    fmt = 'tar'  # any compression tarfile detects (gz, bz2, xz)
  else:
    raise SourceUnavailableError(f'{archive}: not a zip or tar archive')
  tmp = f'{dest}.incomplete-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    try:
      shutil.unpack_archive(archive, tmp, fmt, filter='data')
    except TypeError:  # Python without the extraction-filter backport
      shutil.unpack_archive(archive, tmp, fmt)
    os.replace(tmp, dest)
  except (shutil.ReadError, OSError, EOFError) as e:
    raise SourceUnavailableError(f'{archive}: cannot extract this archive ({e})') from e
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return dest


class _OfficialBuilder(audio_builder.AudioClipBuilder, skip_registration=True):
  """A builder of an official layout: subclasses set WHAT (for messages), CSV (its metadata csv)
  and LAYOUT (for `layouts.find_root`), DOWNLOAD_URL and `source_records`."""

  WHAT = CSV = LAYOUT = ''

  @property
  def MANUAL_DOWNLOAD_INSTRUCTIONS(self) -> str:  # pylint: disable=invalid-name
    return (f'To prepare {self.WHAT} offline, give a local copy of the official layout: set\n'
            'config.manual_dir (or tfds DownloadConfig(manual_dir=...)) to a directory <dir> with\n'
            f'  {self.LAYOUT}\n(e.g. the extracted {self.DOWNLOAD_URL}, or the archive itself).\n')

  def _find_root(self, path) -> str:
    return layouts.find_root(path, self.CSV, self.WHAT, self.LAYOUT)

  def source_root(self, manual_dir):
    """As `AudioClipBuilder.source_root` (the default manual dir: <data_dir>/downloads/manual);
    layouts.LayoutError or SourceUnavailableError when the directory holds no usable copy."""
    download_dir = os.fspath(self.data_dir_root / 'downloads')
    manual = os.fspath(manual_dir) if manual_dir else os.path.join(download_dir, 'manual')
    if not os.path.isdir(manual) or not os.listdir(manual):
      return None
    try:
      return self._find_root(manual)
    except layouts.LayoutError as layout_error:
      archives = sorted(f for f in os.listdir(manual) if f.endswith(ARCHIVE_SUFFIXES))
      if len(archives) != 1:
        raise layout_error
      return self._find_root(extract_archive(os.path.join(manual, archives[0]), download_dir))

  def _download(self, dl_manager) -> str:
    """The root of the official archive, downloaded and extracted (SourceUnavailableError, with
    how to provide a copy, when offline or failing)."""
    what, url, how = self.WHAT, self.DOWNLOAD_URL, self.MANUAL_DOWNLOAD_INSTRUCTIONS
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == 'https' else 80)
    try:  # a TCP connection first: TFDS's downloader retries for minutes
      socket.create_connection((parts.hostname, port), timeout=5.0).close()
    except OSError as e:
      raise SourceUnavailableError(
          f'{what}: no local copy was given (config.manual_dir) and the official download {url} '
          f'is unavailable: cannot connect to {parts.hostname}:{port} ({e}).\n{how}') from None
    try:
      archive = os.fspath(dl_manager.download(url))
    except Exception as e:  # pylint: disable=broad-except  (any network / archive failure)
      raise SourceUnavailableError(
          f'{what}: no local copy was given (config.manual_dir) and downloading {url} failed '
          f'({type(e).__name__}: {e}).\n{how}') from e
    return self._find_root(extract_archive(archive, dl_manager.download_dir))

  def _split_generators(self, dl_manager):
    try:
      root = self.source_root(dl_manager.manual_dir)
    except AssertionError:  # TFDS: no manual dir, or a missing / empty one
      root = None
    root = root or self._download(dl_manager)
    return self._fold_splits(root, self.source_records(root))


class Esc50(_OfficialBuilder):
  """ESC-50 / ESC-10 (Piczak 2015): 5 s environmental sound clips, 5 folds."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: int16 mono, resampled with soxr, zero-trimmed.'}
  BUILDER_CONFIGS = [c for subset in ESC_SUBSETS
                     for c in audio_builder.sample_rate_configs(f'{subset}_', subset)]
  DEFAULT_BUILDER_CONFIG_NAME = 'esc50_sr44100'
  TRIMS_ZEROS = True
  NUM_FOLDS = layouts.ESC_NUM_FOLDS
  WHAT = 'ESC-50'
  CSV = layouts.ESC50_CSV
  LAYOUT = '<dir>/audio/*.wav and <dir>/meta/esc50.csv'
  DOWNLOAD_URL = 'https://github.com/karolpiczak/ESC-50/archive/master.zip'
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

  def source_records(self, root):
    return layouts.read_esc50(root, esc10=self.subset == 'esc10')


class Urbansound8k(_OfficialBuilder):
  """UrbanSound8K (Salamon et al. 2014): 8732 urban sound excerpts <= 4 s, 10 classes, 10 folds."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: int16 mono, resampled with soxr.'}
  BUILDER_CONFIGS = audio_builder.sample_rate_configs('', 'urbansound8k')
  DEFAULT_BUILDER_CONFIG_NAME = 'sr44100'
  CLASS_NAMES = layouts.URBANSOUND8K_CLASS_NAMES
  NUM_FOLDS = layouts.URBANSOUND8K_NUM_FOLDS
  WHAT = 'UrbanSound8K'
  CSV = layouts.URBANSOUND8K_CSV
  LAYOUT = '<dir>/audio/fold<N>/*.wav and <dir>/metadata/UrbanSound8K.csv'
  DOWNLOAD_URL = 'https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz'
  DESCRIPTION = 'UrbanSound8K: 8732 labelled urban sound excerpts (<= 4 s), 10 classes, 10 folds.'
  HOMEPAGE = 'https://urbansounddataset.weebly.com/urbansound8k.html'
  CITATION = ('J. Salamon, C. Jacoby, J. P. Bello. A Dataset and Taxonomy for Urban Sound '
              'Research. ACM Multimedia 2014.')

  def source_records(self, root):
    return layouts.read_urbansound8k(root)
