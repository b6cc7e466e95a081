"""Where a process stands in a job, from torchrun's or Slurm's environment (``DistContext.from_env``)."""

import pytest

from clipbackdoor.distributed import DistContext
from clipbackdoor.registry import ConfigError

MASTER = {"MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
# One task of `srun --nodes 2 --ntasks-per-node 4`: global rank 5, the second on its node.
SRUN_TASK = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", **MASTER}


def test_no_launcher_is_one_process():
    assert DistContext.from_env({}) == DistContext(0, 1, 0)


def test_torchrun_variables():
    ctx = DistContext.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (3, 4, 3, True, False)


def test_an_srun_task_takes_its_place_from_slurm():
    assert DistContext.from_env(SRUN_TASK) == DistContext(5, 8, 1)


def test_torchrun_under_srun_wins():
    # `srun torchrun ...`: each torchrun worker has both; the job step's numbers are torchrun's agents'.
    env = {**SRUN_TASK, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "RANK": "9", "WORLD_SIZE": "16",
           "LOCAL_RANK": "1"}
    assert DistContext.from_env(env) == DistContext(9, 16, 1)


def test_a_batch_script_outside_srun_is_one_process():
    # The batch shell of an 8-task allocation has SLURM_NTASKS=8 but is no job step: a process started
    # there must not wait for 7 ranks that will never come.
    assert DistContext.from_env({"SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}) == DistContext()


def test_one_srun_task_needs_no_rendezvous():
    assert DistContext.from_env({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_LOCALID": "0"}) \
        == DistContext()


@pytest.mark.parametrize("env, message", [
    ({**SRUN_TASK, "SLURM_PROCID": "five"}, "SLURM_PROCID='five': expected an integer"),
    ({**SRUN_TASK, "SLURM_LOCALID": ""}, "SLURM_LOCALID='': expected an integer"),
    ({**SRUN_TASK, "SLURM_PROCID": "8"}, "SLURM_PROCID=8 is outside SLURM_STEP_NUM_TASKS=8"),
    ({**SRUN_TASK, "SLURM_LOCALID": "-1"}, "SLURM_LOCALID=-1"),
    ({k: v for k, v in SRUN_TASK.items() if k != "MASTER_ADDR"}, "MASTER_ADDR is not set"),
    ({**SRUN_TASK, "MASTER_PORT": "http"}, "MASTER_PORT='http': expected an integer"),
    ({**SRUN_TASK, "MASTER_PORT": "70000"}, "MASTER_PORT=70000"),
    ({"RANK": "1", "WORLD_SIZE": "x"}, "WORLD_SIZE='x': expected an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is outside WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "RANK=0 is outside WORLD_SIZE=0"),
])
def test_malformed_values_name_the_variable(env, message):
    with pytest.raises(ConfigError) as err:
        DistContext.from_env(env)
    assert message in str(err.value) and "\n" not in str(err.value)
