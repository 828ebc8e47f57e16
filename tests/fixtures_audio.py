"""Generators of small audio datasets in the official ESC-50 and UrbanSound8K layouts (for tests).

    spec = write_esc50_layout(tmp_path / 'ESC-50-master', bad=('corrupt', 'missing'))
    spec.records      # the good clips: ExpectedClip(filename, fold, target, ...)
    spec.bad          # {filename: substring the error message must contain}

Clips are short sine tones (frequency by class) with varied formats: native rates 44100, 22050,
48000 and 11025 Hz, mono and stereo, 16/24-bit PCM, 8-bit unsigned PCM and 32-bit float, with
leading and trailing exact-zero samples (the ESC trimming rule). Everything is deterministic.
"""
import csv
import dataclasses
import os

import numpy as np
import soundfile as sf

ESC50_COLUMNS = ('filename', 'fold', 'target', 'category', 'esc10', 'src_file', 'take')
US8K_COLUMNS = ('slice_file_name', 'fsID', 'start', 'end', 'salience', 'fold', 'classID', 'class')

# (native rate, channels, subtype) cycled over the clips.
FORMATS = ((44100, 1, 'PCM_16'), (22050, 2, 'PCM_16'), (48000, 1, 'PCM_24'),
           (11025, 2, 'FLOAT'), (44100, 2, 'PCM_U8'))

# Kinds of bad file and a substring of the error each must produce.
BAD_KINDS = {
    'corrupt': 'unreadable audio',
    'empty': 'empty file',
    'missing': 'missing',
    'truncated': 'truncated',
    'six_channels': 'unexpected channel count 6',
    'gsm': 'unexpected sample format',
    'silent': 'digital silence',
}


@dataclasses.dataclass(frozen=True)
class ExpectedClip:
  """A good clip of a generated layout. `path` is its file; `target` the official class id."""
  filename: str
  path: str
  fold: int
  target: int
  native_rate: int
  channels: int
  subtype: str


@dataclasses.dataclass
class LayoutSpec:
  root: str
  records: list
  bad: dict  # filename -> expected error substring


def tone(freq: float, seconds: float, rate: int, channels: int, lead: int = 0,
         tail: int = 0) -> np.ndarray:
  """float32 (lead + n + tail, channels): a 0.5-amplitude sine between exact-zero margins.

  The second channel (if any) is the sine at 0.3 amplitude, so a downmix is distinguishable.
  """
  n = int(seconds * rate)
  t = np.arange(n) / rate
  x = 0.5 * np.sin(2 * np.pi * freq * t + 0.3)
  cols = [x, 0.6 * x][:channels]
  body = np.stack(cols, axis=1)
  return np.concatenate([np.zeros((lead, channels)), body, np.zeros((tail, channels))]
                        ).astype(np.float32)


def class_frequency(target: int) -> float:
  return 220.0 * 2 ** (target / 12)


