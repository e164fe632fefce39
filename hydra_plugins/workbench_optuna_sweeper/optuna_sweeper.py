"""`hydra/sweeper=optuna`: each trial a job of Hydra's launcher (basic, local, SLURM), sampled
by an Optuna sampler (TPE by default) through the public ask-and-tell interface. With `storage`
(a journal file, or an RDB URL such as sqlite:///study.db) several processes or SLURM jobs
fill one study together, each asking for trials until the study holds `n_trials`. With a
`pruner`, every trial reports its monitored validation metric after each validation
(`workbench.callbacks.OptunaPruning`, through the same storage) and stops when the pruner says
so. Search spaces use Hydra's override grammar: `choice(a, b)`, `interval(lo, hi)`,
`tag(log, interval(lo, hi))`, `range(lo, hi, step)`."""


import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from workbench.sweeps import study_storage

log = logging.getLogger(__name__)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.workbench_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = None  # e.g. {_target_: optuna.pruners.MedianPruner, n_warmup_steps: 2}; needs storage
    direction: str = "maximize"
    storage: Any = None  # null: in memory, this process alone; a file path: a journal; an RDB URL
    study_name: str = "workbench"
    n_trials: int = 20  # in the whole study, whichever processes run them
    n_jobs: int = 1  # trials launched at once (a batch for the launcher)
    params: Any = None  # {key: search space in Hydra's override grammar}


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="workbench")


def distribution_of(override: Override) -> BaseDistribution | str:
    """An Optuna distribution for a sweep override, or the plain value of a fixed one."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep():
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    log_scale = "log" in getattr(value, "tags", set())
    if override.is_range_sweep():
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(value.start, value.stop - value.step, step=value.step)
        return FloatDistribution(value.start, value.stop - value.step, step=value.step)
    if override.is_interval_sweep():
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: expected choice(...), range(...) or interval(...) for an Optuna search space")


def built(node: Any) -> Any:
    """A sampler or pruner: Hydra instantiates the sweeper's nested `_target_`s itself, except
    where the sweeper is built from a plain config."""
    return instantiate(node) if isinstance(node, (dict, DictConfig)) else node


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, pruner: Any, direction: str, storage: Any, study_name: str, n_trials: int, n_jobs: int,
                 params: Any) -> None:
        self.sampler_config, self.pruner_config = sampler, pruner
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.params = dict(params or {})
        if pruner is not None and storage is None:
            raise ValueError("hydra.sweeper.pruner needs hydra.sweeper.storage (a journal file or an RDB URL): "
                             "each trial reports its validation metric to the study from its own process")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        # The pruner as a config, for the trials' own processes: a study loaded from storage
        # does not carry its pruner.
        pruner = config.hydra.sweeper.get("pruner")
        settings = OmegaConf.to_container(pruner, resolve=True) if pruner is not None else {}
        self.pruner_settings = "{" + ",".join(f"{k}:{json.dumps(v)}" for k, v in settings.items()) + "}"  # one override's value

    def search_space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
        """The configured params, then the command line's sweeps over them: distributions, and fixed overrides."""
        parser = OverridesParser.create()
        parsed = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()]) + parser.parse_overrides(arguments)
        space: dict[str, BaseDistribution] = {}
        fixed: dict[str, str] = {}
        for override in parsed:
            value = distribution_of(override)
            key = override.get_key_element()
            space.pop(key, None), fixed.pop(key, None)
            (space if isinstance(value, BaseDistribution) else fixed)[key] = value
        return space, [f"{k}={v}" for k, v in fixed.items()]

    def trial_overrides(self, trial: optuna.trial.Trial, fixed: list[str]) -> tuple[str, ...]:
        pruning = []
        if self.pruner_config is not None:  # the trial reports to the study from its own process
            callback = "+callbacks.optuna_pruning"
            pruning = [f"{callback}._target_=workbench.sweeps.OptunaPruning", f"{callback}.storage={self.storage}",
                       f"{callback}.study_name={self.study_name}", f"{callback}.trial_id={trial._trial_id}",  # the storage's id of the trial
                       f"{callback}.monitor=${{monitor.metric}}", f"{callback}.pruner={self.pruner_settings}"]
        return (*fixed, *[f"{k}={v}" for k, v in trial.params.items()], *pruning)

    def pruned(self, study: optuna.Study, number: int) -> bool:
        """Whether the pruner stopped trial `number`, from the values its process reported to the
        storage (a Trial object here would only see its own cached copy)."""
        if self.pruner_config is None:
            return False
        (reported,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        return bool(reported.intermediate_values) and study.pruner.prune(study, reported)

    def sweep(self, arguments: list[str]) -> None:
        space, fixed = self.search_space(arguments)
        study = optuna.create_study(
            study_name=self.study_name, storage=study_storage(self.storage), direction=self.direction, load_if_exists=True,
            sampler=built(self.sampler_config), pruner=built(self.pruner_config) if self.pruner_config else optuna.pruners.NopPruner(),
        )
        log.info(f"Study {self.study_name} ({self.storage or 'in memory'}): {self.n_trials} trials over {sorted(space)}")
        job = 0
        while (left := self.n_trials - len(study.get_trials(deepcopy=False, states=COUNTED))) > 0:
            trials = [study.ask(fixed_distributions=space) for _ in range(min(self.n_jobs, left))]
            returns = self.launcher.launch([self.trial_overrides(t, fixed) for t in trials], initial_job_idx=job)
            job += len(returns)
            for trial, ret in zip(trials, returns):
                try:
                    value = float(ret.return_value)
                except Exception as e:  # the job failed, or returned no metric
                    log.warning(f"trial {trial.number} failed: {e}")
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                study.tell(trial, state=TrialState.PRUNED) if self.pruned(study, trial.number) else study.tell(trial, value)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = study.best_trial if complete else None  # every trial pruned or failed: nothing to pick
        results = {"name": "optuna", "study_name": self.study_name, "storage": self.storage,
                   "best_params": best.params if best else None, "best_value": best.value if best else None,
                   "trials": len(study.get_trials(deepcopy=False)), "complete": len(complete)}
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info(f"Best value {best.value} at {best.params}" if best else "No trial completed (all pruned or failed)")
