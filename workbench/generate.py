"""`workbench generate`: sample a trained generator (a `workbench synthesize` run) into a
synthetic dataset directory with its manifest and quality metrics; `workbench synthesize` calls
the same code (`workbench.generators.sampling`) at the end of training when
`generate.n_per_class` > 0.

The datamodule is rebuilt from the generator's run config, so the real images for the quality
metrics, the intensity units of the export and the training images for the memorisation audit
are exactly those the generator was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from workbench.data.files import existing_dir, existing_file
from workbench.generators.base import GeneratorModule
from workbench.generators.loading import checkpoint_path, load_module
from workbench.generators.sampling import export_generated, quality_metrics
from workbench.runner import finish_run, hydra_entry
from workbench.runs import save_config, set_environment_defaults


def generate(cfg: DictConfig) -> dict[str, Any]:
    set_environment_defaults()
    run_dir = existing_dir(cfg.run_dir, "generator run directory (generate.run_dir)")
    run_cfg = OmegaConf.load(existing_file(run_dir / "config.yaml", "run config", "config.yaml of a workbench synthesize run"))
    checkpoint = checkpoint_path(cfg.checkpoint or run_dir)
    model = load_module(checkpoint, GeneratorModule)
    datamodule = instantiate(run_cfg.data, output_dir=None)  # read only: nothing is written into the old run
    save_config(cfg, cfg.paths.output_dir)
    manifest = export_generated(model, datamodule, checkpoint, cfg.generate)
    metrics = {"run_dir": cfg.paths.output_dir, "output": manifest["output"], "sampling_seconds": manifest["sampling_seconds"],
               **quality_metrics(manifest)}
    return finish_run(Path(cfg.paths.output_dir), metrics, f"generate: {run_dir}", "")


main = hydra_entry(generate, "generate")

if __name__ == "__main__":
    main()
