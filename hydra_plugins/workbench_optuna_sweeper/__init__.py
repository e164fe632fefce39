"""A Hydra sweeper on current Optuna (>= 4), shipped with the workbench: hydra-optuna-sweeper
pins optuna < 3 (hydra #3007, #3210). `hparams_search=optuna` selects it."""
