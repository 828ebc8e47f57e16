"""The official on-disk layouts of ESC-50 and UrbanSound8K: class lists, metadata csv, validation.

The layouts: data/README.md "Preparing". A malformed layout raises `LayoutError` naming the file
(and csv line); an absent listed file is reported when decoding (`audio_decode.BadAudioFileError`).
"""
import csv
import dataclasses
import hashlib
import json
import numbers
import os
import warnings

ESC50_CLASS_NAMES = (
    'dog', 'rooster', 'pig', 'cow', 'frog', 'cat', 'hen', 'insects', 'sheep', 'crow',
    'rain', 'sea_waves', 'crackling_fire', 'crickets', 'chirping_birds', 'water_drops', 'wind',
    'pouring_water', 'toilet_flush', 'thunderstorm',
    'crying_baby', 'sneezing', 'clapping', 'breathing', 'coughing', 'footsteps', 'laughing',
    'brushing_teeth', 'snoring', 'drinking_sipping',
    'door_wood_knock', 'mouse_click', 'keyboard_typing', 'door_wood_creaks', 'can_opening',
    'washing_machine', 'vacuum_cleaner', 'clock_alarm', 'clock_tick', 'glass_breaking',
    'helicopter', 'chainsaw', 'siren', 'car_horn', 'engine', 'train', 'church_bells', 'airplane',
    'fireworks', 'hand_saw',
)
ESC10_TARGETS = (0, 10, 11, 20, 38, 21, 40, 41, 1, 12)
ESC10_CLASS_NAMES = tuple(ESC50_CLASS_NAMES[t] for t in ESC10_TARGETS)
ESC_NUM_FOLDS = 5
ESC50_NUM_ROWS = 2000

URBANSOUND8K_CLASS_NAMES = (
    'air_conditioner', 'car_horn', 'children_playing', 'dog_bark', 'drilling', 'engine_idling',
    'gun_shot', 'jackhammer', 'siren', 'street_music',
)
URBANSOUND8K_NUM_FOLDS = 10
URBANSOUND8K_NUM_ROWS = 8732

ESC50_CSV = os.path.join('meta', 'esc50.csv')
URBANSOUND8K_CSV = os.path.join('metadata', 'UrbanSound8K.csv')


class LayoutError(ValueError):
  """A dataset copy does not follow the official layout (the message says what and where)."""


@dataclasses.dataclass(frozen=True)
class ClipRecord:
  """One clip listed in a metadata csv.

  Attributes:
    filename: the csv's file name (unique key of the clip).
    path: absolute path of the audio file (may not exist: reported when decoding).
    fold: 1-based fold.
    label: class index in the dataset's class list.
  """
  filename: str
  path: str
  fold: int
  label: int


def is_int_in(value, lo: int, hi: int) -> bool:
  """Whether `value` is an integer (Python or numpy, not a bool) in lo..hi."""
  return not isinstance(value, bool) and isinstance(value, numbers.Integral) and lo <= value <= hi


def content_fingerprint(records, class_names) -> str:
  """12 hex digits naming what a copy of a dataset holds, wherever it lies: `json_digest` of the
  records (ClipRecords, label = index into the C `class_names`) sorted by file name, as (filename,
  fold, class name, file size in bytes or -1 when missing); no paths, no modification times."""
  return json_digest([(r.filename, int(r.fold), class_names[r.label], size_and_mtime(r.path)[0])
                      for r in sorted(records, key=lambda r: r.filename)])


def size_and_mtime(path) -> tuple[int, int]:
  """(size in bytes, modification time in ns) of a file; (-1, -1) when it cannot be read."""
  try:
    st = os.stat(path)
  except OSError:
    return -1, -1
  return st.st_size, st.st_mtime_ns


def json_digest(value, ensure_ascii: bool = False) -> str:
  """12 hex digits: sha256 of `value` as compact JSON (the fingerprints and digests of the data)."""
  blob = json.dumps(value, separators=(',', ':'), ensure_ascii=ensure_ascii)
  return hashlib.sha256(blob.encode('utf-8')).hexdigest()[:12]


def find_root(path, csv_name: str, what: str, expected: str) -> str:
  """`path` itself or its single sub-directory (e.g. an extracted archive) holding the layout of
  `what`: the metadata csv `csv_name` and `audio/` (LayoutError saying `expected` otherwise)."""
  is_root = lambda p: (os.path.isfile(os.path.join(p, csv_name))
                       and os.path.isdir(os.path.join(p, 'audio')))
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise LayoutError(f'{path}: not a directory; expected a copy of {what} ({expected})')
  if is_root(path):
    return path
  found = [c for c in (os.path.join(path, d) for d in sorted(os.listdir(path))) if is_root(c)]
  if len(found) == 1:
    return found[0]
  if len(found) > 1:
    raise LayoutError(f'{path}: several copies of {what} found ({", ".join(found)}); '
                      'point to one of them')
  raise LayoutError(f'{path}: no copy of {what} found here or in a sub-directory; expected '
                    f'the official layout {expected}')


