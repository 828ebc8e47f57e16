"""Where a builder's raw files come from: the copy in the manual directory (`config.manual_dir`,
TFDS default `<data_dir>/downloads/manual`: the layout, its parent, or the official archive), else
the official download, else `SourceUnavailableError` saying how to provide a copy (data/README.md).
"""
import hashlib
import os
import shutil
import socket
import tarfile
from typing import Callable
import urllib.parse
import zipfile

from intermix_jax.data import layouts

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


def unreachable(url: str, timeout: float = 5.0) -> str | None:
  """None if a TCP connection to the url's host can be opened, else why not (checked before
  TFDS's downloader, which retries for minutes)."""
  parts = urllib.parse.urlsplit(url)
  port = parts.port or (443 if parts.scheme == 'https' else 80)
  try:
    with socket.create_connection((parts.hostname, port), timeout=timeout):
      return None
  except OSError as e:
    return f'cannot connect to {parts.hostname}:{port} ({e})'


def _manual_dir(dl_manager):
  """The manual directory if one exists and is non-empty, else None (public TFDS property)."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError:  # TFDS: not enabled, or missing / empty.
    return None


def _from_manual_dir(download_dir, manual: str, find_root: Callable[[str], str]) -> str:
  try:
    return find_root(manual)
  except layouts.LayoutError as layout_error:
    archives = sorted(f for f in os.listdir(manual) if f.endswith(ARCHIVE_SUFFIXES))
    if len(archives) != 1:
      raise layout_error
    extracted = extract_archive(os.path.join(manual, archives[0]), download_dir)
    return find_root(extracted)


def local_root(manual_dir, download_dir, find_root: Callable[[str], str]) -> str | None:
  """The root of the local copy a preparation would read now (`locate` without a download
  manager: `manual_dir`, else `<download_dir>/manual`), or None when it would download.

  Raises:
    layouts.LayoutError, SourceUnavailableError: the directory holds no usable copy.
  """
  manual = os.fspath(manual_dir) if manual_dir else os.path.join(os.fspath(download_dir), 'manual')
  if not os.path.isdir(manual) or not os.listdir(manual):
    return None
  return _from_manual_dir(os.fspath(download_dir), manual, find_root)


def locate(dl_manager, *, what: str, url: str, find_root: Callable[[str], str],
           instructions: str) -> str:
  """Returns the root directory of the official layout of `what`.

  Args:
    dl_manager: the builder's tfds DownloadManager.
    what: dataset name for messages.
    url: the official archive.
    find_root: layout finder (`layouts.find_esc50_root`, ...), raising LayoutError.
    instructions: how a user provides a copy (appended to the offline error).
  """
  manual = _manual_dir(dl_manager)
  if manual is not None:
    return _from_manual_dir(dl_manager.download_dir, manual, find_root)
  why = unreachable(url)
  if why is not None:
    raise SourceUnavailableError(
        f'{what}: no local copy was given (config.manual_dir) and the official download {url} is '
        f'unavailable: {why}.\n{instructions}')
  try:
    archive = os.fspath(dl_manager.download(url))
  except Exception as e:  # pylint: disable=broad-except  (any network / archive failure)
    raise SourceUnavailableError(
        f'{what}: no local copy was given (config.manual_dir) and downloading {url} failed '
        f'({type(e).__name__}: {e}).\n{instructions}') from e
  return find_root(extract_archive(archive, dl_manager.download_dir))
