"""Inverse problems with a diffusion prior: the degradation operators, RED-Diff, DPS and SMC."""
