"""Tooling for a lent accelerator machine: the accelerator check (accelerator_check.sh / .py), the
wheels it installs (fetch_wheels.sh) and the ESC-10 row of table 1 in one window (table_row.py).
Run from the repository root: `bash launch/device/accelerator_check.sh OUT`, `python -m
launch.device.<module>`. README.md here says how."""
