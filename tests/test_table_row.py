"""launch/device/table_row.py's pack / unpack: the ESC-50 layout survives the trip through Ogg Vorbis
(the names, the metadata, every clip's length and rate, and its waveform up to the codec's loss).

The stage itself (training the row) is run by `STAGES="deps row" bash
launch/device/accelerator_check.sh` on an accelerator; its CPU dry run (`table_row.py run --cpu`)
takes minutes on 2 cores and is not part of this suite."""
import csv
import os

import numpy as np
import soundfile as sf

import fixtures_audio
from launch.device import table_row


def test_pack_and_unpack_keep_the_layout(tmp_path):
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'src', targets=(0, 1, 10),
                                           clips_per_class_per_fold=1, folds=(1, 2))
  assert table_row.main(['pack', '--source', spec.root, '--dest', str(tmp_path / 'pack')]) == 0
  assert all(n.endswith('.ogg') for n in os.listdir(tmp_path / 'pack' / 'audio'))
  assert table_row.unpack(str(tmp_path / 'pack'), str(tmp_path / 'layout')) == len(spec.records)
  with open(os.path.join(spec.root, 'meta', 'esc50.csv')) as a, \
      open(tmp_path / 'layout' / 'meta' / 'esc50.csv') as b:
    assert list(csv.reader(a)) == list(csv.reader(b))
  for clip in spec.records:
    want, rate = sf.read(clip.path, dtype='float32', always_2d=True)
    got, got_rate = sf.read(tmp_path / 'layout' / 'audio' / clip.filename, dtype='float32',
                            always_2d=True)
    assert got_rate == rate and got.shape == want.shape
    w, g = want.mean(axis=1), got.mean(axis=1)
    assert np.corrcoef(w, g)[0, 1] > 0.95, clip.filename
