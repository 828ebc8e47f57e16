"""Where a builder's raw files come from: the user's copy (manual_dir), else the official download.

Order (issue 4): a local copy of the official layout in the TFDS manual directory
(`config.manual_dir`, TFDS default `<data_dir>/downloads/manual`), which may be the layout itself,
a directory holding it (e.g. the extracted `ESC-50-master/`), or the unextracted official archive;
else the official download when online; else `SourceUnavailableError` saying how to provide a copy.
"""
import os
from typing import Callable

from intermix_jax.data import layouts

ARCHIVE_SUFFIXES = ('.zip', '.tar.gz', '.tgz', '.tar')


class SourceUnavailableError(RuntimeError):
  """Neither a local copy nor the download is available (the message says how to fix it)."""


def _manual_dir(dl_manager):
  """The manual directory if one exists and is non-empty, else None (public TFDS property)."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError:  # TFDS: not enabled, or missing / empty.
    return None


def _from_manual_dir(dl_manager, manual: str, find_root: Callable[[str], str]) -> str:
  try:
    return find_root(manual)
  except layouts.LayoutError as layout_error:
    archives = sorted(f for f in os.listdir(manual) if f.endswith(ARCHIVE_SUFFIXES))
    if len(archives) != 1:
      raise layout_error
    extracted = os.fspath(dl_manager.extract(os.path.join(manual, archives[0])))
    return find_root(extracted)


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
    return _from_manual_dir(dl_manager, manual, find_root)
  try:
    extracted = os.fspath(dl_manager.download_and_extract(url))
  except Exception as e:  # pylint: disable=broad-except  (any network / archive failure)
    raise SourceUnavailableError(
        f'{what}: no local copy was given (config.manual_dir) and downloading {url} failed '
        f'({type(e).__name__}: {e}).\n{instructions}') from e
  return find_root(extracted)
