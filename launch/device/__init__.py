"""Tooling for a lent accelerator machine: the accelerator check (accelerator_check.sh / .py), the
wheels it installs (fetch_wheels.sh), the ESC-10 row of table 1 in one window (table_row.py) and
the window plan that trains and brings home finished runs (window.sh / window.py).
Run from the repository root: `bash launch/device/accelerator_check.sh OUT`, `python -m
launch.device.<module>`. README.md here says how."""
