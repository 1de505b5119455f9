"""Robustness: a small classifier, the purifier VAE, the classifier attacks (through ART) and the posterior collapse
attack on an encoder."""