def read_csv(csv_path: str, required: tuple[str, ...]) -> list[tuple[int, dict]]:
  """Returns [(line number, row dict)], checking the header has the required columns."""
  try:
    with open(csv_path, newline='', encoding='utf-8') as f:
      reader = csv.DictReader(f)
      missing = [c for c in required if c not in (reader.fieldnames or ())]
      if missing:
        raise LayoutError(f'{csv_path}: missing column(s) {", ".join(missing)} '
                          f'(header is {reader.fieldnames})')
      return [(i + 2, row) for i, row in enumerate(reader)]
  except UnicodeDecodeError as e:
    raise LayoutError(f'{csv_path}: not a text csv file ({e})') from e


def int_field(csv_path, line, row, name, lo, hi) -> int:
  """Column `name` of a csv row as an integer in lo..hi (LayoutError naming the line)."""
  value = row.get(name)
  try:
    v = int(value)
  except (TypeError, ValueError):
    raise LayoutError(f'{csv_path}, line {line}: column {name!r} is {value!r}, not an integer') \
        from None
  if not lo <= v <= hi:
    raise LayoutError(f'{csv_path}, line {line}: column {name!r} is {v}, expected {lo}..{hi}')
  return v


def check_unique(csv_path, records):
  """LayoutError naming the first file name listed twice among `records` (of `csv_path`)."""
  seen = set()
  for r in records:
    if r.filename in seen:
      raise LayoutError(f'{csv_path}: file {r.filename!r} is listed more than once')
    seen.add(r.filename)


def _checked(csv_path, records, what: str, official) -> list[ClipRecord]:
  """`records`, unique and not empty (LayoutError: 'no <what>rows'), with a warning when they
  are not the (name, rows) of `official` (None: not checked)."""
  check_unique(csv_path, records)
  if not records:
    raise LayoutError(f'{csv_path}: no {what}rows')
  if official and len(records) != official[1]:
    warnings.warn(f'{csv_path} lists {len(records)} clips; the official {official[0]} has '
                  f'{official[1]}. Preparing what is listed.', stacklevel=3)
  return records


def read_esc50(root, *, esc10: bool) -> list[ClipRecord]:
  """Reads and validates `meta/esc50.csv`.

  Args:
    root: the layout directory (see `find_root`).
    esc10: keep only rows with esc10 == True and relabel them (docs/method.md §5 order).

  Returns:
    ClipRecords in csv order; labels index ESC50_CLASS_NAMES or ESC10_CLASS_NAMES.
  """
  root = os.fspath(root)
  csv_path = os.path.join(root, ESC50_CSV)
  rows = read_csv(csv_path, ('filename', 'fold', 'target', 'category', 'esc10'))
  records = []
  for line, row in rows:
    target = int_field(csv_path, line, row, 'target', 0, len(ESC50_CLASS_NAMES) - 1)
    fold = int_field(csv_path, line, row, 'fold', 1, ESC_NUM_FOLDS)
    if row['category'] != ESC50_CLASS_NAMES[target]:
      raise LayoutError(f'{csv_path}, line {line}: target {target} has category '
                        f'{row["category"]!r}, the official name is {ESC50_CLASS_NAMES[target]!r}')
    flag = row['esc10']
    if flag not in ('True', 'False'):
      raise LayoutError(f'{csv_path}, line {line}: column esc10 is {flag!r}, expected True/False')
    if esc10 and flag == 'True' and target not in ESC10_TARGETS:
      raise LayoutError(f'{csv_path}, line {line}: esc10 is True but target {target} is not an '
                        f'ESC-10 class')
    if esc10 and flag != 'True':
      continue
    label = ESC10_TARGETS.index(target) if esc10 else target
    name = row['filename']
    records.append(ClipRecord(name, os.path.join(root, 'audio', name), fold, label))
  return _checked(csv_path, records, 'ESC-10 ' if esc10 else '',
                  None if esc10 else ('ESC-50', ESC50_NUM_ROWS))


def read_urbansound8k(root) -> list[ClipRecord]:
  """Reads and validates `metadata/UrbanSound8K.csv`; audio is `audio/fold<fold>/<file>`."""
  root = os.fspath(root)
  csv_path = os.path.join(root, URBANSOUND8K_CSV)
  rows = read_csv(csv_path, ('slice_file_name', 'fold', 'classID', 'class'))
  records = []
  for line, row in rows:
    label = int_field(csv_path, line, row, 'classID', 0, len(URBANSOUND8K_CLASS_NAMES) - 1)
    fold = int_field(csv_path, line, row, 'fold', 1, URBANSOUND8K_NUM_FOLDS)
    if row['class'] != URBANSOUND8K_CLASS_NAMES[label]:
      raise LayoutError(f'{csv_path}, line {line}: classID {label} has class {row["class"]!r}, '
                        f'the official name is {URBANSOUND8K_CLASS_NAMES[label]!r}')
    name = row['slice_file_name']
    records.append(ClipRecord(name, os.path.join(root, 'audio', f'fold{fold}', name), fold, label))
  return _checked(csv_path, records, '', ('UrbanSound8K', URBANSOUND8K_NUM_ROWS))
