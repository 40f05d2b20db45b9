"""A new classification head starts as the library's own reset makes it, in every mode (issue 16's head init)."""
import math

import pytest
import torch

from transferbench.tasks import get_task


@pytest.mark.parametrize("pretrained", [True, False])
def test_timm_head_starts_like_timms_reset_classifier(pretrained):
    task = get_task("image-classification")({"image_size": 32})
    torch.manual_seed(0)
    model = task.build_model("efficientnet-lite0", [str(i) for i in range(10)], pretrained=pretrained)
    head = model.get_submodule(task.head_names(model)[0])
    reference = torch.nn.Linear(head.in_features, 10)  # what timm's reset_classifier builds
    assert head.weight.std().item() == pytest.approx(reference.weight.std().item(), rel=0.1)
    assert head.weight.abs().max().item() <= 1 / math.sqrt(head.in_features) + 1e-6  # nn.Linear's bound
    # logits start small: the loss of an untrained head is about ln(classes), not ~16
    with torch.inference_mode():
        logits = model.eval()(pixel_values=torch.randn(8, 3, 32, 32)).logits
    assert logits.abs().max().item() < 2.0
