"""Downstream tasks: segmentation and computer-aided-diagnosis classification."""
