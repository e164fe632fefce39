"""Backbones and networks for 2D and 3D."""
