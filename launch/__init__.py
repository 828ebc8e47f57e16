"""Launchers, sweeps and the device tooling (launch/device/); run from the repository root."""
