"""The papers' reference values (docs/method.md §3, §6, §7), read from `paper_values.json`
(package data) into the lookups the report uses. Errors in %; error lists follow the dataset
columns, `intermix_jax.protocol.PAPER_DATASETS` (checked on load).

  PAPER_TABLE1       {row: {strategy: (esc50, esc10, us8k)}}, rows ('<backbone>[+aug]') in order
  PAPER_TABLE2       {method label: (title, errors)}, the ablation on TABLE2_BACKBONE / TABLE2_ROW
  PAPER_TABLE3       {method: (error at each eps)}: FGSM on TABLE3_DATASET at PAPER_TABLE3_EPS
                     (normalised waveform, strongest first)
  DATASET_COLUMN     {dataset: column}; DATASET_TITLE {dataset: title}
  BACKBONE_ORDER     table 1's rows in order; BACKBONE_TITLE {row: title}
"""
from __future__ import annotations

import importlib.resources
import json

from intermix_jax import protocol

PAPER_VALUES_FILE = 'paper_values.json'


def load_paper_values() -> dict:
  """The parsed data file (see its 'about'); ValueError when its columns or lists do not fit."""
  text = importlib.resources.files(__package__).joinpath(PAPER_VALUES_FILE).read_text('utf-8')
  values = json.loads(text)
  columns = tuple(values['datasets']['columns'])
  if columns != tuple(protocol.PAPER_DATASETS):
    raise ValueError(f'report: {PAPER_VALUES_FILE} columns {columns} are not '
                     f'protocol.PAPER_DATASETS {protocol.PAPER_DATASETS}')
  lists = [e for r in values['table1']['rows'] for e in r['errors'].values()]
  lists += [r['errors'] for r in values['table2']['rows']]
  if any(len(e) != len(columns) for e in lists) or any(
      len(r['errors']) != len(values['table3']['eps']) for r in values['table3']['rows']):
    raise ValueError(f'report: {PAPER_VALUES_FILE}: an error list does not match its columns')
  return values


_VALUES = load_paper_values()

DATASET_COLUMN = {d: i for i, d in enumerate(protocol.PAPER_DATASETS)}
DATASET_TITLE = dict(_VALUES['datasets']['titles'])
PAPER_TABLE1 = {r['row']: {s: tuple(e) for s, e in r['errors'].items()}
                for r in _VALUES['table1']['rows']}
BACKBONE_ORDER = tuple(r['row'] for r in _VALUES['table1']['rows'])
BACKBONE_TITLE = {r['row']: r['title'] for r in _VALUES['table1']['rows']}
PAPER_TABLE2 = {r['method']: (r['title'], tuple(r['errors'])) for r in _VALUES['table2']['rows']}
TABLE2_BACKBONE = _VALUES['table2']['backbone']
TABLE2_ROW = _VALUES['table2']['row']
TABLE3_DATASET = _VALUES['table3']['dataset']
PAPER_TABLE3_EPS = tuple(float(e) for e in _VALUES['table3']['eps'])
PAPER_TABLE3 = {r['method']: tuple(r['errors']) for r in _VALUES['table3']['rows']}
