"""Models: the 3D ViT family and the paper's MONAI backbones (registry by name), the MOTOR-style
TTE head, export/import.

* ``create_model("vit3d_base", img_size=(160, 224, 224))``, ``list_models()``, ``model_info``: the
  ViT sizes are registered in ``vit3d.py``, ``swinunetr_encoder``, ``densenet121_3d`` and
  ``resnet152_3d`` in ``monai3d.py`` (``registry.py`` is a leaf that imports no model); parameter
  counts and FLOPs come from each config (``accounting.py``, ``monai3d.py``).
* ``model.init_weights``: starting weights from a local file, keys mapped, checked (``weights.py``).
* ``TTEHead`` / ``TTEModel``: the survival head; the loss runs in the head's forward (ZeRO-3).
* ``SupervisedHead`` / ``SupervisedModel``: the supervised-pretraining baseline (benchmark labels).
* ``save_pretrained`` / ``load_pretrained``: safetensors + JSON, no DeepSpeed needed.
* Input volumes are normalized by ``tte_scale.data.hu_to_float`` (the one HU window of the pipeline).
"""

from tte_scale.loss.reference import empirical_log_hazard
from tte_scale.models.accounting import model_info, vit_flops, vit_params
from tte_scale.models.io import load_pretrained, read_export_config, save_pretrained
from tte_scale.models.monai3d import DenseNetEncoder3D, ResNetEncoder3D, SwinEncoder3D
from tte_scale.models.registry import get_config, list_models, register_model
from tte_scale.models.supervised_head import SupervisedHead, SupervisedModel
from tte_scale.models.tte_head import TTEHead, TTEModel
from tte_scale.models.vit3d import VisionTransformer3D, ViTConfig, create_model, sincos_pos_embed_3d

__all__ = [
    "DenseNetEncoder3D",
    "ResNetEncoder3D",
    "SwinEncoder3D",
    "SupervisedHead",
    "SupervisedModel",
    "TTEHead",
    "TTEModel",
    "ViTConfig",
    "VisionTransformer3D",
    "create_model",
    "empirical_log_hazard",
    "get_config",
    "list_models",
    "load_pretrained",
    "model_info",
    "read_export_config",
    "register_model",
    "save_pretrained",
    "sincos_pos_embed_3d",
    "vit_flops",
    "vit_params",
]
