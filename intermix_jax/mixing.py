"""Mixing laws (docs/method.md §3) and the strategy registry (docs/architecture.md, "Strategies").

Laws (pure functions of arrays; one example at a time, batch them with jax.vmap):
  mix_ratio(g_i, g_j, r)         BC's sound ratio p from two A-weighted levels (dB) and the label ratio r
  bc_mix(h_i, h_j, p)            (p h_i + (1-p) h_j) / sqrt(p^2 + (1-p)^2)
  interference_mix(...)          InterMix steps 2-4 (phase interference of two tensors)
  mix_labels(y_i, y_j, r)        r y_i + (1-r) y_j

Strategies ("standard", "mixup", "bc", "speechmix", "intermix"):
  strategy = get_strategy(name, **options)           # frozen, hashable dataclass (static under jit)
  strategy_options(name)                              # the options it takes, e.g. bc: eligible_layers,
                                                      # p_weighting (any other option is refused)
  plan = strategy.plan(key, batch_size, num_mix_points)
  x = strategy.prepare_input(plan, x)                 # InterMix: phase shift of every waveform row
  mix_fn = strategy.mixer(plan, sample_rate)          # (h, k) -> h, mixes iff plan.layer == k
  targets = strategy.targets(plan, labels_onehot)     # (N, C) soft targets
  loss = strategy.loss(logits, targets)               # KL for mixing strategies, CE for standard
  h = mix_point(h, k, mix_fn, channel_axis=-1)        # in a model: a channel-last hidden tensor

A mixing batch has N even rows; rows 2k and 2k+1 are a pair of sounds of different classes.
How a pair becomes mixtures is the strategy's `pairing` option (docs/method.md §3, "Pairs"):
  'shared'       row n mixes with its partner n ^ 1 with its own ratio r[n]: each pair yields two
                 mixtures and the N sounds give N mixtures (the SpeechMix / InterMix codes' scheme;
                 the default of mixup, speechmix and intermix).
  'independent'  each pair yields ONE mixture with its own ratio r[2k]: N sounds give N / 2
                 mixtures, each from its own pair (BC's reference code: every mixture draws its own
                 two sounds; the default of bc). Only for strategies that mix at the input alone
                 (eligible layers (0,)): the batch halves there, before the model.
`strategy.sounds_per_example` (2 for 'independent', else 1) is how many sounds the loader
delivers per training example. The partner is taken by flipping within pairs (a reshape, no
gather), so a batch sharded on an even number of rows per device mixes without cross-device
traffic.
"""
import dataclasses
import math
from typing import Callable, ClassVar, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from intermix_jax import audio
from intermix_jax import losses

__all__ = ['mix_ratio', 'bc_mix', 'interference_mix', 'mix_labels', 'partner', 'MixPlan', 'Strategy',
           'Standard', 'Mixup', 'BC', 'SpeechMix', 'InterMix', 'get_strategy', 'strategy_options',
           'mix_point', 'build_strategy', 'STRATEGY_NAMES', 'OPTION_NAMES', 'SIGNED_MODES',
           'PAIRINGS']

SIGNED_MODES = ('superpose', 'clamp')
PAIRINGS = ('shared', 'independent')  # how a pair of sounds becomes mixtures (module docstring)
# Every strategy option (the fields of configs/base.py `mixing`); each strategy takes a subset.
OPTION_NAMES = ('eligible_layers', 'p_weighting', 'normalize', 'signed_mode',
                'stop_gradient_interference', 'alpha', 'pairing')
# Largest ratio sqrt|b| / sqrt|a| used in the derivative of sqrt(a b): keeps gradients finite when
# one factor is denormal-small and the other huge (the exact derivative would overflow float32).
_MAX_SQRT_RATIO = 1e30


# ----------------------------------------------------------------------------------------------
# Laws
# ----------------------------------------------------------------------------------------------
def mix_ratio(g_i: jax.Array, g_j: jax.Array, r: jax.Array) -> jax.Array:
  """BC's sound ratio p = 1 / (1 + 10^((g_i - g_j) / 20) (1 - r) / r) (docs/method.md §3 bc).

  Args:
    g_i, g_j: levels of the two sounds in dB (broadcastable arrays, e.g. `audio.a_weighted_gain`).
    r: label ratio in [0, 1] (broadcastable).

  Returns:
    p in [0, 1], broadcast shape. Computed as sigmoid(logit(r) - (g_i - g_j) ln(10) / 20), which is
    the same number without overflow for large level differences; r = 0 gives 0 and r = 1 gives 1.
  """
  g_i, g_j = jnp.asarray(g_i), jnp.asarray(g_j)
  r = jnp.asarray(r, jnp.result_type(g_i, g_j, jnp.float32))
  logit_r = jnp.log(r) - jnp.log1p(-r)
  return jax.nn.sigmoid(logit_r - (g_i - g_j) * (math.log(10.0) / 20.0))