def _write_bad(path: str, kind: str, rate: int):
  if kind == 'corrupt':
    with open(path, 'wb') as f:
      f.write(b'RIFF\x10\x00\x00\x00WAVEjunk' + bytes(range(256)) * 4)
  elif kind == 'empty':
    open(path, 'wb').close()
  elif kind == 'truncated':
    sf.write(path, tone(440, 0.2, rate, 1), rate, subtype='PCM_16')
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:
      f.write(data[:len(data) // 2 + 1])
  elif kind == 'six_channels':
    sf.write(path, np.tile(tone(440, 0.1, rate, 1), (1, 6)), rate, subtype='PCM_16')
  elif kind == 'gsm':
    sf.write(path, tone(440, 0.2, 8000, 1), 8000, format='WAV', subtype='GSM610')
  elif kind == 'silent':
    sf.write(path, np.zeros((2000, 1), np.float32), rate, subtype='PCM_16')
  elif kind != 'missing':
    raise ValueError(f'unknown bad kind {kind!r}; known: {sorted(BAD_KINDS)}')


def write_esc50_layout(root, *, targets=(0, 1, 2, 20, 38), clips_per_class_per_fold: int = 1,
                       folds=(1, 2, 3, 4, 5), seconds: float = 0.3, bad=(),
                       bad_fold: int = 2, bad_target: int = 0, formats=FORMATS) -> LayoutSpec:
  """Writes <root>/audio/*.wav and <root>/meta/esc50.csv (official columns, row format).

  Args:
    targets: ESC-50 class ids to include (esc10 column True for the ESC-10 ones).
    clips_per_class_per_fold: clips of every target in every fold.
    seconds: tone length (plus 37 leading and 11 trailing zero samples).
    bad: kinds of bad files (keys of BAD_KINDS) added as extra rows (fold bad_fold,
      target bad_target).
    formats: (native rate in Hz, channels, subtype) cycled over the good clips.
  """
  from intermix_jax.data import layouts  # pylint: disable=g-import-not-at-top
  root = os.fspath(root)
  os.makedirs(os.path.join(root, 'audio'), exist_ok=True)
  os.makedirs(os.path.join(root, 'meta'), exist_ok=True)
  rows, records, bad_map = [], [], {}
  k = 0
  for fold in folds:
    for target in targets:
      for take in range(clips_per_class_per_fold):
        rate, channels, subtype = formats[k % len(formats)]
        src = 100000 + k
        name = f'{fold}-{src}-{"ABCDEFGH"[take]}-{target}.wav'
        path = os.path.join(root, 'audio', name)
        sf.write(path, tone(class_frequency(target), seconds, rate, channels, lead=37, tail=11),
                 rate, subtype=subtype)
        rows.append((name, fold, target, layouts.ESC50_CLASS_NAMES[target],
                     target in layouts.ESC10_TARGETS, src, 'ABCDEFGH'[take]))
        records.append(ExpectedClip(name, path, fold, target, rate, channels, subtype))
        k += 1
  for i, kind in enumerate(bad):
    name = f'{bad_fold}-{900000 + i}-A-{bad_target}.wav'
    _write_bad(os.path.join(root, 'audio', name), kind, 44100)
    rows.append((name, bad_fold, bad_target, layouts.ESC50_CLASS_NAMES[bad_target],
                 bad_target in layouts.ESC10_TARGETS, 900000 + i, 'A'))
    bad_map[name] = BAD_KINDS[kind]
  with open(os.path.join(root, 'meta', 'esc50.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(ESC50_COLUMNS)
    writer.writerows(rows)
  return LayoutSpec(root, records, bad_map)


def write_urbansound8k_layout(root, *, classes=(0, 3, 6, 9), folds=tuple(range(1, 11)),
                              seconds: float = 0.25, bad=(), bad_fold: int = 3) -> LayoutSpec:
  """Writes <root>/audio/fold<N>/*.wav and <root>/metadata/UrbanSound8K.csv (official columns).

  One clip per (fold, class); `bad` kinds are added to fold bad_fold with class classes[0].
  """
  from intermix_jax.data import layouts  # pylint: disable=g-import-not-at-top
  root = os.fspath(root)
  os.makedirs(os.path.join(root, 'metadata'), exist_ok=True)
  rows, records, bad_map = [], [], {}
  k = 0
  for fold in folds:
    os.makedirs(os.path.join(root, 'audio', f'fold{fold}'), exist_ok=True)
    for c in classes:
      rate, channels, subtype = FORMATS[k % len(FORMATS)]
      fsid = 5000 + k
      name = f'{fsid}-{c}-0-{k % 3}.wav'
      path = os.path.join(root, 'audio', f'fold{fold}', name)
      sf.write(path, tone(class_frequency(c), seconds, rate, channels), rate, subtype=subtype)
      rows.append((name, fsid, 0.0, seconds, 1, fold, c, layouts.URBANSOUND8K_CLASS_NAMES[c]))
      records.append(ExpectedClip(name, path, fold, c, rate, channels, subtype))
      k += 1
  for i, kind in enumerate(bad):
    c = classes[0]
    name = f'{90000 + i}-{c}-0-0.wav'
    os.makedirs(os.path.join(root, 'audio', f'fold{bad_fold}'), exist_ok=True)
    _write_bad(os.path.join(root, 'audio', f'fold{bad_fold}', name), kind, 22050)
    rows.append((name, 90000 + i, 0.0, 0.2, 1, bad_fold, c, layouts.URBANSOUND8K_CLASS_NAMES[c]))
    bad_map[name] = BAD_KINDS[kind]
  with open(os.path.join(root, 'metadata', 'UrbanSound8K.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(US8K_COLUMNS)
    writer.writerows(rows)
  return LayoutSpec(root, records, bad_map)
