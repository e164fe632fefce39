"""GAN and diffusion image synthesis with synthetic-set export.

Nothing here yet: the generators land with the synthesis issue."""
