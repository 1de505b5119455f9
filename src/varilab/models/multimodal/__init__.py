"""Multi-modal masked autoencoders (PHG-MAE): modality subsets as hyper-edges, ensembles over them."""
