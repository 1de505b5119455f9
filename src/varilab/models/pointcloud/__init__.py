"""Point-cloud models: the point-cloud VAE (a generator G and an independent encoder E) and the Squeeze3D mapping
networks that compress an object to a few bits through them (Squeeze3D, papers.md section 17)."""
from .autoencoder import PointCloudAE, PointCloudAEConfig, pointcloud_ae_loss, trainer_loss
from .squeeze3d import Squeeze3D, Squeeze3DConfig, fit_linear_maps, squeeze3d_loss

__all__ = ["PointCloudAE", "PointCloudAEConfig", "pointcloud_ae_loss", "trainer_loss", "Squeeze3D", "Squeeze3DConfig",
           "fit_linear_maps", "squeeze3d_loss"]
