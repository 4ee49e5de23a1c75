"""Launchers: SLURM through submitit (``slurm``, checked first by ``preflight``), one machine or a
hostfile (``local``), Ray on SLURM for sharding (``ray_slurm``), and what a submitted job looks
like later (``status``: per-node rank liveness, last steps, failures; ``cancel``).

Everything here imports from ``tte_scale``, never the other way round; the ``tte-scale
launch`` command (``tte_scale/commands/launch.py``) is the only entry point into it. The test
clusters (one node, or several in network namespaces) live in ``tests/support/``.
"""
