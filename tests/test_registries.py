"""The registries (tasks, modes, training loops) refuse a second entry under a taken name from another source, in one
line naming both; the same object, or the same source imported again, is no duplicate. And a task's loop is chosen
per model through one function."""
import dataclasses

import pytest

import transferbench.modes as modes_module
import transferbench.runners.train.loops as loops_module
import transferbench.tasks as tasks_module
from transferbench.errors import UserError
from transferbench.modes import MODES, register_mode
from transferbench.runners.train.loops import LOOPS, loop_for, register_loop
from transferbench.tasks import Task, get_task, register_task


@pytest.fixture(autouse=True)
def _registries_restored(monkeypatch):
    """Every registry a copy for the test, so nothing registered here outlives it."""
    get_task("object-detection")  # the built-in tasks discovered before the copy
    monkeypatch.setattr(tasks_module, "TASKS", dict(tasks_module.TASKS))
    monkeypatch.setattr(modes_module, "MODES", dict(MODES))
    monkeypatch.setattr(loops_module, "LOOPS", dict(LOOPS))


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_a_second_task_under_a_taken_name_is_refused_naming_both_classes():
    class ImageClassification(Task):
        name = "image-classification"

    with pytest.raises(UserError) as err:
        register_task(ImageClassification)
    text = _one_line(err)
    assert "task 'image-classification' is registered twice" in text
    assert "transferbench.tasks.image_classification.ImageClassification" in text
    assert f"{__name__}.test_a_second_task_under_a_taken_name_is_refused_naming_both_classes.<locals>." \
           "ImageClassification" in text
    assert tasks_module.TASKS["image-classification"].__module__ == "transferbench.tasks.image_classification"


def test_the_same_task_registered_again_or_reimported_is_no_duplicate():
    cls = get_task("text-classification")
    assert register_task(cls) is cls
    again = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    assert register_task(again) is again and get_task("text-classification") is again  # the module's new copy


def test_a_second_mode_under_a_taken_name_is_refused_naming_both_sources():
    def prepare(model, head, targets, hyper):
        return model

    with pytest.raises(UserError) as err:
        register_mode(modes_module.Mode("lora", True, 1e-3, "another lora", prepare))
    text = _one_line(err)
    assert "mode 'lora' is registered twice" in text and "transferbench.modes._lora" in text
    assert f"{__name__}." in text and ".<locals>.prepare" in text
    assert register_mode(modes_module.MODES["finetune"]) is modes_module.MODES["finetune"]  # the same object: fine


def test_a_second_loop_under_a_taken_name_is_refused_naming_both_sources():
    def run(*args, **kwargs):
        raise AssertionError("never runs")

    with pytest.raises(UserError) as err:
        register_loop(loops_module.Loop("hf", "another loop", run, lambda *a: None, splits_batch=False))
    text = _one_line(err)
    assert "training loop 'hf' is registered twice" in text
    assert "transferbench.runners.train.hf_loop.run" in text and ".<locals>.run" in text
    same = loops_module.LOOPS["ultralytics"]
    assert register_loop(dataclasses.replace(same)) is not same  # equal source (a re-import): replaced, no error


def test_the_loop_is_chosen_per_model_family_through_one_function():
    class Detection(Task):
        name = "two-loop-detection"
        loops = {"yolo": "ultralytics"}

        @classmethod
        def model_family(cls, model):
            return "yolo" if model.endswith((".pt", ".yaml")) else "detr"

    assert loop_for(Detection, "yolov8n.yaml").name == "ultralytics"
    assert loop_for(Detection, "facebook/detr-resnet-50").name == "hf"  # a family not listed: the HF loop
    assert loop_for(get_task("object-detection"), "yolov8n.yaml") is LOOPS["ultralytics"]
    assert loop_for(get_task("text-classification"), "any/model") is LOOPS["hf"]


def test_a_loop_refuses_the_options_it_does_not_support_before_its_own_check():
    from transferbench.config import DatasetSpec, RunSpec
    from transferbench.hyper import Hyper

    spec = RunSpec(suite="s", task="object-detection", dataset=DatasetSpec(source="builtin:shapes"),
                   model="yolov8n.yaml", mode="scratch", seed=0, train_samples=8, hyper=Hyper(channels_last=True))
    with pytest.raises(UserError, match=r"^channels_last apply to the Hugging Face loop only; object-detection trains "
                                        r"with Ultralytics' loop here"):
        LOOPS["ultralytics"].check(spec, 1, True)
    assert "channels_last" in LOOPS["hf"].supports and not LOOPS["ultralytics"].supports
