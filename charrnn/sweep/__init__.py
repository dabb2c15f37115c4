"""Hyper-parameter sweeps with Optuna: the study (study.py) and its search space (space.py)."""
