"""Base configuration shared by every experiment (SPEC §5 defaults).

Dataset configs (`esc50.py`, `esc10.py`, `urbansound8k.py`, `demo.py`) import `get_base_config()`
and override. This file is the single place where field names are defined; the trainer, the data
pipeline and the report read them by these names.
"""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # --- what to train -------------------------------------------------------------------------
  c.dataset = 'esc50'           # 'esc50' | 'esc10' | 'urbansound8k' | 'synthetic' | 'custom'
  c.fold = 1                    # test fold (1-based); the other folds train
  c.backbone = 'envnetv2'       # 'envnet' | 'envnetv2' | 'm18' | 'soundnet5' | 'piczakcnn'
  c.model = ml_collections.ConfigDict(dict(  # options passed to models.get_model(**c.model)
      width=1.0,                # channel multiplier of every conv layer (1.0 = published model)
      fc_units=4096,            # hidden FC width (where the backbone has hidden FC layers)
  ))
  c.strategy = 'intermix'       # 'standard' | 'mixup' | 'bc' | 'speechmix' | 'intermix'
  c.mixing = ml_collections.ConfigDict(dict(  # options passed to mixing.get_strategy(**c.mixing)
      eligible_layers=ml_collections.FieldReference(None, field_type=tuple),  # None: strategy default
      p_weighting=True,
      normalize=True,
      signed_mode='superpose',  # 'superpose' | 'clamp'
      stop_gradient_interference=False,
      alpha=1.0,                # mixup Beta(alpha, alpha)
  ))
  c.strong_augment = False      # time scale [0.8, 1.25] and gain +-6 dB per sound

  # --- data ----------------------------------------------------------------------------------
  c.data_dir = ml_collections.FieldReference(None, field_type=str)    # TFDS data dir
  c.manual_dir = ml_collections.FieldReference(None, field_type=str)  # local copy, official layout
  c.skip_bad_files = False      # skip unreadable audio with a warning and a count
  c.num_eval_crops = 10
  c.eval_batch_size = 16        # clips per eval batch (each clip = num_eval_crops crops)
  c.shuffle_buffer_seed = ml_collections.FieldReference(None, field_type=int)  # None: seed

  # --- optimisation (SPEC §5) ----------------------------------------------------------------
  c.batch_size = 64             # global batch of sounds (32 pairs when mixing)
  c.num_epochs = 1000           # for standard training; mixing strategies double it
  c.double_epochs_for_mixing = True
  c.opt = ml_collections.ConfigDict(dict(
      lr=0.1,
      momentum=0.9,
      nesterov=True,
      weight_decay=5e-4,        # coupled L2 on all parameters
      schedule=(0.3, 0.6, 0.9),  # fractions of the epochs where LR is multiplied by 0.1
      warmup_epochs=10,         # LR0 * 0.1 during warmup (not doubled for mixing)
  ))

  # --- bookkeeping ---------------------------------------------------------------------------
  c.seed = 0
  c.eval_every_epochs = 50
  c.checkpoint_every_epochs = 10
  c.keep_checkpoints = 3
  c.log_every_steps = 50
  c.nan_policy = 'stop'         # 'stop' | 'skip' (skip non-finite steps, counted in metrics)
  c.steps_per_epoch = ml_collections.FieldReference(None, field_type=int)  # None: from data
  return c
