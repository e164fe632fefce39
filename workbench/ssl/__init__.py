"""Self-supervised pretraining on unlabeled archives (lightly's losses, heads and transforms).

Nothing here yet: the methods land with the self-supervised pretraining issue."""
