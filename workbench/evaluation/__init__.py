"""Metrics, plots and (later) the label-efficiency report."""
