"""Typed `key=value,key=value` overrides for ConfigDicts (the `configs/x.py:ARG` string).

    parse_overrides(config, "backbone=envnet,opt.lr=0.05,mixing.eligible_layers=(1,2),fold=all")
      -> {'backbone': 'envnet', 'opt.lr': 0.05, 'mixing.eligible_layers': (1, 2), 'fold': 'all'}

Each value is converted to the type of the field it overrides (the FieldReference type when the field
has one, else the type of its current value): bool accepts true/false/1/0/yes/no, int rejects
fractions, float accepts ints, tuple accepts a Python literal or a bare scalar, nullable fields accept
`None`. Commas inside brackets or quotes belong to the value, and one pair of surrounding quotes is
removed: `manual_dir="/data/a,b"` sets '/data/a,b' (on a shell command line keep the quotes:
`--config='configs/x.py:manual_dir="/data/a,b"'`). Unknown keys raise a ValueError listing the valid
ones; badly typed values raise a ValueError naming the field and the expected type; a bare item
after a key=value one (an unquoted comma in a value) says how to quote.
"""
from __future__ import annotations

import ast
from typing import Any

import ml_collections


def split_top_level(text: str, sep: str = ',') -> list[str]:
  """Splits `text` at `sep` characters that are not inside (), [] or {} and not inside quotes."""
  parts, depth, quote, current = [], 0, None, []
  for ch in text:
    if quote:
      if ch == quote:
        quote = None
    elif ch in '\'"':
      quote = ch
    elif ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append(''.join(current))
      current = []
      continue
    current.append(ch)
  parts.append(''.join(current))
  return [p.strip() for p in parts if p.strip()]


def valid_keys(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  """Every leaf field of `config` as a dotted key, sorted."""
  keys = []
  for name in config.keys():
    value = config[name]
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(valid_keys(value, f'{prefix}{name}.'))
    else:
      keys.append(f'{prefix}{name}')
  return sorted(keys)


def _parent_and_name(config: ml_collections.ConfigDict, key: str):
  *path, name = key.split('.')
  node = config
  for part in path:
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      return None, name
    node = node[part]
  if name not in node or isinstance(node[name], ml_collections.ConfigDict):
    return None, name
  return node, name


def field_type(config: ml_collections.ConfigDict, key: str) -> tuple[type, bool]:
  """(type, nullable) of the dotted field `key`; ValueError listing valid keys when unknown."""
  node, name = _parent_and_name(config, key)
  if node is None:
    raise ValueError(f'unknown config field {key!r}; valid fields: {", ".join(valid_keys(config))}')
  ref = node.get_ref(name)
  ftype = ref.get_type()
  value = node[name]
  nullable = value is None or ftype is object
  if ftype is type(None):  # a plain None default: accept anything literal
    ftype = object
  return ftype, nullable


_TRUE = ('true', '1', 'yes', 'y', 'on')
_FALSE = ('false', '0', 'no', 'n', 'off')


def _literal(raw: str) -> Any:
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def convert(key: str, raw: str, ftype: type, nullable: bool) -> Any:
  """Converts the string `raw` to `ftype` for field `key`; ValueError naming the field otherwise."""
  text = raw.strip()
  if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
    text = text[1:-1]
  if nullable and text in ('None', 'none', 'null'):
    return None
  try:
    if ftype is bool:
      if text.lower() in _TRUE:
        return True
      if text.lower() in _FALSE:
        return False
      raise ValueError
    if ftype is int:
      return int(text)
    if ftype is float:
      return float(text)
    if ftype is str:
      return text
    if ftype is tuple:
      value = _literal(text)
      if isinstance(value, (list, tuple)):
        return tuple(value)
      return (value,)
    return _literal(text)  # object: Python literal, else the string itself
  except ValueError:
    raise ValueError(
        f'config field {key!r} expects {ftype.__name__}, got {raw!r}') from None


def _comma_hint(items: list[str], i: int) -> str:
  """For a bare item after a key=value one: the value probably held commas; show the quoting."""
  if i == 0 or '=' not in items[i - 1]:
    return ''
  key, value = (t.strip() for t in items[i - 1].split('=', 1))
  j = i
  while j < len(items) and '=' not in items[j]:
    j += 1
  quoted = f'{key}="{",".join([value] + items[i:j])}"'
  return (f'; commas separate overrides, so quote a value that holds commas: {quoted} (and keep '
          f"the quotes from the shell: --config='configs/x.py:{quoted}')")


def parse_overrides(config: ml_collections.ConfigDict, arg: str | None) -> dict[str, Any]:
  """Parses `key=value,key=value` into {dotted key: typed value} against the fields of `config`."""
  out: dict[str, Any] = {}
  if not arg:
    return out
  items = split_top_level(arg)
  for i, item in enumerate(items):
    if '=' not in item:
      raise ValueError(f'config override {item!r} is not key=value (in {arg!r})' +
                       _comma_hint(items, i))
    key, raw = item.split('=', 1)
    key = key.strip()
    ftype, nullable = field_type(config, key)
    out[key] = convert(key, raw, ftype, nullable)
  return out


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets dotted field `key` (which must exist) to an already-typed `value`."""
  node, name = _parent_and_name(config, key)
  if node is None:
    raise ValueError(f'unknown config field {key!r}; valid fields: {", ".join(valid_keys(config))}')
  ftype = node.get_ref(name).get_type()
  if ftype is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if ftype is tuple and isinstance(value, list):
    value = tuple(value)
  try:
    node[name] = value
  except TypeError as e:
    raise ValueError(f'config field {key!r}: {e}') from None


def apply_overrides(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Parses `arg` and sets each field in place; returns `config`."""
  for key, value in parse_overrides(config, arg).items():
    set_field(config, key, value)
  return config
