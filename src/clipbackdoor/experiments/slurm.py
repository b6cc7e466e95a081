"""Sweeps on a Slurm cluster: one job array per stage, one run of the sweep per array task.

``clipbackdoor sweep SPEC --out DIR --slurm`` writes ``DIR/slurm/<stage>.sbatch`` for every stage with runs
left to do, and ``DIR/slurm/submit.sh``, the ``sbatch`` commands that submit them in stage order. Each
script is plain bash a researcher can read and edit: ``#SBATCH`` lines from the spec's ``slurm:`` section,
the spec's ``setup`` lines, the stage's run names in a bash array, and one ``srun`` of
``clipbackdoor sweep SPEC --out DIR --run NAME`` for the run of its array index. The run names live inside
the script because Slurm copies a script when it is submitted: a later submission that rewrites the files
cannot shift the runs of arrays still in the queue.

A cleaning stage's array waits for the whole array of the stage it cleans (``afterok``): ``aftercorr``
would pair equal array indices, and a cleaning run's index is not its source's.

This module never reads the environment; the array index reaches ``--run`` through the script.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipbackdoor.errors import ConfigError, SetupError, did_you_mean
from clipbackdoor.experiments.spec import Job, Stage, SweepSpec

SCRIPT_DIR = "slurm"
SUBMIT_SCRIPT = "submit.sh"


def stage_options(spec: SweepSpec, stage: Stage, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Slurm settings of one run of ``stage``: the sweep's, replaced key by key by the stage's, then by
    ``overrides`` (the command line's, already checked), with the defaults filled in."""
    options = {**spec.slurm, **stage.slurm, **(overrides or {})}
    options.setdefault("nodes", 1)
    options.setdefault("gpus_per_node", 0)
    # One process per GPU: each becomes a rank of the run's torch.distributed job.
    options.setdefault("ntasks_per_node", options["gpus_per_node"] or 1)
    options.setdefault("cpus_per_task", spec.threads)
    return options


@dataclass
class StageArray:
    """One stage's job array, as written."""

    stage: str
    runs: list[str]
    script: Path
    after: str | None  # the stage whose array must finish first; None when nothing of it is left to run
    options: dict[str, Any]  # from ``stage_options``

    def resources(self) -> str:
        """What one task of the array asks for, in words (so a forgotten GPU request shows before it runs)."""
        o = self.options
        gpus = f"{o['gpus_per_node']} GPU(s) a node" if o["gpus_per_node"] else "no GPU"
        return (f"{o['nodes']} node(s), {o['ntasks_per_node']} task(s) a node, {o['cpus_per_task']} CPU(s) a task, "
                f"{gpus}, time limit {o.get('time', 'of the partition')}"
                + (f", partition {o['partition']}" if "partition" in o else ""))

    @property
    def variable(self) -> str:
        """The shell variable ``submit.sh`` keeps this array's job id in."""
        return re.sub(r"\W|^(?=\d)", "_", self.stage) + "_job"  # a shell name: no dashes, no leading digit

    def sbatch_command(self, after_id: str | None = None) -> list[str]:
        """The sbatch command line; ``after_id`` is the job id of stage ``after``'s array."""
        if self.after is not None and after_id is None:
            raise ValueError(f"the array of stage {self.stage} needs the job id of stage {self.after}")
        return ["sbatch", "--parsable", *(_dependency(after_id) if self.after else []), str(self.script)]


def _dependency(after_id: str) -> list[str]:
    # Without --kill-on-invalid-dep, an array whose source failed would wait in the queue forever.
    return [f"--dependency=afterok:{after_id}", "--kill-on-invalid-dep=yes"]


def write_arrays(
    spec: SweepSpec,
    jobs: list[Job],
    out_dir: Path,
    *,
    spec_ref: str,
    launcher: str,
    workdir: Path,
    overrides: dict[str, Any] | None = None,
) -> list[StageArray]:
    """Write ``<out_dir>/slurm/<stage>.sbatch`` for each stage with incomplete runs, and ``submit.sh``.

    ``spec_ref`` is how the array tasks name the spec (an absolute path, or a shipped sweep's name);
    ``launcher`` the command that starts clipbackdoor on a compute node (e.g. ``/venv/bin/python -m
    clipbackdoor``); ``workdir`` the directory the tasks run in, against which the spec's relative data
    paths resolve. Complete runs are left out. Returns the arrays in submission order.
    """
    from clipbackdoor.experiments.jobs import is_complete

    out_dir = out_dir.resolve()
    folder = out_dir / SCRIPT_DIR
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    sweep_command = f"{launcher} sweep {shlex.quote(spec_ref)} --out {shlex.quote(str(out_dir))}"
    arrays: list[StageArray] = []
    for stage in spec.stages:
        runs = [j.name for j in jobs if j.stage == stage.name and not is_complete(out_dir / j.name)]
        if not runs:
            # An earlier submission's script would read as if it were still to be submitted.
            (folder / f"{stage.name}.sbatch").unlink(missing_ok=True)
            continue
        after = stage.source if stage.source in {a.stage for a in arrays} else None
        options = stage_options(spec, stage, overrides)
        array = StageArray(stage.name, runs, folder / f"{stage.name}.sbatch", after, options)
        array.script.write_text(render_script(array, sweep_command, out_dir, workdir))
        arrays.append(array)
    (folder / SUBMIT_SCRIPT).write_text(render_submit(arrays))
    return arrays


