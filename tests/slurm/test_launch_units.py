"""The launchers' pure parts (no cluster needed): rendezvous, time syntax, hostfiles, dry-run snapshot."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from slurm_jobs import cli

from tte_scale.config import ConfigError
from tte_scale.launch.local import local_command, read_hostfile
from tte_scale.launch.rendezvous import RendezvousError, expand_nodelist, port_for, torch_env
from tte_scale.launch.slurm import LaunchError, SlurmConfig, parse_time
from tte_scale.launch.status import log_files, parse_scontrol

SNAPSHOT = Path(__file__).parent / "snapshots" / "dry_run_8x8.txt"


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("vm", ["vm"]),
        ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
        ("a[8-10],b1,c[2]-ib", ["a8", "a9", "a10", "b1", "c2-ib"]),
        ("node[098-101]", ["node098", "node099", "node100", "node101"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_expand_nodelist_rejects_garbage():
    with pytest.raises(RendezvousError, match="gpu\\[x-2\\]"):
        expand_nodelist("gpu[x-2]")


def test_port_is_deterministic_in_range_and_moves_on_restart():
    ports = {port_for(str(j)) for j in range(1000, 1400)}
    assert all(15000 <= p < 30000 for p in ports) and len(ports) > 350
    assert port_for("4242") == port_for("4242")
    assert port_for("4242", 1) != port_for("4242", 0)
    assert port_for("77_3") != port_for("77_4")


def test_torch_env_from_slurm_variables():
    slurm = {
        "SLURM_JOB_ID": "991",
        "SLURM_PROCID": "9",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_RESTART_COUNT": "2",
        "RANK": "0",
    }
    env = torch_env(slurm)
    assert env == {
        "RANK": "9",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(port_for("991", 2)),
    }
    with pytest.raises(RendezvousError, match="SLURM_PROCID"):
        torch_env({"SLURM_JOB_ID": "1"})


@pytest.mark.parametrize(
    "text, minutes", [("90", 90), ("45:30", 46), ("1:30:00", 90), ("2-00:00:00", 2880), ("1-12", 2160), ("0-00:10", 10)]
)
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", "1:2:3:4"])
def test_parse_time_rejects(text):
    with pytest.raises(LaunchError, match="--time"):
        parse_time(text)


def test_slurm_config_validation_names_the_option():
    with pytest.raises(ConfigError, match="^tasks_per_node"):
        SlurmConfig(gpus_per_node=0)
    with pytest.raises(ConfigError, match="^signal_delay_s"):
        SlurmConfig(time_min=1, signal_delay_s=90)
    assert SlurmConfig(nodes=8, gpus_per_node=8).world_size == 64


def test_hostfile_and_commands(tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text("# two nodes\nnode1 slots=8\nnode2 slots=8  # second\n\n")
    assert read_hostfile(hf) == [("node1", 8), ("node2", 8)]
    cmd = local_command(8, "c.yaml", ["max_steps=5"], resume=True, hostfile=hf, master_port=29600)
    assert cmd[1:] == [
        "--hostfile",
        str(hf),
        "--no_local_rank",
        "--num_gpus",
        "8",
        "--master_port",
        "29600",
        "--module",
        "tte_scale.cli",
        "train",
        "--config",
        "c.yaml",
        "--set",
        "max_steps=5",
        "--resume",
    ]
    assert local_command(2, "c.yaml", [])[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    hf.write_text("node1 slots=8\nnode2\n")
    with pytest.raises(LaunchError, match="line 2"):
        read_hostfile(hf)


def test_status_parsing(tmp_path):
    line = "JobId=12 JobName=tte JobState=PENDING Reason=BeginTime Restarts=1 StdOut=/x/12_0_log.out"
    assert parse_scontrol(line)["Restarts"] == "1"
    for name in ("12_1_log.err", "12_0_log.out", "12_10_log.out", "12_1_log.out", "120_0_log.out"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in log_files(tmp_path, "12")] == [
        "12_0_log.out",
        "12_1_log.err",
        "12_1_log.out",
        "12_10_log.out",
    ]


def _dry_run() -> str:
    proc = cli(
        "launch",
        "slurm",
        "--config",
        "configs/pretrain/vit_1b_64gpu.yaml",
        "--nodes",
        "8",
        "--gpus-per-node",
        "8",
        "--partition",
        "gpu",
        "--account",
        "proj",
        "--time",
        "2-00:00:00",
        "--cpus-per-task",
        "12",
        "--mem",
        "480G",
        "--set",
        "out_dir=/scratch/tte/vit1b",
        "--setup",
        "module load cuda/12.4",
        "--env",
        "NCCL_DEBUG=WARN",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.replace(sys.executable, "<python>")


def test_dry_run_snapshot():
    """The sbatch script and task environment for 8 nodes x 8 GPUs (UPDATE_SNAPSHOTS=1 rewrites it).

    The frozen training config printed after them follows configs/ and is checked apart."""
    text = _dry_run()
    head, _, config = text.partition("# training config")
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(head)
    assert head == SNAPSHOT.read_text()
    assert '"out_dir": "/scratch/tte/vit1b"' in config
    assert re.search(r"#SBATCH --signal=USR1@120\n", head) and "srun --unbuffered" in head


def test_launch_slurm_refuses_a_batch_that_cannot_split():
    proc = cli(
        "launch", "slurm", "--config", "configs/pretrain/demo.yaml", "--nodes", "3", "--gpus-per-node", "1", "--dry-run"
    )
    assert proc.returncode == 2 and "optim.global_batch_size" in proc.stderr, proc.stderr


def test_launch_slurm_refuses_to_reuse_a_run_without_resume(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000004"
    ckpt.mkdir(parents=True)
    from tte_scale.train.checkpoint import write_marker

    write_marker(ckpt, 4, 2)
    proc = cli(
        "launch",
        "slurm",
        "--config",
        "configs/pretrain/demo.yaml",
        "--nodes",
        "1",
        "--gpus-per-node",
        "2",
        "--set",
        f"out_dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 2 and "--resume" in proc.stderr and "step 4" in proc.stderr, proc.stderr


def test_launch_local_dry_run_and_bad_hostfile(tmp_path):
    proc = cli("launch", "local", "--nproc", "4", "--config", "configs/pretrain/demo.yaml", "--dry-run")
    assert proc.returncode == 0 and "--nproc_per_node=4" in proc.stdout, proc.stderr
    proc = cli("launch", "local", "--hostfile", str(tmp_path / "none"), "--config", "configs/pretrain/demo.yaml")
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_launch_ray_shard_dry_run_and_argument_checks(tmp_path):
    args = ["--scans", "s.parquet", "--labels", "labels", "--out", str(tmp_path / "shards")]
    proc = cli("launch", "ray-shard", "--nodes", "4", "--cpus-per-node", "64", "--dry-run", "--", *args)
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --nodes=4" in proc.stdout and "#SBATCH --ntasks-per-node=1" in proc.stdout
    assert f"{tmp_path}/shards.slurm/%j_%t_log.out" in proc.stdout
    proc = cli("launch", "ray-shard", "--cpus-per-node", "8", "--dry-run", "--", *args, "--ray-address", "auto")
    assert proc.returncode == 2 and "--ray-address" in proc.stderr
    proc = cli("launch", "ray-shard", "--cpus-per-node", "8", "--dry-run", "--", "--scans", "s.parquet")
    assert proc.returncode == 2 and "bad `tte-scale shard` arguments" in proc.stderr
