"""Image classifier on the cleaned images of ``image_clean``: any torchvision or timm backbone, fine-tuned.

The stage and section keep the name ``resnet50`` (the study's model), but ``arch`` takes any
torchvision classification model name (resnet18 ... resnet152, efficientnet_b0, ...: built by
torchvision, as before) or any other timm model name (convnext_*, efficientnet_*.<tag>, vit_*,
swin_*, deit_*, SigLIP/CLIP vision towers such as vit_base_patch16_siglip_224). timm models get
their own normalisation and interpolation (``timm.data.resolve_model_data_config``) and, when the
class takes it, ``img_size = image_size`` so ViT/DeiT/Swin/SigLIP towers run at small demo sizes.

Three profiles (``resnet50.profile`` in params.yaml), same code path:

* ``full``: ResNet50 with ImageNet weights (resolved by :func:`rakuten.runtime.pretrained.resolve_torchvision`:
  torch cache, then download, else one line saying what to fetch and where), 224 px, study-like epochs;
* ``strongest``: ConvNeXt-Base (timm, ImageNet-22k then 1k) at 224 px (weights by
  :func:`rakuten.runtime.pretrained.resolve_timm`: models/pretrained, HF cache, hub, else one line);
* ``demo`` (default): a torchvision ResNet with ``weights: none`` at a small input size and capped
  rows/epochs, so it runs offline on 2 CPU cores in minutes.

The interface the rest of the code uses is :mod:`rakuten.models.resnet50.model`; this file re-exports nothing.
"""
