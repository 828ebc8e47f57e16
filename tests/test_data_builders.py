"""TFDS builders on generated copies of the official layouts: splits, labels, errors, sources.

Covers: one split per fold, ESC-10 relabelling, zero trimming, resampling/downmix of odd formats,
UrbanSound8K paths, bad files (error naming the file; skip with warning + count), interrupted
preparation (never read as complete; rerun finishes), manual_dir as an archive, the download path
(a local HTTP server) and the offline error; preparing and reading without TensorFlow.
"""
import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest

import fixtures_audio
from intermix_jax import data
from intermix_jax.data import audio_builder
from intermix_jax.data import audio_decode
from intermix_jax.data import catalog
from intermix_jax.data import layouts

# The generated copies are small: the "fewer clips than the official release" warning is expected.
pytestmark = pytest.mark.filterwarnings(
    'ignore:.*the official (ESC-50|UrbanSound8K) has:UserWarning')

RATE = 8000  # small and fast; every fixture clip is at another native rate or format


def _prepare(dataset, data_dir, manual_dir, *, rate=RATE, skip=False):
  builder = data.get_builder(dataset, rate, data_dir=str(data_dir), skip_bad_files=skip)
  catalog.prepare_builder(builder, manual_dir=None if manual_dir is None else str(manual_dir))
  return builder


def _read_all(builder):
  out = {}
  for k in range(1, builder.num_folds() + 1):
    source = builder.as_data_source(split=f'fold{k}')
    out[k] = [source[i] for i in range(len(source))]
  return out


@pytest.fixture(scope='module')
def esc50_prepared(esc50_layout, tmp_path_factory):
  return _prepare('esc50', tmp_path_factory.mktemp('tfds'), esc50_layout.root)


def test_esc50_one_split_per_fold_with_official_labels(esc50_prepared, esc50_layout):
  by_fold = _read_all(esc50_prepared)
  assert esc50_prepared.info.splits.keys() == {f'fold{k}' for k in range(1, 6)}
  expected = {r.filename: r for r in esc50_layout.records}
  seen = set()
  for fold, examples in by_fold.items():
    for ex in examples:
      name = ex['filename'].decode()
      rec = expected[name]
      assert ex['fold'] == fold == rec.fold
      assert ex['label'] == rec.target  # esc50: label = official target
      assert ex['audio'].dtype == np.int16
      seen.add(name)
  assert seen == set(expected)
  assert esc50_prepared.info.features['label'].names == list(layouts.ESC50_CLASS_NAMES)


def test_esc_clips_are_mono_resampled_and_zero_trimmed(esc50_prepared, esc50_layout):
  expected = {r.filename: r for r in esc50_layout.records}
  formats_seen = set()
  for examples in _read_all(esc50_prepared).values():
    for ex in examples:
      rec = expected[ex['filename'].decode()]
      audio = ex['audio']
      formats_seen.add((rec.native_rate, rec.channels, rec.subtype))
      assert audio[0] != 0 and audio[-1] != 0  # trimmed
      assert abs(audio.shape[0] - 0.3 * RATE) <= 0.01 * RATE  # 0.3 s tone at the target rate
      # Independent reference: the tone the fixture wrote (first channel 0.5 sin, second 0.3 sin,
      # mean = 0.4 or 0.5 amplitude), located by the spectral peak and the rms level.
      spec = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
      peak_hz = np.argmax(spec) * RATE / audio.shape[0]
      assert abs(peak_hz - fixtures_audio.class_frequency(rec.target)) < 15
      amplitude = 0.5 if rec.channels == 1 else 0.4
      rms = np.sqrt(np.mean((audio / 32768.0) ** 2))
      assert rms == pytest.approx(amplitude / np.sqrt(2), rel=0.05)
  assert formats_seen == set(fixtures_audio.FORMATS)


