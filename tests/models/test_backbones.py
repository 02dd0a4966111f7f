"""Any image backbone in the ``resnet50`` stage: timm families (ConvNeXt, EfficientNet, ViT, Swin) train,
predict, save/load and embed; the fastest learner beats the majority class; unknown names and missing
pretrained weights offline are one line; the GPU-efficiency knobs do what they say.

Tiny configs on the tiny catalog at 32 px, one CPU thread; families other than the learner train one
epoch on 2 rows per class, so the whole file stays well under a minute of CPU.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from rakuten.contracts.classes import N_CLASSES
from rakuten.contracts.model_files import check_proba
from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.models.resnet50 import backbones, data
from rakuten.models.resnet50 import model as R
from rakuten.models.resnet50.inference import memory_format
from rakuten.runtime.torch_setup import Runtime
from tests.helpers.deep_frames import model_frame, parts
from tests.helpers.scoring import majority_weighted_f1, model_weighted_f1
from tests.helpers.stagerun import default_params

BASE = R.ResnetConfig(eval_batch_size=64, num_threads=1, seed=0, device="cpu")
#: the fastest learner of the four timm families on this CPU (see docs/deep.md, "Measured figures")
LEARNER = "convnext_atto"
#: one small member per timm family; the tag of efficientnet_b0.ra_in1k routes that torchvision name to timm
FAMILIES = ("convnext_atto", "efficientnet_b0.ra_in1k", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224")


def tiny(arch: str, **changes) -> R.ResnetConfig:
    cfg = BASE.with_active(
        arch=arch,
        weights="none",
        image_size=32,
        max_train_rows=54,
        epochs=1,
        batch_size=32,
        learning_rate=2e-3,
        weight_decay=1e-4,
        patience=5,
    )
    profile = {k: v for k, v in changes.items() if hasattr(cfg.active, k)}
    return replace(cfg.with_active(**profile), **{k: v for k, v in changes.items() if k not in profile})


@pytest.fixture(scope="module")
def frames(tiny_split):
    return parts(model_frame(tiny_split))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, frames, tmp_path_factory):
    """``(arch, trained model, the same model saved and loaded back)``; the learner trains on every row."""
    train, val, _ = frames
    arch = request.param
    cfg = tiny(arch, max_train_rows=0, learning_rate=3e-3) if arch == LEARNER else tiny(arch)
    model = R.train(train, val, cfg)
    folder = tmp_path_factory.mktemp("backbone") / "resnet50"
    R.save(model, folder)
    return arch, model, R.load(folder)


def test_each_family_trains_predicts_and_round_trips(family, frames):
    arch, model, again = family
    _, _, test = frames
    assert backbones.backbone_library(arch) == "timm" and model.rows["epochs_run"] == 1
    proba = R.predict_proba(model, test)
    assert proba.shape == (len(test), N_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    check_proba(proba)
    np.testing.assert_allclose(R.predict_proba(again, test), proba, atol=1e-6)
    assert again.config == model.config
    emb = R.embed_images(again, test.head(5))
    assert emb.dtype == np.float32 and emb.shape == (5, R.feature_dim(again)) and np.isfinite(emb).all()


@pytest.mark.parametrize("family", [LEARNER], indirect=True)  # the others train on 2 rows per class
def test_the_fastest_family_beats_the_majority_class(family, frames):
    _, model, _ = family
    train, _, test = frames
    assert model_weighted_f1(R, model, test) > majority_weighted_f1(train, test) + 0.05


def test_torchvision_embeddings_are_the_pooled_vector_before_fc(frames):
    _, _, test = frames
    torch.manual_seed(0)
    model = R.ResnetModel(net=backbones.build_net("resnet18").eval(), config=tiny("resnet18", eval_batch_size=4))
    assert R.feature_dim(model) == 512
    emb = R.embed_images(model, test.head(6))  # two batches of 4 and 2
    x = torch.stack([data.build_transform(32, None)(data._decode(p, 32)) for p in test["clean_path"].head(6)])
    net = model.net
    with torch.inference_mode():
        body = torch.nn.Sequential(*list(net.children())[:-1])  # everything up to the pooled vector
        expected = body(x).flatten(1).numpy()
    assert emb.shape == (6, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    assert R.embed_images(model, test.head(0)).shape == (0, 512)


def test_timm_models_use_their_own_normalisation():
    torch.manual_seed(0)
    vit = backbones.make_net("vit_tiny_patch16_224", 32)
    norm = backbones.backbone_norm(vit, "vit_tiny_patch16_224")
    assert norm == backbones.Norm((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    imagenet = backbones.Norm(backbones.IMAGENET_MEAN, backbones.IMAGENET_STD, "bilinear")
    assert backbones.backbone_norm(backbones.build_net("resnet18"), "resnet18") == imagenet
    normalise = data.build_transform(32, None, norm).transforms[-1]
    assert tuple(normalise.mean) == (0.5, 0.5, 0.5)
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, N_CLASSES)  # img_size reached the ViT


def test_routing_torchvision_first_then_timm():
    assert backbones.backbone_library("resnet18") == backbones.backbone_library("efficientnet_b0") == "torchvision"
    assert backbones.backbone_library("convnext_base.fb_in22k_ft_in1k") == "timm"
    assert backbones.backbone_library("vit_base_patch16_siglip_224") == "timm"
    assert backbones.backbone_library("not_a_model") is None
    head = backbones.build_net("efficientnet_b0").classifier[-1]  # a torchvision head that is not ``fc``
    assert head.out_features == N_CLASSES


def test_unknown_arch_is_one_line():
    section = default_params()["resnet50"]
    with pytest.raises(PipelineError) as err:
        parse_section(R.ResnetConfig, {**section, "demo": {**section["demo"], "arch": "resnet_9000"}}, "resnet50")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "params.yaml: resnet50.demo.arch = 'resnet_9000', expected a torchvision or timm "
        "model name (e.g. resnet50, convnext_tiny"
    )


# ------------------------------------------------------------------------------ pretrained weights


@pytest.mark.parametrize(
    "arch, needle",
    [
        ("resnet18", "curl -L -o resnet18-"),
        (
            "convnext_atto",
            "hf download timm/convnext_atto.d2_in1k --local-dir models/pretrained/timm--convnext_atto.d2_in1k",
        ),
    ],
)
def test_missing_pretrained_weights_offline_is_one_line_before_any_work(offline, frames, arch, needle):
    train, val, _ = frames
    broken = train.assign(clean_path="/nonexistent.jpg")  # would fail later, if the weights were not checked first
    with pytest.raises(PipelineError) as err:
        R.train(broken, val, tiny(arch, weights="pretrained"))
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert needle in message and "not found locally" in message


def test_timm_weights_found_in_models_pretrained_and_the_head_replaced(offline):
    import timm
    from safetensors.torch import save_file

    from rakuten.runtime.pretrained import resolve_timm

    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False)  # 224 px, 1000 classes
    folder = offline / "models" / "pretrained" / "timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    folder.mkdir(parents=True)
    save_file(source.state_dict(), folder / "model.safetensors")
    found = resolve_timm("vit_tiny_patch16_224", "pretrained")
    assert found.resolve() == (folder / "model.safetensors").resolve()
    net = backbones.build_timm_net("vit_tiny_patch16_224", found, image_size=32)  # position embeddings resampled
    assert torch.equal(net.patch_embed.proj.weight, source.patch_embed.proj.weight)
    assert net.head.out_features == N_CLASSES and net.pos_embed.shape[1] == 1 + 2 * 2
    assert resolve_timm("vit_tiny_patch16_224", str(folder)) == folder / "model.safetensors"  # a directory works
    bad = offline / "bad.safetensors"
    save_file({"nothing": torch.zeros(1)}, bad)
    with pytest.raises(PipelineError, match=r"bad\.safetensors: not vit_tiny_patch16_224 weights") as err:
        backbones.build_timm_net("vit_tiny_patch16_224", bad, image_size=32)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------- efficiency knobs


@pytest.mark.param_effect("resnet50.channels_last")
def test_channels_last_applies_on_cuda_only():
    on, off = tiny("resnet18"), tiny("resnet18", channels_last=False)
    cuda, cpu = Runtime("cuda", "bf16"), Runtime("cpu", "fp32")
    assert memory_format(on, cuda) == torch.channels_last
    assert memory_format(off, cuda) == torch.contiguous_format
    assert memory_format(on, cpu) == memory_format(off, cpu) == torch.contiguous_format  # CPU numerics unchanged


@pytest.mark.param_effect("resnet50.compile")
def test_compile_compiles_the_training_network(frames, monkeypatch):
    train, val, _ = frames
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(net) or net)
    R.train(train, val.head(8), tiny("test_vit", max_train_rows=27))
    assert compiled == []
    model = R.train(train, val.head(8), tiny("test_vit", max_train_rows=27, compile=True))
    assert len(compiled) == 1 and compiled[0] is model.net


@pytest.mark.param_effect("resnet50.cache_images")
def test_cache_images_decodes_each_image_once_and_stays_deterministic(frames, monkeypatch):
    train, val, _ = frames
    val = val.head(10)
    decoded = []
    real = data._decode
    monkeypatch.setattr(data, "_decode", lambda path, size: decoded.append(path) or real(path, size))
    runs = {}
    for cache in (False, True, True):
        decoded.clear()
        model = R.train(train, val, tiny("test_vit", max_train_rows=27, epochs=2, cache_images=cache))
        runs.setdefault(cache, []).append(model.history)
        n_train = model.rows["train_rows_used"]
        assert len(decoded) == (n_train + len(val)) * (1 if cache else 2)  # once, or once per epoch
    assert runs[True][0] == runs[True][1]  # deterministic with the cache
    # the cached pixels are what the eval transform sees without the cache: same val inputs either way
    norm = backbones.Norm()
    paths = val["clean_path"].tolist()
    cached = data.CachedRows(
        data.decode_images(paths, 32, norm),
        paths,
        np.zeros(len(val)),
        np.ones(len(val)),
        data.build_transform(32, None, norm),
    )
    plain = data.ImageRows(paths, np.zeros(len(val)), np.ones(len(val)), data.build_transform(32, None, norm), 32)
    assert cached.pixels.shape == (len(val), 32, 32, 3) and cached.pixels.dtype == np.uint8
    assert all(torch.equal(cached[i][0], plain[i][0]) for i in range(len(val)))