def bc_mix(h_i: jax.Array, h_j: jax.Array, p: jax.Array) -> jax.Array:
  """(p h_i + (1-p) h_j) / sqrt(p^2 + (1-p)^2): BC's energy-normalised mix (docs/method.md §3 bc).

  h_i, h_j: tensors of one shape; p: ratio broadcastable against them (a scalar per example).
  Returns the broadcast shape, in h's units.
  """
  h_i, h_j = jnp.asarray(h_i), jnp.asarray(h_j)
  p = jnp.asarray(p, jnp.result_type(h_i, h_j))
  return (p * h_i + (1 - p) * h_j) * jax.lax.rsqrt(p * p + (1 - p) * (1 - p))


def mix_labels(y_i: jax.Array, y_j: jax.Array, r: jax.Array) -> jax.Array:
  """r y_i + (1 - r) y_j for label vectors y (..., C) and ratios r (...) (one per row)."""
  y_i, y_j = jnp.asarray(y_i), jnp.asarray(y_j)
  dtype = jnp.result_type(y_i, y_j, jnp.float32)
  r = jnp.asarray(r, dtype)[..., None]
  return r * y_i.astype(dtype) + (1 - r) * y_j.astype(dtype)


def _opposite_signs(a: jax.Array, b: jax.Array) -> jax.Array:
  """a * b < 0 elementwise, decided on signs (no overflow/underflow of the product)."""
  return ((a > 0) & (b < 0)) | ((a < 0) & (b > 0))


@jax.custom_jvp
def _sqrt_product(a: jax.Array, b: jax.Array) -> jax.Array:
  """sqrt(max(a b, 0)) as sqrt|a| sqrt|b| (no overflow at |a|,|b| ~ 1e20, no underflow at 1e-20).

  Derivative: the exact one where a, b != 0 (its ratio sqrt|b|/sqrt|a| capped at 1e30); 0 where a
  factor is 0 (where the exact derivative is infinite) or where the signs differ (clamped region).
  """
  return jnp.where(_opposite_signs(a, b), 0.0, jnp.sqrt(jnp.abs(a)) * jnp.sqrt(jnp.abs(b)))


@_sqrt_product.defjvp
def _sqrt_product_jvp(primals, tangents):
  a, b = primals
  da, db = tangents
  root_a, root_b = jnp.sqrt(jnp.abs(a)), jnp.sqrt(jnp.abs(b))
  opposite = _opposite_signs(a, b)
  out = jnp.where(opposite, 0.0, root_a * root_b)

  def capped_ratio(num, den):
    positive = den > 0
    return jnp.where(positive, jnp.minimum(num / jnp.where(positive, den, 1.0), _MAX_SQRT_RATIO), 0.0)

  d_out = 0.5 * (jnp.sign(a) * capped_ratio(root_b, root_a) * da
                 + jnp.sign(b) * capped_ratio(root_a, root_b) * db)
  return out, jnp.where(opposite, 0.0, d_out)


