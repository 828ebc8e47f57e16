"""Decoding one audio file to int16-scale mono samples at a target rate (docs/method.md §5):
soundfile decodes, soxr resamples; every problem with an input file raises `BadAudioFileError`
naming the file and the problem.
"""
import dataclasses
import os
import struct

import numpy as np
import soundfile as sf
import soxr

# Sample formats (libsndfile subtypes) accepted by default: plain PCM / float / companded.
SUPPORTED_SUBTYPES = frozenset({
    'PCM_S8', 'PCM_U8', 'PCM_16', 'PCM_24', 'PCM_32', 'FLOAT', 'DOUBLE',
    'ULAW', 'ALAW', 'IMA_ADPCM', 'MS_ADPCM',
})
# Lossy codecs libsndfile decodes: accepted for a user's own audio (data/custom.py, prediction).
COMPRESSED_SUBTYPES = frozenset({'VORBIS', 'OPUS', 'MPEG_LAYER_I', 'MPEG_LAYER_II',
                                 'MPEG_LAYER_III'})


class BadAudioFileError(ValueError):
  """An input audio file cannot be used. `path` and `problem` are kept as attributes."""

  def __init__(self, path, problem: str):
    self.path = os.fspath(path)
    self.problem = problem
    super().__init__(f'{self.path}: {problem}')


@dataclasses.dataclass(frozen=True)
class AudioExpectation:
  """What an input file may look like.

  Attributes:
    max_channels: more channels than this is an error (both official datasets are <= 2).
    min_rate, max_rate: accepted native sample rates in Hz.
    subtypes: accepted sample formats (libsndfile subtype names).
  """
  max_channels: int = 2
  min_rate: int = 4000
  max_rate: int = 192000
  subtypes: frozenset = SUPPORTED_SUBTYPES


def _check_wav_not_truncated(path: str) -> None:
  """Raises if a RIFF/WAVE file's `data` chunk declares more bytes than the file holds
  (libsndfile silently returns what is present); other files are left to libsndfile."""
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
      return
    pos = 12
    while pos + 8 <= size:
      f.seek(pos)
      chunk_id, chunk_size = struct.unpack('<4sI', f.read(8))
      if chunk_id == b'data':
        available = size - pos - 8
        # 0 and 0xFFFFFFFF are "unknown length" markers written by streaming writers.
        if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
          raise BadAudioFileError(
              path, f'truncated file: the WAV header declares {chunk_size} bytes of audio data '
              f'but only {available} are present')
        return
      pos += 8 + chunk_size + (chunk_size & 1)


def to_int16(x: np.ndarray) -> np.ndarray:
  """float samples in [-1, 1) (any shape) -> int16 scale: round(x * 32768) clipped to int16."""
  return np.clip(np.rint(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


trim_zeros = np.trim_zeros  # (n,) -> (m,): leading and trailing exact-zero samples dropped


def load_audio(path, sample_rate: int, *, trim: bool = False,
               expect: AudioExpectation = AudioExpectation()) -> np.ndarray:
  """`load_audio_and_rate`'s samples, without the native rate."""
  return load_audio_and_rate(path, sample_rate, trim=trim, expect=expect)[0]


def load_audio_and_rate(path, sample_rate: int, *, trim: bool = False,
                        expect: AudioExpectation = AudioExpectation()) -> tuple[np.ndarray, int]:
  """Reads one file as mono int16-scale samples at `sample_rate`; also returns its native rate.

  Decode (float32) -> channel mean -> soxr HQ resampling when the rate differs -> round(x * 32768)
  -> with `trim`, drop leading and trailing exact-zero samples (the ESC protocol).

  Args:
    path: the audio file; sample_rate: output rate in Hz; trim: as above;
    expect: accepted channel counts, native rates and sample formats.

  Returns:
    (int16 array (n,), n >= 1, at `sample_rate`; the file's own sample rate in Hz).

  Raises:
    BadAudioFileError: naming the file and what is wrong with it.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise BadAudioFileError(path, 'file is missing (listed in the metadata csv but not on disk)')
  if os.path.getsize(path) == 0:
    raise BadAudioFileError(path, 'empty file (0 bytes)')
  _check_wav_not_truncated(path)
  try:  # (BadAudioFileError is a ValueError: not caught here)
    info = sf.info(path)
    if info.subtype not in expect.subtypes:
      raise BadAudioFileError(
          path, f'unexpected sample format / bit depth {info.subtype!r} '
          f'(supported: {", ".join(sorted(expect.subtypes))})')
    if not 1 <= info.channels <= expect.max_channels:
      raise BadAudioFileError(
          path, f'unexpected channel count {info.channels} (expected 1 to {expect.max_channels})')
    if not expect.min_rate <= info.samplerate <= expect.max_rate:
      raise BadAudioFileError(
          path, f'unexpected sample rate {info.samplerate} Hz '
          f'(expected {expect.min_rate} to {expect.max_rate} Hz)')
    data, native_rate = sf.read(path, dtype='float32', always_2d=True)
  except (sf.LibsndfileError, RuntimeError) as e:
    why = getattr(e, 'error_string', None) or str(e)
    raise BadAudioFileError(path, f'unreadable audio ({why})') from e
  if data.shape[0] == 0:
    raise BadAudioFileError(path, 'contains no audio samples')
  if not np.all(np.isfinite(data)):
    raise BadAudioFileError(path, 'contains NaN or infinite samples')
  mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
  if native_rate != sample_rate:
    mono = soxr.resample(mono, native_rate, sample_rate, quality='HQ')
  out = to_int16(mono)
  if trim:
    out = trim_zeros(out)
  if out.size == 0:
    raise BadAudioFileError(path, 'contains only digital silence (every sample is exactly zero)')
  return out, int(native_rate)