def test_source_rates_are_kept_in_the_prepared_copy_and_their_resampling_said(esc50_prepared,
                                                                              esc50_layout):
  """Issue 27 item 3: the native rates read are in the metadata (so they survive reuse), and
  the one-line note says which way each was resampled (the fixture's 11025-48000 Hz clips)."""
  counts = {}
  for r in esc50_layout.records:
    counts[str(r.native_rate)] = counts.get(str(r.native_rate), 0) + 1
  assert esc50_prepared.info.metadata['source_sample_rates'] == counts
  reused = data.get_builder('esc50', RATE, data_dir=str(esc50_prepared.data_dir_root))
  assert reused.info.metadata['source_sample_rates'] == counts
  note = audio_builder.resampling_note(counts, RATE)
  assert note.startswith(f'source audio at 11025 Hz ({counts["11025"]} clips), 22050 Hz (')
  assert ('resampled to 8000 Hz, the backbone\'s rate: downsampled from 11025, 22050, 44100, '
          '48000 Hz, so content above 4000 Hz is removed (source_sample_rates in') in note, note
  note = audio_builder.resampling_note(counts, 16000)
  assert ('upsampled from 11025 Hz, so nothing above 5512.5 Hz (the source\'s Nyquist frequency) '
          'is real signal; downsampled from 22050, 44100, 48000 Hz, so content above 8000 Hz is '
          'removed') in note, note
  assert audio_builder.resampling_note({'8000': 3, '11025': 2}, 16000).split(': ', 1)[1] == (
      'upsampled from 8000, 11025 Hz, so nothing above each source\'s Nyquist frequency '
      '(4000, 5512.5 Hz) is real signal (source_sample_rates in dataset.json and results.json)')
  assert audio_builder.resampling_note({'16000': 5}, 16000) is None
  assert audio_builder.resampling_note(None, 16000) is None  # a copy from before the record


def test_esc10_variant_keeps_esc10_rows_relabelled_in_spec_order(esc50_layout, tmp_path):
  builder = _prepare('esc10', tmp_path, esc50_layout.root)
  by_fold = _read_all(builder)
  expected = {r.filename: r for r in esc50_layout.records if r.target in layouts.ESC10_TARGETS}
  got = {ex['filename'].decode(): ex for exs in by_fold.values() for ex in exs}
  assert got.keys() == expected.keys()
  # The fixture's targets 0, 1, 20, 38 are ESC-10 labels 0, 8, 3, 4 (docs/method.md §5 order); 2 is
  # not ESC-10.
  assert len(expected) == 20
  spec_order = {0: 0, 10: 1, 11: 2, 20: 3, 38: 4, 21: 5, 40: 6, 41: 7, 1: 8, 12: 9}
  for name, ex in got.items():
    assert ex['label'] == spec_order[expected[name].target]
  assert builder.info.features['label'].num_classes == 10


def test_urbansound8k_layout_ten_folds(urbansound8k_layout, tmp_path):
  builder = _prepare('urbansound8k', tmp_path, urbansound8k_layout.root, rate=16000)
  by_fold = _read_all(builder)
  assert len(by_fold) == 10
  expected = {r.filename: r for r in urbansound8k_layout.records}
  for fold, examples in by_fold.items():
    assert len(examples) == 4
    for ex in examples:
      rec = expected[ex['filename'].decode()]
      assert (ex['fold'], ex['label']) == (fold, rec.target) == (rec.fold, rec.target)
      # No trimming for UrbanSound8K: length is the resampled clip length.
      assert abs(ex['audio'].shape[0] - int(0.25 * rec.native_rate) * 16000 / rec.native_rate) <= 2


@pytest.mark.parametrize('kind', ['missing', 'corrupt'])
def test_bad_file_fails_preparation_naming_the_file(tmp_path, kind):
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'copy', targets=(0,), bad=(kind,))
  (bad_name,) = spec.bad
  with pytest.raises(data.BadAudioFileError) as err:
    _prepare('esc50', tmp_path / 'tfds', spec.root)
  message = str(err.value)
  assert bad_name in message and spec.bad[bad_name] in message
  assert 'skip_bad_files' in message
  assert not data.get_builder('esc50', RATE, data_dir=str(tmp_path / 'tfds')).is_prepared()


def test_urbansound8k_bad_file_names_its_fold_path(tmp_path):
  spec = fixtures_audio.write_urbansound8k_layout(tmp_path / 'copy', classes=(1,), bad=('missing',))
  with pytest.raises(data.BadAudioFileError) as err:
    _prepare('urbansound8k', tmp_path / 'tfds', spec.root)
  (bad_name,) = spec.bad
  assert os.path.join('audio', 'fold3', bad_name) in str(err.value)
  assert 'listed in the metadata csv but not on disk' in str(err.value)


