"""varilab: variational latent-variable models in PyTorch, with posterior-collapse diagnostics and reports."""
__version__ = "0.1.0"