def interference_mix(h_i: jax.Array, h_j: jax.Array, p: jax.Array, dphi: jax.Array, *,
                     normalize: bool = True, signed_mode: str = 'superpose',
                     stop_gradient_interference: bool = False) -> jax.Array:
  """InterMix's mix of two tensors of ONE example (docs/method.md §3 intermix, steps 2-4).

      h~_i = c p h_i,  h~_j = c (1 - p) h_j,  c = 1 / sqrt(p^2 + (1-p)^2)  (c = 1 if not normalize)
      h = h~_i + h~_j + 2 sqrt(h~_i h~_j) cos(dphi)

  Args:
    h_i, h_j: the two tensors (same shape), e.g. post-ReLU activations of one example each.
    p: sound ratio (scalar or broadcastable), weight of h_i.
    dphi: phase difference phi_i - phi_j in radians (scalar or broadcastable).
    normalize: divide by sqrt(p^2 + (1-p)^2) (the paper); False reproduces the reference code.
    signed_mode: what to do when h_i * h_j < 0 anywhere in the inputs (a signed tensor such as
      the raw waveform, where sqrt(h_i h_j) is undefined): 'superpose' drops the interference term
      for the whole input, giving h~_i + h~_j (= bc_mix of the phase-shifted tensors when
      normalised); 'clamp' uses sqrt(max(h~_i h~_j, 0)) elementwise.
    stop_gradient_interference: detach the interference term (as the reference code does).

  Returns:
    The mixture, broadcast shape of the inputs. Never NaN for finite inputs; gradients are finite
    everywhere, including h = 0 (safe sqrt with a custom JVP). For elementwise non-negative
    inputs the output is non-negative (non-positive for non-positive inputs).

  The whole input is treated as one example (the "anywhere" reduction of `signed_mode` spans
  every element): use jax.vmap to mix a batch example by example.
  """
  if signed_mode not in SIGNED_MODES:
    raise ValueError(f'mixing.interference_mix: signed_mode must be one of {SIGNED_MODES}, '
                     f'got {signed_mode!r}')
  h_i, h_j = jnp.asarray(h_i), jnp.asarray(h_j)
  dtype = jnp.result_type(h_i, h_j, jnp.float32)
  h_i, h_j = jnp.broadcast_arrays(h_i.astype(dtype), h_j.astype(dtype))
  p = jnp.asarray(p, dtype)
  dphi = jnp.asarray(dphi, dtype)
  scale = jax.lax.rsqrt(p * p + (1 - p) * (1 - p)) if normalize else jnp.ones((), dtype)
  a = scale * p * h_i
  b = scale * (1 - p) * h_j
  a, b = jnp.broadcast_arrays(a, b)
  interference = 2.0 * _sqrt_product(a, b) * jnp.cos(dphi)
  if stop_gradient_interference:
    interference = jax.lax.stop_gradient(interference)
  if signed_mode == 'superpose':
    interference = jnp.where(jnp.any(_opposite_signs(h_i, h_j)), 0.0, interference)
  out = a + b + interference
  # (sqrt a - sqrt b)^2 <= out for a, b >= 0: keep the sign exactly despite rounding.
  # (where, not maximum: a tie at out = 0, common for ReLU zeros, keeps its full gradient.)
  out = jnp.where((h_i >= 0) & (h_j >= 0) & (out < 0), 0.0, out)
  return jnp.where((h_i <= 0) & (h_j <= 0) & (out > 0), 0.0, out)


