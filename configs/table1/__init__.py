"""Paper table 1: one config per row (<backbone>.py, envnetv2_aug.py with strong augmentation);
`dataset=` and `strategy=` after the colon pick the cell (`python launch/sweep.py --table=1`)."""
