"""Paper table 2, the InterMix ablation on EnvNet-v2 + strong augmentation: one config per variant
(vanilla.py, hidden.py, full.py); `dataset=` after the colon (`launch/sweep.py --table=2`)."""
