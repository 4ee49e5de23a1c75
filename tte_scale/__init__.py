"""tte_scale: time-to-event pretraining of 3D medical imaging models at scale.

Stages (each a subpackage, each a ``tte-scale`` subcommand): ``synth`` (synthetic cohort),
``ehr`` (MEDS -> time-to-event labels), ``imaging`` + ``sharding/`` (DICOM/NIfTI -> WebDataset
and Zarr shards), ``data`` (streaming loader), ``models`` + ``kernels`` (3D ViT, TTE head,
fused survival loss), ``train`` (DeepSpeed ZeRO), ``eval`` (probes, metrics, report).
"""

__version__ = "0.1.0"
