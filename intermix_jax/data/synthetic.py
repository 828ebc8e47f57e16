"""TFDS builder `synthetic_sounds`: small, deterministic, SYNTHETIC sounds (the offline default).

Not real audio: generated, so the main command and the tests need no download. Six classes:

  0 tone         steady harmonic tone (f0 120..300 Hz, 1-3 harmonics)
  1 chirp        repeated exponential frequency sweeps (up or down, 300..600 <-> 1500..3000 Hz)
  2 noise_burst  short band-pass noise bursts at random times (centre 1.5..2.8 kHz)
  3 click_train  periodic clicks (4..30 per second; decaying 1.5..3 kHz resonances)
  4 am_tone      amplitude-modulated tone (carrier 400..800 Hz, 3..12 Hz modulation)
  5 fm_tone      frequency-modulated tone (carrier 0.8..1.6 kHz, vibrato 3..10 Hz, 5..20 %)

Every clip: CLIP_SECONDS long, one sound of 1.4 s or more (random onset, 10 ms fades) at -24..-3
dBFS peak over a -60..-45 dBFS rms white-noise floor; all frequencies below MAX_FREQUENCY, so
every rate holds the same sounds.
"""
import numpy as np
import tensorflow_datasets as tfds

from intermix_jax.data import audio_builder
from intermix_jax.data import audio_decode

CLASS_NAMES = ('tone', 'chirp', 'noise_burst', 'click_train', 'am_tone', 'fm_tone')
NUM_FOLDS = 5
CLIPS_PER_CLASS_PER_FOLD = 10
CLIP_SECONDS = 2.0
MAX_FREQUENCY = 3500.0  # Hz; below the 4 kHz Nyquist frequency of the 8 kHz config
_SEED = 20220523         # the dataset is a constant: never change (bump VERSION if you must)


def _log_uniform(rng, lo, hi):
  return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _fade_window(t, start, stop, fade=0.01):
  """1 inside [start, stop] (seconds), raised-cosine fades of `fade` s, 0 outside. t: (n,)."""
  rise = np.clip((t - start) / fade, 0.0, 1.0)
  fall = np.clip((stop - t) / fade, 0.0, 1.0)
  return np.sin(0.5 * np.pi * rise) ** 2 * np.sin(0.5 * np.pi * fall) ** 2


def _tone(rng, t, sr, noise):
  f0 = _log_uniform(rng, 120, 300)
  amps = rng.uniform(0.2, 1.0, size=3) * np.array([1.0, 0.6, 0.3])
  phases = rng.uniform(0, 2 * np.pi, size=3)
  return sum(a * np.sin(2 * np.pi * k * f0 * t + p)
             for k, (a, p) in enumerate(zip(amps, phases), start=1) if k * f0 < MAX_FREQUENCY)


def _chirp(rng, t, sr, noise):
  period = rng.uniform(0.15, 0.5)
  f_lo, f_hi = _log_uniform(rng, 300, 600), _log_uniform(rng, 1500, 3000)
  up = rng.uniform() < 0.5
  tau = np.mod(t, period) / period            # position inside the current sweep, [0, 1)
  ratio = f_hi / f_lo
  u = tau if up else 1.0 - tau
  # phase = 2 pi * integral of f_lo * ratio**u over the sweep
  phase = 2 * np.pi * f_lo * period / np.log(ratio) * (ratio ** u - 1.0) * (1 if up else -1)
  return np.sin(phase) * np.sin(np.pi * tau) ** 0.5


def _noise_burst(rng, t, sr, noise):
  rate = rng.uniform(2, 6)
  center = _log_uniform(rng, 1500, 2800)
  width = center * rng.uniform(0.3, 0.8)
  gaps = rng.exponential(1.0 / rate, size=20)
  lengths = rng.uniform(0.03, 0.15, size=20)
  starts = np.cumsum(gaps) - gaps[0]
  env = np.zeros_like(t)
  for s, length in zip(starts, lengths):
    i0, i1 = int(s * sr), min(t.shape[0], int(np.ceil((s + length) * sr)) + 1)
    if i0 < i1:
      env[i0:i1] = np.maximum(env[i0:i1], _fade_window(t[i0:i1], s, s + length, fade=0.005))
  import scipy.signal  # pylint: disable=g-import-not-at-top (slow; only building the set needs it)
  sos = scipy.signal.butter(2, [center - width / 2, min(center + width / 2, MAX_FREQUENCY)],
                            btype='bandpass', fs=sr, output='sos')
  return scipy.signal.sosfilt(sos, noise.standard_normal(t.shape[0])) * env