def test_skip_bad_files_warns_with_a_count_and_keeps_the_good_ones(tmp_path):
  kinds = sorted(fixtures_audio.BAD_KINDS)
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'copy', targets=(0, 1), bad=kinds)
  with pytest.warns(data.SkippedFilesWarning, match=f'skipped {len(kinds)} bad file'):
    builder = _prepare('esc50', tmp_path / 'tfds', spec.root, skip=True)
  names = {ex['filename'].decode() for exs in _read_all(builder).values() for ex in exs}
  assert names == {r.filename for r in spec.records}
  skipped = dict(builder.info.metadata['skipped_files'])
  assert {os.path.basename(p) for p in skipped} == set(spec.bad)
  for path, problem in skipped.items():
    assert spec.bad[os.path.basename(path)] in problem
  # The record survives a reload from disk.
  reloaded = data.get_builder('esc50', RATE, data_dir=str(tmp_path / 'tfds'))
  assert len(reloaded.info.metadata['skipped_files']) == len(kinds)


class _Interrupt(BaseException):
  """Stands for a crash / kill in the middle of preparation."""


def test_interrupted_preparation_is_never_read_as_complete(tmp_path, monkeypatch, esc50_layout):
  data_dir = str(tmp_path / 'tfds')
  real_load = audio_decode.load_audio_and_rate
  calls = []
  observed = {}

  def flaky_load(path, sample_rate, **kwargs):
    calls.append(path)
    if len(calls) == 12:  # mid-generation, inside fold 3
      fresh = data.get_builder('esc50', RATE, data_dir=data_dir)
      observed['prepared_mid_way'] = fresh.is_prepared()
      observed['version_dirs'] = sorted(os.listdir(os.path.dirname(fresh.data_dir)))
      raise _Interrupt()
    return real_load(path, sample_rate, **kwargs)

  monkeypatch.setattr(audio_decode, 'load_audio_and_rate', flaky_load)
  with pytest.raises(_Interrupt):
    _prepare('esc50', data_dir, esc50_layout.root)
  assert observed['prepared_mid_way'] is False
  assert all(d.startswith('incomplete.') for d in observed['version_dirs']), observed
  fresh = data.get_builder('esc50', RATE, data_dir=data_dir)
  assert not fresh.is_prepared()
  with pytest.raises(Exception):
    fresh.as_data_source(split='fold1')
  # A leftover of a hard kill (no cleanup ran) must not matter either.
  leftover = os.path.join(os.path.dirname(fresh.data_dir), 'incomplete.KILLED_1.0.0')
  os.makedirs(leftover)
  with open(os.path.join(leftover, 'esc50-fold1.array_record-00000-of-00001'), 'wb') as f:
    f.write(b'partial')

  monkeypatch.setattr(audio_decode, 'load_audio_and_rate', real_load)
  builder = _prepare('esc50', data_dir, esc50_layout.root)
  assert builder.is_prepared()
  counts = {k: len(v) for k, v in _read_all(builder).items()}
  assert counts == {k: 5 for k in range(1, 6)}


def test_manual_dir_may_hold_the_official_zip(esc50_layout, tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  shutil.make_archive(str(manual / 'master'), 'zip', root_dir=os.path.dirname(esc50_layout.root),
                      base_dir=os.path.basename(esc50_layout.root))
  builder = _prepare('esc10', tmp_path / 'tfds', manual)
  assert sum(len(v) for v in _read_all(builder).values()) == 20  # 4 ESC-10 classes x 5 folds


def test_manual_dir_without_the_layout_is_a_clear_error(tmp_path):
  manual = tmp_path / 'manual'
  (manual / 'something').mkdir(parents=True)
  with pytest.raises(data.LayoutError, match='meta/esc50.csv'):
    _prepare('esc50', tmp_path / 'tfds', manual)
  with pytest.raises(FileNotFoundError, match='config.manual_dir'):
    _prepare('esc50', tmp_path / 'tfds', tmp_path / 'does_not_exist')


@contextlib.contextmanager
def _http_server(directory):
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
  handler.log_message = lambda *a, **k: None
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}'
  finally:
    server.shutdown()
    server.server_close()


