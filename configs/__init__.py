"""Config files: `python -m intermix_jax.main --config=configs/<file>.py:ARG --workdir=W`.

Each file is a thin `get_config(arg=None)` that calls `intermix_jax.config_lib.experiment` (the
fields, their defaults and the parsing of ARG live in the library, so a file loads from any
directory, e.g. `--config=/path/to/configs/esc50.py` with an installed intermix_jax). ARG, after
the colon, is `key=value` items separated by commas:
  - the declared arguments `dataset`, `backbone`, `strategy`, `fold` (a number or `all`), `seed`
    (configs/custom.py adds `audio_dir`, `metadata_csv`, `num_folds`): they choose the
    docs/method.md §5 protocol row (epochs, LR, schedule, warmup) of the backbone and dataset;
  - any other field by its dotted name, typed by the field: `opt.lr=0.05`, `model.width=0.25`,
    `mixing.eligible_layers=(1,2)`, `manual_dir="/data/a,b"` (quote a value holding commas).
`--config.<field>=value` flags set fields after the file (they do not change the protocol row).

  esc50.py esc10.py urbansound8k.py   the paper's datasets (EnvNet-v2 + InterMix by default)
  custom.py                           your own sounds (a folder of class folders, or a csv)
  demo.py                             offline demo on synthetic sounds, a few CPU minutes
  table1/<row>.py  ablation/<v>.py  table3.py   one per cell group of the paper's tables
  base.py                             the plain experiment (ESC-50)
"""
