"""Optuna studies that several processes or SLURM jobs fill together (`hparams_search=optuna`,
the sweeper in hydra_plugins/workbench_optuna_sweeper): where the study lives, and the
callback through which a trial reports its validation metric so the study's pruner can stop it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl


def study_storage(storage: str | None) -> Any:
    """None (in memory: one process), an RDB URL as given (sqlite:///study.db, postgresql://...),
    or else a journal file that any number of processes on a shared file system can append to."""
    import optuna  # the sweeps extra

    if storage is None or "://" in str(storage):
        return storage
    path = Path(str(storage)).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


class OptunaPruning(pl.Callback):
    """After each validation, reports `monitor` to trial `trial_id` of the study and stops
    training when `pruner` (the sweeper's, which a study loaded from storage does not carry)
    prunes the trial; every rank stops with rank 0."""

    def __init__(self, storage: str, study_name: str, trial_id: int, monitor: str, pruner: Any) -> None:
        import optuna

        study = optuna.load_study(study_name=study_name, storage=study_storage(storage), pruner=pruner)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        prune = False
        if trainer.is_global_zero:
            self.trial.report(float(value), step=trainer.global_step)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
