"""Stochastic differential equations: fractional Brownian motion and its Markov approximation (`fbm`)."""
