"""Semi-supervised and few-shot finetuning.

Nothing here yet: the methods land with the semi-supervised issue."""
