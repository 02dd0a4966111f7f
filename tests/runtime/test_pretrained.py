"""Pretrained-weight resolution offline: local files first, never a silent random init, one-line errors.

Every test runs with HF_HUB_OFFLINE=1 and empty HF/torch caches, as on the offline build machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rakuten.core.errors import PipelineError
from rakuten.models.camembert import model as C
from rakuten.models.camembert.config import SCRATCH
from rakuten.models.resnet50.backbones import build_net
from rakuten.runtime.pretrained import resolve_hf, resolve_timm, resolve_torchvision
from tests.helpers.stagerun import error_lines, run_stage_script


@pytest.fixture(autouse=True)
def _offline_everywhere(offline):
    """Every test here runs offline with empty caches (the ``offline`` fixture of conftest.py)."""


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_camembert_full_profile_offline_is_one_clear_line():
    cfg = replace_full(C.CamembertConfig(), local_dir="")
    with pytest.raises(PipelineError) as err:
        C.resolve_weights(cfg)
    message = _one_line(err)
    assert "camembert-base" in message
    assert "hf download camembert-base --local-dir models/pretrained/camembert-base" in message


def test_local_directory_is_used_first(tmp_path):
    local = tmp_path / "models" / "pretrained" / "camembert-base"
    local.mkdir(parents=True)
    (local / "config.json").write_text("{}")
    assert Path(resolve_hf("camembert-base")) == Path("models/pretrained/camembert-base")
    assert C.resolve_weights(replace_full(C.CamembertConfig(), local_dir=str(local))) == str(local)


def test_scratch_profile_needs_no_weights():
    assert C.resolve_weights(C.CamembertConfig().with_active(model=SCRATCH)) is None
    assert resolve_torchvision("resnet18", "none") is None


def test_imagenet_weights_offline_is_one_clear_line():
    with pytest.raises(PipelineError) as err:
        resolve_torchvision("resnet50", "imagenet")
    message = _one_line(err)
    assert "resnet50 ImageNet" in message and "curl -L -o resnet50-" in message
    assert str(Path("torch_home") / "hub" / "checkpoints") in message


def test_imagenet_weights_in_the_torch_cache_are_found(tmp_path):
    import torchvision
    from torchvision.models import ResNet18_Weights

    name = ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / name
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    assert resolve_torchvision("resnet18", "imagenet") == cached
    assert build_net("resnet18", cached).fc.out_features == 27


def test_local_weights_file_is_loaded_and_the_head_replaced(tmp_path):
    import torchvision

    source = torchvision.models.resnet18()
    path = tmp_path / "my_resnet18.pth"
    torch.save(source.state_dict(), path)
    net = build_net("resnet18", resolve_torchvision("resnet18", str(path)))
    assert torch.equal(net.conv1.weight, source.conv1.weight)
    assert net.fc.out_features == 27


def test_missing_or_wrong_local_weights_file_is_one_line(tmp_path):
    with pytest.raises(PipelineError) as err:
        resolve_torchvision("resnet50", str(tmp_path / "absent.pth"))
    assert "absent.pth not found" in _one_line(err)
    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(PipelineError) as err:
        build_net("resnet18", bad)
    assert "not a resnet18 state dict" in _one_line(err)


@pytest.mark.parametrize(
    "stage, overrides, needle",
    [
        ("camembert", {"camembert.profile": "full", "camembert.full.local_dir": ""}, "camembert-base"),
        ("resnet50", {"resnet50.profile": "full"}, "resnet50 ImageNet"),
        ("resnet50", {"resnet50.profile": "strongest"}, "hf download timm/convnext_base.fb_in22k_ft_in1k"),
    ],
)
def test_full_profile_stage_offline_exits_with_one_error_line(stage, overrides, needle, tmp_path):
    result = run_stage_script(stage, tmp_path / "work", overrides, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "work" / "models").exists()  # nothing written before the check


def test_timm_pretrained_weights_offline_is_one_clear_line():
    with pytest.raises(PipelineError) as err:
        resolve_timm("convnext_base.fb_in22k_ft_in1k", "pretrained")
    message = _one_line(err)
    assert "timm/convnext_base.fb_in22k_ft_in1k not found locally" in message
    assert "--local-dir models/pretrained/timm--convnext_base.fb_in22k_ft_in1k" in message
    assert resolve_timm("convnext_atto", "none") is None


def test_timm_weights_in_the_local_folder_or_a_named_file_are_used(tmp_path):
    local = tmp_path / "models" / "pretrained" / "timm--convnext_atto.d2_in1k"
    local.mkdir(parents=True)
    (local / "pytorch_model.bin").write_bytes(b"x")  # the older format is found too
    assert resolve_timm("convnext_atto", "imagenet") == Path(
        "models/pretrained/timm--convnext_atto.d2_in1k/pytorch_model.bin"
    )
    with pytest.raises(PipelineError) as err:
        resolve_timm("convnext_atto", str(tmp_path / "absent.safetensors"))
    assert "absent.safetensors not found" in _one_line(err)
    with pytest.raises(PipelineError) as err:
        resolve_timm("convnext_atto", str(tmp_path / "models"))
    assert "has no model.safetensors or pytorch_model.bin" in _one_line(err)


def replace_full(cfg: C.CamembertConfig, local_dir: str) -> C.CamembertConfig:
    from dataclasses import replace

    return replace(cfg, profile="full").with_active(model="camembert-base", local_dir=local_dir)