def test_download_path_when_no_copy_is_given(esc50_layout, tmp_path, monkeypatch):
  served = tmp_path / 'served'
  served.mkdir()
  shutil.make_archive(str(served / 'master'), 'zip', root_dir=os.path.dirname(esc50_layout.root),
                      base_dir=os.path.basename(esc50_layout.root))
  with _http_server(served) as url:
    monkeypatch.setattr(data.Esc50, 'DOWNLOAD_URL', f'{url}/master.zip')
    builder = _prepare('esc10', tmp_path / 'tfds', None)
  assert sum(len(v) for v in _read_all(builder).values()) == 20  # 4 ESC-10 classes x 5 folds


def test_offline_without_a_copy_says_how_to_provide_one(tmp_path, monkeypatch):
  monkeypatch.setattr(data.Urbansound8k, 'DOWNLOAD_URL', 'http://127.0.0.1:9/UrbanSound8K.tar.gz')
  with pytest.raises(data.SourceUnavailableError) as err:
    _prepare('urbansound8k', tmp_path / 'tfds', None)
  message = str(err.value)
  assert 'config.manual_dir' in message and 'metadata/UrbanSound8K.csv' in message
  assert 'cannot connect' in message


def test_layout_errors_name_the_csv_line(tmp_path):
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'copy', targets=(0,), folds=(1,))
  csv_path = os.path.join(spec.root, 'meta', 'esc50.csv')
  lines = open(csv_path).read().splitlines()
  cases = {
      lines[1].replace(',1,0,dog,', ',7,0,dog,'): "line 2: column 'fold' is 7",
      lines[1].replace(',dog,', ',cat,'): "official name is 'dog'",
      lines[1].replace(',1,0,', ',1,x,'): "column 'target' is 'x', not an integer",
  }
  for row, message in cases.items():
    with open(csv_path, 'w') as f:
      f.write('\n'.join([lines[0], row]) + '\n')
    with pytest.raises(data.LayoutError, match=message):
      layouts.read_esc50(spec.root, esc10=False)
  with open(csv_path, 'w') as f:
    f.write('filename,fold\nx.wav,1\n')
  with pytest.raises(data.LayoutError, match='missing column'):
    layouts.read_esc50(spec.root, esc10=False)
  with open(csv_path, 'w') as f:
    f.write('\n'.join([lines[0], lines[1], lines[1]]) + '\n')
  with pytest.raises(data.LayoutError, match='more than once'):
    layouts.read_esc50(spec.root, esc10=False)


def test_partial_esc50_copy_warns(esc50_layout):
  with pytest.warns(UserWarning, match='official ESC-50 has 2000'):
    layouts.read_esc50(esc50_layout.root, esc10=False)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    layouts.read_esc50(esc50_layout.root, esc10=True)


def test_prepare_and_read_without_tensorflow(esc50_layout, tmp_path):
  """In a fresh interpreter where importing tensorflow fails, prepare and read work."""
  script = textwrap.dedent(f'''
      import importlib.abc, importlib.machinery, sys
      class _BlockTF(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """Even where TensorFlow is installed, `import tensorflow` fails in this process."""
        def find_spec(self, name, path=None, target=None):
          if name.split('.')[0] == 'tensorflow':
            return importlib.machinery.ModuleSpec(name, self)
        def create_module(self, spec):
          raise ModuleNotFoundError(f'{{spec.name}} is blocked in this test', name=spec.name)
        def exec_module(self, module):
          pass
      sys.meta_path.insert(0, _BlockTF())
      from intermix_jax import data
      from intermix_jax.data import catalog
      b = data.get_builder('esc10', 8000, data_dir={str(tmp_path)!r})
      catalog.prepare_builder(b, manual_dir={esc50_layout.root!r})
      n = sum(len(b.as_data_source(split=f'fold{{k}}')) for k in range(1, 6))
      ex = b.as_data_source(split='fold1')[0]
      assert ex['audio'].dtype.name == 'int16', ex
      assert 'tensorflow' not in sys.modules
      print('OK', n)
  ''')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'OK 20' in out.stdout


def test_a_fold_without_clips_is_a_clear_error(tmp_path):
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'copy', targets=(0,), folds=(1, 2, 3, 4))
  with pytest.raises(data.LayoutError, match='no clip of fold 5'):
    _prepare('esc50', tmp_path / 'tfds', spec.root)
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'copy2', targets=(0,), folds=(1, 3, 4, 5),
                                           bad=('empty',), bad_fold=2)
  with pytest.raises(data.BadAudioFileError, match='no clip is left for this fold'):
    _prepare('esc50', tmp_path / 'tfds2', spec.root, skip=True)
