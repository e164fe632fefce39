"""GAN and diffusion image synthesis, synthetic-set export and quality metrics."""

from workbench.generators.autoencoder import AutoencoderKLModule
from workbench.generators.base import GeneratorModule
from workbench.generators.diffusion import DiffusionModel
from workbench.generators.gan import ConditionalGAN

__all__ = ["AutoencoderKLModule", "ConditionalGAN", "DiffusionModel", "GeneratorModule"]
