"""Lightning DDP under Hydra: every rank re-runs the job it belongs to, also inside a multirun.

Lightning starts DDP ranks 1..N-1 by re-running the command line with `hydra.run.dir` pinned. In a multirun
that command line is the whole sweep (`-m optim.lr=1e-4,1e-5`), so each child would launch a sweep of its own
in the wrong directory. gan_lab replaces that command with this job's own overrides and output directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from gan_lab.run.lock import PLAN_ENV


def job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """(command, cwd) that starts DDP rank `local_rank` of the current Hydra job, single run or multirun job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "gan_lab.train", *hydra_cfg.overrides.task]
    command += [
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",  # rank 0 already wrote .hydra/
    ]
    return command, get_original_cwd()


# What Lightning's DDP launcher (and rank 0's run plan) leaves in os.environ: the next job of a multirun in the
# same process (joblib launcher, n_jobs > 1) would otherwise join the previous job's process group and hang.
DDP_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", PLAN_ENV)


def install() -> dict[str, str | None]:
    """Make Lightning's subprocess launcher start DDP ranks with job_subprocess_cmd; returns the DDP variables
    of os.environ as they are now, for restore_environment after the job."""
    import multiprocessing

    from gan_lab.utils import compat

    compat.set_ddp_subprocess_command(job_subprocess_cmd)
    # A joblib (loky) worker makes "loky" the default start method, with which DataLoader workers cannot start.
    if multiprocessing.get_start_method(allow_none=True) in ("loky", "loky_init_main"):
        multiprocessing.set_start_method(None, force=True)
    return {name: os.environ.get(name) for name in DDP_ENVIRONMENT}


def restore_environment(saved: dict[str, str | None]) -> None:
    """Put the DDP variables of os.environ back as install() found them."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
