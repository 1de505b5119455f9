"""Unlearning a trained classifier's data: Label-Agnostic Forgetting (LAF) and the baselines it is compared with."""