def render_script(array: StageArray, sweep_command: str, out_dir: Path, workdir: Path) -> str:
    """The sbatch script of one stage's array."""
    options = array.options
    limit = f"%{options['max_parallel']}" if "max_parallel" in options else ""
    job_name = re.sub(r"[^\w.-]+", "_", f"{out_dir.name}-{array.stage}")
    directives = [
        f"--job-name={job_name}",
        f"--array=0-{len(array.runs) - 1}{limit}",
        f"--output={out_dir / SCRIPT_DIR / 'logs' / array.stage}-%A_%a.out",
        *(f"--{key}={options[key]}" for key in ("partition", "account", "qos", "time", "constraint") if key in options),
        f"--nodes={options['nodes']}",
        f"--ntasks-per-node={options['ntasks_per_node']}",
        *([f"--gpus-per-node={options['gpus_per_node']}"] if options["gpus_per_node"] else []),
        f"--cpus-per-task={options['cpus_per_task']}",
        *([f"--mem={options['mem']}"] if "mem" in options else []),
        *options.get("extra", []),
    ]
    lines = [
        "#!/bin/bash",
        f"# Stage {array.stage} of the sweep in {out_dir}: {len(array.runs)} run(s), one per array task.",
        "# Written by `clipbackdoor sweep --slurm` (edit freely; submit.sh submits it). A task whose run is",
        "# complete does nothing; one whose run was interrupted resumes it from its last checkpoint.",
    ]
    if array.after:
        lines += [
            f"# Submitted with --dependency=afterok:<job id of stage {array.after}>: all of that stage's array",
            "# must succeed first (not aftercorr, which pairs equal indices: these runs are numbered otherwise).",
        ]
    lines += [f"#SBATCH {d}" for d in directives]
    lines += ["", "set -eo pipefail", f"cd {shlex.quote(str(workdir))}  # the spec's relative paths resolve here"]
    if options.get("setup"):
        lines += ["", "# setup (the spec's slurm.setup)", *options["setup"]]
    lines += [
        "",
        "runs=(",
        *(f"    {shlex.quote(run)}" for run in array.runs),
        ")",
        ': "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch, which reads its --array line}"',
        'run="${runs[$SLURM_ARRAY_TASK_ID]}"',
        'echo "run $run: job ${SLURM_JOB_ID}, nodes ${SLURM_JOB_NODELIST}"',
        "",
        "# torch.distributed's env:// rendezvous: rank 0 listens on the first node, on a port taken from the",
        "# job id so that two array tasks sharing a node do not collide.",
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        'export MASTER_PORT="$((20000 + SLURM_JOB_ID % 20000))"',
        "# srun stopped inheriting sbatch's --cpus-per-task in Slurm 22.05.",
        'export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"',
        "",
        "# One process per task; SLURM_PROCID, SLURM_LOCALID and SLURM_STEP_NUM_TASKS make them the ranks of",
        "# one run. A rank that fails ends the step rather than leave the others waiting in a collective.",
        f'srun --kill-on-bad-exit=1 {sweep_command} --run "$run"',
    ]
    return "\n".join(lines) + "\n"


def shell_command(array: StageArray, arrays: list[StageArray]) -> str:
    """``array``'s sbatch command as ``submit.sh`` writes it: the source's job id from its shell variable."""
    source = next((a for a in arrays if a.stage == array.after), None)
    after = _dependency(f'"${source.variable}"') if source else []
    return " ".join(["sbatch", "--parsable", *after, shlex.quote(str(array.script))])


def render_submit(arrays: list[StageArray]) -> str:
    """``submit.sh``: the sbatch commands of ``arrays`` in order, each later one after its source's id."""
    lines = ["#!/bin/bash", "# The sweep's job arrays in stage order (written by `clipbackdoor sweep --slurm`).",
             "set -eo pipefail"]
    for array in arrays:
        lines += [
            f"{array.variable}=$({shell_command(array, arrays)})",
            f"{array.variable}=${{{array.variable}%%;*}}  # --parsable prints <id> or <id>;<cluster>",
            f'echo "{array.stage}: job ${array.variable}, {len(array.runs)} run(s)"',
        ]
    return "\n".join(lines) + "\n"


def submit(arrays: list[StageArray]) -> dict[str, str]:
    """Submit ``arrays`` in order with ``sbatch --parsable``; returns stage -> job id."""
    ids: dict[str, str] = {}
    for array in arrays:
        command = array.sbatch_command(ids.get(array.after) if array.after else None)
        already = f"; already submitted: {', '.join(f'{s} {i}' for s, i in ids.items())}" if ids else ""
        try:
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise SetupError("sbatch: not found on PATH; submit from a Slurm login node, or use --slurm-dry-run "
                             "to write the scripts only") from None
        if proc.returncode != 0:
            said = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
            reason = said[-1] if said else f"exit status {proc.returncode}"
            raise ConfigError(f"sbatch {array.script} failed: {reason}{already}")
        # --parsable prints "<id>" or "<id>;<cluster>".
        job_id = proc.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise ConfigError(f"sbatch {array.script}: expected a job id, got {proc.stdout.strip()!r}{already}")
        ids[array.stage] = job_id
    return ids


def find_job(jobs: list[Job], name: str) -> Job:
    """The run called ``name`` (``--run``), or a one-line error with the closest names."""
    wanted = name.strip().strip("/")
    for job in jobs:
        if job.name == wanted:
            return job
    raise ConfigError(f"--run {name!r}: no such run in this sweep{did_you_mean(wanted, [j.name for j in jobs])} "
                      f"({len(jobs)} runs; --dry-run lists them)")


def lineage(jobs: list[Job], job: Job) -> list[Job]:
    """``job`` and the runs it builds on, sources first (what ``check_jobs`` needs to check it)."""
    by_name = {j.name: j for j in jobs}
    chain = [job]
    while chain[0].source is not None:
        chain.insert(0, by_name[chain[0].source])
    return chain
