"""Launchers: SLURM through submitit (``slurm``), one machine or a hostfile (``local``), Ray on
SLURM for sharding (``ray_slurm``), and a real one-node SLURM for tests (``testing``).

Everything here imports from ``tte_scale``, never the other way round; the ``tte-scale
launch`` command (``tte_scale/commands/launch.py``) is the only entry point into it.
"""
