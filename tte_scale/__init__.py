"""tte_scale: time-to-event pretraining of 3D medical imaging models at scale.

Stages (each a subpackage, each a ``tte-scale`` subcommand): ``synth`` (synthetic cohort),
``ehr`` (MEDS -> time-to-event labels), ``imaging`` + ``sharding`` (DICOM/NIfTI -> WebDataset
and Zarr shards), ``data`` (streaming loader), ``models`` + ``loss`` (3D ViT, TTE head,
fused survival loss), ``train`` (DeepSpeed ZeRO), ``eval`` (probes, metrics, report),
``launch`` (SLURM, torchrun/hostfile, Ray on SLURM), ``benchmarks`` (``tte-scale bench``).
``sharding``, ``launch``, ``benchmarks`` and ``configs`` live in top-level folders of the
repository and install under this one import name (pyproject ``package-dir``).
"""

__version__ = "0.1.0"