def _click_train(rng, t, sr, noise):
  rate = rng.uniform(4, 30)
  freq = _log_uniform(rng, 1500, 3000)
  decay = rng.uniform(0.5e-3, 2e-3)
  offset = rng.uniform(0, 1.0 / rate)
  since_click = np.mod(t - offset, 1.0 / rate) / decay   # time since the last click, in decays
  envelope = since_click * np.exp(1.0 - since_click)      # smooth onset (gammatone-like), peak 1
  return np.sin(2 * np.pi * freq * since_click * decay) * envelope * (t >= offset)


def _am_tone(rng, t, sr, noise):
  fc, fm = _log_uniform(rng, 400, 800), rng.uniform(3, 12)
  depth, phase = rng.uniform(0.7, 1.0), rng.uniform(0, 2 * np.pi)
  return (1 + depth * np.sin(2 * np.pi * fm * t + phase)) * np.sin(2 * np.pi * fc * t)


def _fm_tone(rng, t, sr, noise):
  fc, fm = _log_uniform(rng, 800, 1600), rng.uniform(3, 10)
  deviation = fc * rng.uniform(0.05, 0.2)
  return np.sin(2 * np.pi * fc * t + deviation / fm * np.sin(2 * np.pi * fm * t))


_GENERATORS = (_tone, _chirp, _noise_burst, _click_train, _am_tone, _fm_tone)
assert len(_GENERATORS) == len(CLASS_NAMES)


def synthesize(class_index: int, fold: int, index: int, sample_rate: int) -> np.ndarray:
  """One synthetic clip as float64 (round(CLIP_SECONDS * sample_rate),) in [-1, 1].

  Deterministic in (class_index, fold, index, sample_rate); the scalar parameters (frequencies,
  rates, onset, level) depend only on (class_index, fold, index).
  """
  if not 0 <= class_index < len(CLASS_NAMES):
    raise ValueError(f'synthetic class_index {class_index} out of range 0..{len(CLASS_NAMES) - 1}')
  rng = np.random.default_rng([_SEED, class_index, fold, index])
  noise = np.random.default_rng([_SEED, class_index, fold, index, sample_rate])
  n = int(round(CLIP_SECONDS * sample_rate))
  t = np.arange(n) / sample_rate
  onset = rng.uniform(0.0, 0.25)
  stop = onset + rng.uniform(1.4, CLIP_SECONDS - onset)
  level = 10 ** (rng.uniform(-24, -3) / 20)
  floor = 10 ** (rng.uniform(-60, -45) / 20)
  sound = _GENERATORS[class_index](rng, t, sample_rate, noise)
  sound = sound / max(np.max(np.abs(sound)), 1e-12) * level * _fade_window(t, onset, stop)
  return np.clip(sound + floor * noise.standard_normal(n), -1.0, 1.0)


class SyntheticSounds(audio_builder.AudioClipBuilder):
  """SYNTHETIC generated sounds (not real recordings): 6 classes x 5 folds x 10 clips."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = audio_builder.sample_rate_configs('', 'synthetic')
  DEFAULT_BUILDER_CONFIG_NAME = 'sr16000'
  READS_SOURCE_FILES = False
  CLASS_NAMES, NUM_FOLDS = CLASS_NAMES, NUM_FOLDS
  DESCRIPTION = ('SYNTHETIC sounds generated by intermix_jax (tones, chirps, noise bursts, click '
                 'trains, AM and FM tones) for offline demos and tests. Not real audio.')

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {f'fold{fold}': self._synthetic_examples(fold) for fold in range(1, NUM_FOLDS + 1)}

  def _synthetic_examples(self, fold: int):
    for c, name in enumerate(CLASS_NAMES):
      for i in range(CLIPS_PER_CLASS_PER_FOLD):
        filename = f'synthetic-{fold}-{name}-{i:02d}'
        audio = audio_decode.to_int16(synthesize(c, fold, i, self.sample_rate))
        yield filename, {'audio': audio, 'label': c, 'filename': filename, 'fold': fold}