def first_of_pairs(x: jax.Array) -> jax.Array:
  """Rows 0, 2, 4, ... of x (N, ...) (N even): the first sound of each pair, (N / 2, ...)."""
  n = x.shape[0]
  if n % 2:
    raise ValueError(f'mixing: a mixing batch needs an even number of rows (pairs 2k, 2k+1), got {n}')
  return x.reshape((n // 2, 2) + x.shape[1:])[:, 0]


def partner(x: jax.Array) -> jax.Array:
  """Rows of x (N, ...) reordered so that row n holds row n ^ 1 (N even): flips within pairs."""
  n = x.shape[0]
  if n % 2:
    raise ValueError(f'mixing: a mixing batch needs an even number of rows (pairs 2k, 2k+1), got {n}')
  return jnp.flip(x.reshape((n // 2, 2) + x.shape[1:]), axis=1).reshape(x.shape)


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------
@struct.dataclass
class MixPlan:
  """One step's mixing randomness (a pytree; every field is traced, so changing it never retraces).

  layer: int32 scalar, the mix point chosen for this step (-1 for 'standard': never mixes).
  r: (N,) float32 label ratio of row n (weight of row n's own label): U(0, 1) for bc, speechmix
    and intermix, Beta(alpha, alpha) for mixup (the mixup lambda), ones for standard.
  phi: (N,) float32 phase of each sound in radians, U(-pi/2, pi/2) for intermix, zeros otherwise.
  """
  layer: jax.Array
  r: jax.Array
  phi: jax.Array


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_bool(name: str, value) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f'mixing: option {name} must be True or False, got {value!r}')
  return bool(value)


def _check_signed_mode(value) -> str:
  if value not in SIGNED_MODES:
    raise ValueError(f'mixing: option signed_mode must be one of {SIGNED_MODES}, got {value!r}')
  return value


def _check_pairing(value) -> Optional[str]:
  if value is not None and value not in PAIRINGS:
    raise ValueError(f'mixing: option pairing must be one of {PAIRINGS} (or None: the strategy\'s '
                     f'default), got {value!r}')
  return value


def _check_alpha(alpha) -> float:
  if (isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating))
      or not math.isfinite(alpha) or alpha <= 0):
    raise ValueError(f'mixing: option alpha (mixup Beta(alpha, alpha)) must be a finite number > 0, '
                     f'got {alpha!r}')
  return float(alpha)


def _check_eligible_layers(layers) -> Optional[Tuple[int, ...]]:
  if layers is None:
    return None
  if isinstance(layers, (str, bytes)) or not hasattr(layers, '__iter__'):
    raise ValueError(f'mixing: option eligible_layers must be None or a sequence of mix point '
                     f'indices, got {layers!r}')
  layers = tuple(layers)
  if not layers:
    raise ValueError('mixing: option eligible_layers is empty; use None for the default')
  if not all(_is_int(k) and k >= 0 for k in layers):
    raise ValueError(f'mixing: option eligible_layers must hold non-negative integers, got {layers!r}')
  if len(set(layers)) != len(layers):
    raise ValueError(f'mixing: option eligible_layers has duplicates: {layers!r}')
  return tuple(int(k) for k in layers)


# Each option's check: its type and range, one line naming it; returns the normalised value.
_OPTION_CHECKS = {
    'eligible_layers': _check_eligible_layers,
    'p_weighting': lambda v: _check_bool('p_weighting', v),
    'normalize': lambda v: _check_bool('normalize', v),
    'signed_mode': _check_signed_mode,
    'stop_gradient_interference': lambda v: _check_bool('stop_gradient_interference', v),
    'alpha': _check_alpha,
    'pairing': _check_pairing,
}


@dataclasses.dataclass(frozen=True)
class Strategy:
  """Base of the mixing strategies. Each subclass declares the options it uses as its dataclass
  fields (`strategy_options(name)`), checked by the constructor (`_OPTION_CHECKS`); an option it
  does not use is refused (`get_strategy` names it). The options:
    eligible_layers: mix points a step draws its layer from, uniformly; None means (0,) for mixup
      and bc, every hidden point 1..K-1 for speechmix and intermix.
    p_weighting: bc/speechmix/intermix mix sounds with BC's p from the A-weighted levels; False
      mixes with r itself (labels always use r).
    normalize, signed_mode, stop_gradient_interference: intermix, see `interference_mix`.
    alpha: mixup's Beta(alpha, alpha) parameter (> 0).
    pairing: 'shared' or 'independent' (module docstring); None means the strategy's default
      (`default_pairing`: 'independent' for bc, 'shared' for the others) where its layers allow it,
      else 'shared' (bc at hidden layers): resolved here, so the strategy always holds the pairing
      it uses. 'independent' needs eligible layers (0,).
  """
  name: ClassVar[str] = ''
  mixes: ClassVar[bool] = True
  default_pairing: ClassVar[str] = 'shared'
  _default_input_only: ClassVar[bool] = True  # eligible_layers=None -> (0,)

  def __post_init__(self):
    for field in dataclasses.fields(self):
      object.__setattr__(self, field.name, _OPTION_CHECKS[field.name](getattr(self, field.name)))
    if hasattr(self, 'pairing'):
      input_only = (self.eligible_layers == (0,) if self.eligible_layers is not None
                    else self._default_input_only)
      if self.pairing is None:  # the default where it applies: hidden layers need shared pairs
        object.__setattr__(self, 'pairing', self.default_pairing if input_only else 'shared')
      if self.pairing == 'independent' and not input_only:
        raise ValueError(f'mixing: {self.name} option pairing=\'independent\' halves the batch at the '
                         f'input, so it needs eligible_layers=(0,) (got '
                         f'{self.eligible_layers!r}); use pairing=\'shared\' to mix hidden layers')

  @property
  def independent_pairs(self) -> bool:
    """Each pair of sounds yields one mixture (pairing='independent')."""
    return getattr(self, 'pairing', 'shared') == 'independent'

  @property
  def sounds_per_example(self) -> int:
    """Sounds the loader delivers per training example: 2 with independent pairs, else 1."""
    return 2 if self.independent_pairs else 1

  def label(self) -> str:
    """Short name of the strategy and its non-default options, e.g. 'bc',
    'intermix[layers=0,r-weighting]', 'bc[shared-pairs]' (results.json `method`, the report's rows)."""
    opts = []
    if self.mixes:
      if getattr(self, 'eligible_layers', None) is not None:
        opts.append('layers=' + ','.join(str(k) for k in self.eligible_layers))
      if not getattr(self, 'p_weighting', True):
        opts.append('r-weighting')
    opts += self._option_labels()
    if hasattr(self, 'pairing') and self.pairing != type(self)(**{
        f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != 'pairing'}).pairing:
      opts.append(f'{self.pairing}-pairs')  # not what pairing=None gives with these options
    return self.name + ('[' + ','.join(opts) + ']' if opts else '')

  def _option_labels(self) -> list:
    return []

  # --- layer choice ----------------------------------------------------------------------------
  def layers(self, num_mix_points: int) -> Tuple[int, ...]:
    """The eligible mix points for a model with `num_mix_points` points (validated, static)."""
    if not _is_int(num_mix_points) or num_mix_points < 1:
      raise ValueError(f'mixing: num_mix_points must be a positive Python int, got {num_mix_points!r}')
    eligible = getattr(self, 'eligible_layers', None)  # standard has no options
    if eligible is not None:
      bad = [k for k in eligible if k >= num_mix_points]
      if bad:
        raise ValueError(f'mixing: {self.name} option eligible_layers={eligible} has '
                         f'{bad} but the model has only mix points 0..{num_mix_points - 1} '
                         f'(num_mix_points={num_mix_points})')
      return eligible
    if self._default_input_only:
      return (0,)
    if num_mix_points < 2:
      raise ValueError(f'mixing: {self.name} mixes hidden points 1..K-1 by default, but the model '
                       f'has num_mix_points={num_mix_points}; set eligible_layers=(0,) to mix the input')
    return tuple(range(1, num_mix_points))

  def _may_mix_at(self, k: int) -> bool:
    """Static: can point k ever be chosen (points that cannot are skipped without any code)."""
    eligible = getattr(self, 'eligible_layers', None)
    if eligible is not None:
      return k in eligible
    return k == 0 if self._default_input_only else k >= 1

  # --- the contract ------------------------------------------------------------------------------
  def plan(self, key: jax.Array, batch_size: int, num_mix_points: int) -> MixPlan:
    """Draw one step's plan from `key` for a batch of `batch_size` rows (static ints).

    layer ~ uniform over `layers(num_mix_points)`; r (N,) and phi (N,) per row (see MixPlan).
    """
    if not _is_int(batch_size) or batch_size < 1:
      raise ValueError(f'mixing: batch_size must be a positive Python int, got {batch_size!r}')
    if self.mixes and batch_size % 2:
      raise ValueError(f'mixing: {self.name} needs an even batch_size (rows 2k, 2k+1 are pairs), '
                       f'got {batch_size}')
    layers = self.layers(num_mix_points)
    key_layer, key_r, key_phi = jax.random.split(key, 3)
    index = jax.random.randint(key_layer, (), 0, len(layers))
    layer = jnp.asarray(layers, jnp.int32)[index]
    return MixPlan(layer=layer, r=self._draw_r(key_r, batch_size),
                   phi=self._draw_phi(key_phi, batch_size))

  def _draw_r(self, key: jax.Array, n: int) -> jax.Array:
    return jax.random.uniform(key, (n,), jnp.float32)

  def _draw_phi(self, key: jax.Array, n: int) -> jax.Array:
    del key
    return jnp.zeros((n,), jnp.float32)

  def prepare_input(self, plan: MixPlan, x: jax.Array) -> jax.Array:
    """The raw input batch x (N, ..., T) before the model; identity except for intermix."""
    del plan
    return x

  def mixer(self, plan: MixPlan, sample_rate: float) -> Callable[[jax.Array, int], jax.Array]:
    """mix_fn(h, k) for the model: mixes h (N, ...) iff plan.layer == k, else returns h.

    `k` is the Python int index of the mix point; `sample_rate` (Hz, static) is the model's input
    rate. With p-weighting, each row of h is flattened in its own row-major order and read as a
    signal at `sample_rate` for the A-weighted gain (docs/method.md §3 speechmix), so h must be
    channel-first, (N, C, ...), the reference code's NCHW order (the backbones present it so; pass
    a channel-last tensor through `mix_point(h, k, mix_fn, channel_axis=-1)`); the gains set p
    only, no gradient flows through them. The layer test is a lax.cond on the traced plan.layer, so one
    compiled function serves every layer; points that can never be chosen (not eligible) return h
    without adding any computation. The mixed tensor keeps h's shape and dtype (laws run in float32
    at least), except with independent pairs: there point 0 is always mixed and returns (N / 2, ...)
    rows, mixture k from rows 2k and 2k+1.
    """
    if not self.mixes:
      return lambda h, k: h
    audio.frame_length(sample_rate)  # validates the rate

    def mix_fn(h: jax.Array, k: int) -> jax.Array:
      if not _is_int(k) or k < 0:
        raise ValueError(f'mixing: the mix point index k must be a non-negative Python int, got {k!r}')
      if not self._may_mix_at(k):
        return h
      if h.ndim < 1 or h.shape[0] != plan.r.shape[0]:
        raise ValueError(f'mixing: {self.name} plan has {plan.r.shape[0]} rows but the tensor at mix '
                         f'point {k} has shape {h.shape}')
      if self.independent_pairs:  # the only eligible point is 0: always mixed, N -> N / 2 rows
        return self._mix(plan, h, sample_rate)
      return jax.lax.cond(plan.layer == k, lambda t: self._mix(plan, t, sample_rate),
                          lambda t: t, h)

    return mix_fn

  def targets(self, plan: MixPlan, labels_onehot: jax.Array) -> jax.Array:
    """Soft targets (N, C): r y_n + (1 - r) y_{n^1} (mixup: lambda); one-hot for standard.
    With independent pairs (N / 2, C): the rows of the first sound of each pair."""
    y = jnp.asarray(labels_onehot)
    if y.ndim != 2 or y.shape[0] != plan.r.shape[0]:
      raise ValueError(f'mixing: labels_onehot must be (N, C) with N={plan.r.shape[0]} rows, '
                       f'got shape {y.shape}')
    targets = mix_labels(y, partner(y), plan.r)
    return first_of_pairs(targets) if self.independent_pairs else targets

  def loss(self, logits: jax.Array, targets: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """KL(targets || softmax(logits)), mean over rows (cross-entropy for standard)."""
    return losses.kl_divergence(logits, targets, mask)

  # --- the mixing itself ------------------------------------------------------------------------
  def _mix(self, plan: MixPlan, h: jax.Array, sample_rate: float) -> jax.Array:
    """Mix every row of h (N, ...) with its partner row, example by example (vmap); with
    independent pairs only the first row of each pair: (N / 2, ...)."""
    ratio = self._sound_ratio(plan, h, sample_rate)
    dphi = plan.phi - partner(plan.phi)
    args = (h, partner(h), ratio, dphi)
    if self.independent_pairs:
      args = tuple(first_of_pairs(a) for a in args)
    mixed = jax.vmap(self._mix_example)(*args)
    return mixed.astype(h.dtype)

  def _sound_ratio(self, plan: MixPlan, h: jax.Array, sample_rate: float) -> jax.Array:
    """(N,) weight of each row's own tensor: r (strategies with p_weighting override this)."""
    del h, sample_rate
    return plan.r

  def _mix_example(self, h_i: jax.Array, h_j: jax.Array, ratio: jax.Array,
                   dphi: jax.Array) -> jax.Array:
    raise NotImplementedError(f'{type(self).__name__} does not mix')


@dataclasses.dataclass(frozen=True)
class Standard(Strategy):
  """No mixing: one-hot targets and softmax cross-entropy (plan.layer = -1)."""
  name: ClassVar[str] = 'standard'
  mixes: ClassVar[bool] = False

  def plan(self, key: jax.Array, batch_size: int, num_mix_points: int) -> MixPlan:
    if not _is_int(batch_size) or batch_size < 1:
      raise ValueError(f'mixing: batch_size must be a positive Python int, got {batch_size!r}')
    del key, num_mix_points
    return MixPlan(layer=jnp.asarray(-1, jnp.int32), r=jnp.ones((batch_size,), jnp.float32),
                   phi=jnp.zeros((batch_size,), jnp.float32))

  def targets(self, plan: MixPlan, labels_onehot: jax.Array) -> jax.Array:
    del plan
    return jnp.asarray(labels_onehot, jnp.float32)

  def loss(self, logits: jax.Array, targets: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    return losses.cross_entropy(logits, targets, mask)


def _p_weighted_ratio(plan: MixPlan, h: jax.Array, sample_rate: float) -> jax.Array:
  """(N,) BC's p of each row from the A-weighted levels of h's rows, each flattened row-major."""
  flat = h.reshape(h.shape[0], -1).astype(jnp.float32)
  # The levels only set a coefficient: no gradient flows through them (as in the reference code).
  gains = jax.lax.stop_gradient(audio.a_weighted_gain(flat, sample_rate))
  return mix_ratio(gains, partner(gains), plan.r)


@dataclasses.dataclass(frozen=True)
class Mixup(Strategy):
  """mixup: lambda h_i + (1 - lambda) h_j with lambda ~ Beta(alpha, alpha) per row (input by default).

  Options: eligible_layers, alpha, pairing.
  """
  eligible_layers: Optional[Tuple[int, ...]] = None
  alpha: float = 1.0
  pairing: Optional[str] = None

  name: ClassVar[str] = 'mixup'

  def _option_labels(self) -> list:
    return [f'alpha={self.alpha:g}'] if self.alpha != 1.0 else []

  def _draw_r(self, key: jax.Array, n: int) -> jax.Array:
    return jax.random.beta(key, self.alpha, self.alpha, (n,), jnp.float32)

  def _mix_example(self, h_i, h_j, ratio, dphi):
    del dphi
    return ratio * h_i + (1 - ratio) * h_j


@dataclasses.dataclass(frozen=True)
class BC(Strategy):
  """BC learning: bc_mix with BC's p (from A-weighted levels) at the input by default, each
  mixture from its own pair of sounds (pairing='independent', BC's reference code).

  Options: eligible_layers, p_weighting, pairing.
  """
  eligible_layers: Optional[Tuple[int, ...]] = None
  p_weighting: bool = True
  pairing: Optional[str] = None

  name: ClassVar[str] = 'bc'
  default_pairing: ClassVar[str] = 'independent'

  def _sound_ratio(self, plan: MixPlan, h: jax.Array, sample_rate: float) -> jax.Array:
    return _p_weighted_ratio(plan, h, sample_rate) if self.p_weighting else plan.r

  def _mix_example(self, h_i, h_j, ratio, dphi):
    del dphi
    return bc_mix(h_i, h_j, ratio)


@dataclasses.dataclass(frozen=True)
class SpeechMix(BC):
  """SpeechMix: the BC mix applied to the hidden tensor of a layer drawn per step (1..K-1 default).

  Options: eligible_layers, p_weighting, pairing.
  """
  name: ClassVar[str] = 'speechmix'
  default_pairing: ClassVar[str] = 'shared'
  _default_input_only: ClassVar[bool] = False


@dataclasses.dataclass(frozen=True)
class InterMix(Strategy):
  """InterMix: phase-shifted inputs, interference mix at a hidden layer drawn per step (1..K-1).

  Options: eligible_layers, p_weighting, normalize, signed_mode, stop_gradient_interference,
  pairing.
  """
  eligible_layers: Optional[Tuple[int, ...]] = None
  p_weighting: bool = True
  normalize: bool = True
  signed_mode: str = 'superpose'
  stop_gradient_interference: bool = False
  pairing: Optional[str] = None

  name: ClassVar[str] = 'intermix'
  _default_input_only: ClassVar[bool] = False

  def _option_labels(self) -> list:
    return ((['no-normalize'] if not self.normalize else [])
            + ([self.signed_mode] if self.signed_mode != 'superpose' else [])
            + (['stopgrad'] if self.stop_gradient_interference else []))

  def _draw_phi(self, key: jax.Array, n: int) -> jax.Array:
    return jax.random.uniform(key, (n,), jnp.float32, -math.pi / 2, math.pi / 2)

  def prepare_input(self, plan: MixPlan, x: jax.Array) -> jax.Array:
    """Phase-shift every waveform row of x (N, ..., T) by plan.phi[n] (docs/method.md §3 step 1)."""
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] != plan.phi.shape[0]:
      raise ValueError(f'mixing: intermix expects waveforms (N, ..., T) with N={plan.phi.shape[0]}, '
                       f'got shape {x.shape}')
    phi = plan.phi.reshape((-1,) + (1,) * (x.ndim - 2))
    return audio.phase_shift(x, phi)

  def _sound_ratio(self, plan: MixPlan, h: jax.Array, sample_rate: float) -> jax.Array:
    return _p_weighted_ratio(plan, h, sample_rate) if self.p_weighting else plan.r

  def _mix_example(self, h_i, h_j, ratio, dphi):
    return interference_mix(h_i, h_j, ratio, dphi, normalize=self.normalize,
                            signed_mode=self.signed_mode,
                            stop_gradient_interference=self.stop_gradient_interference)


_REGISTRY = {cls.name: cls for cls in (Standard, Mixup, BC, SpeechMix, InterMix)}
STRATEGY_NAMES = tuple(_REGISTRY)


def _check_name(name: str, where: str) -> None:
  if name not in _REGISTRY:
    raise ValueError(f'mixing.{where}: unknown strategy {name!r}; valid names: '
                     f'{", ".join(STRATEGY_NAMES)}')


def strategy_options(name: str) -> Tuple[str, ...]:
  """The options strategy `name` uses (a subset of OPTION_NAMES, in that order), e.g.
  ('eligible_layers', 'p_weighting') for 'bc' and () for 'standard'. Raises ValueError for an
  unknown name."""
  _check_name(name, 'strategy_options')
  return tuple(field.name for field in dataclasses.fields(_REGISTRY[name]))


def get_strategy(name: str, **options) -> Strategy:
  """The strategy `name` (one of STRATEGY_NAMES) with `options` (those of `strategy_options(name)`).

  Raises ValueError (one line) for an unknown name, an unknown option, an option the strategy does
  not use (e.g. alpha for 'bc'), or a bad value; the message names the culprit and the valid ones.
  From a config holding every option: `get_strategy(name, **{k: config[k] for k in
  strategy_options(name)})`.
  """
  _check_name(name, 'get_strategy')
  used = strategy_options(name)
  valid = ', '.join(used) or f'none ({name} takes no options)'
  unknown = sorted(set(options) - set(OPTION_NAMES))
  if unknown:
    raise ValueError(f'mixing.get_strategy: unknown option(s) {unknown} for {name!r}; valid options: '
                     f'{valid}')
  unused = sorted(set(options) - set(used))
  if unused:
    raise ValueError(f'mixing.get_strategy: {name!r} does not use option(s) {", ".join(unused)}; '
                     f'valid options: {valid}')
  return _REGISTRY[name](**options)


def build_strategy(config) -> Strategy:
  """The strategy of an experiment config: `config.strategy` with the options it uses from
  `config.mixing` (ValueError, one line, as `get_strategy`)."""
  return get_strategy(config.strategy, **{k: config.mixing[k] for k in strategy_options(config.strategy)
                                          if k in config.mixing})


def mix_point(h: jax.Array, k: int, mix: Optional[Callable[[jax.Array, int], jax.Array]],
              channel_axis: int = 1) -> jax.Array:
  """`mix(h, k)` at mix point k for a tensor whose channels lie on `channel_axis`.

  A strategy's mixer reads a hidden tensor channel-first, (N, C, ...): with p-weighting each row is
  flattened in that order and read as a signal for the A-weighted gain (docs/method.md §3). For a
  channel-last tensor, (N, T, C) or (N, H, W, C) as Flax layers produce them, call
  `mix_point(h, k, mix, channel_axis=-1)`: the channels are moved to axis 1 for `mix` and back,
  so the result equals mixing the channel-first tensor, transposed back (XLA removes the
  transposes where nothing is mixed).

  Args:
    h: (N, ...) tensor at mix point k (the waveform (N, T) at point 0: no channel axis to move).
    k: the point's index, a Python int.
    mix: the strategy's `mixer(plan, sample_rate)`, or None (no mixing: h is returned).
    channel_axis: the axis of h holding the channels (not 0, the batch axis); default 1.
  Returns:
    h's shape and dtype.
  """
  if mix is None:
    return h
  ndim = jnp.ndim(h)
  if not _is_int(channel_axis) or not -ndim <= channel_axis < ndim or channel_axis % ndim == 0:
    raise ValueError(f'mixing.mix_point: channel_axis must be an axis of the (N, ...) tensor other '
                     f'than the batch axis 0, i.e. in 1..{ndim - 1} or -{ndim - 1}..-1; got '
                     f'{channel_axis!r} for shape {jnp.shape(h)}')
  axis = channel_axis % ndim
  if axis == 1:
    return mix(h, k)
  return jnp.moveaxis(mix(jnp.moveaxis(h, axis, 1), k), 1, axis)


def method_label(config) -> str:
  """Short name of the training method, e.g. 'intermix', 'intermix[layers=0,r-weighting]+aug'
  (the strategy's `label()`, '+aug' with strong augmentation)."""
  return build_strategy(config).label() + ('+aug' if config.strong_augment else '')
