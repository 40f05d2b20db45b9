"""The docs' "Add a task" page (docs/add-a-task.md) runs as written: its task module and suite are written to a fresh folder and its command
runs there (a task defined outside the package, registered with @register_task, loaded through `imports:`)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import HANG_GUARD_S

PAGE = Path(__file__).resolve().parents[1] / "docs" / "add-a-task.md"


def section() -> str:
    return PAGE.read_text(encoding="utf-8")


def snippets() -> tuple[dict[str, str], list[str]]:
    """({file name: content} of the fenced blocks that start with `# NAME`, the bash block's command lines)."""
    files, commands = {}, []
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section(), flags=re.S):
        first = body.splitlines()[0]
        if lang in ("python", "yaml") and re.fullmatch(r"# [\w.]+\.(py|yaml)", first):
            files[first[2:]] = body
        elif lang == "bash":
            commands += [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]
    return files, commands


def test_the_section_holds_a_module_a_suite_and_a_command():
    files, commands = snippets()
    assert set(files) == {"my_tasks.py", "my_suite.yaml"}
    assert "@register_task" in files["my_tasks.py"] and "imports: [my_tasks]" in files["my_suite.yaml"]
    assert commands == ["PYTHONPATH=. transferbench run my_suite.yaml"]
    for word in ("TaskData", "labels", "model(**batch)", ".loss", ".logits", "compute_metrics", "fixed-shape",
                 "transferbench.models.from_pretrained", "transferbench.models.resolve", "entry point", "imports:",
                 "plain list", "augment"):
        assert word in section(), word


@pytest.mark.slow
def test_the_documented_task_runs_as_written(tmp_path):
    files, (command,) = snippets()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the command sets its own
    proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "results" / "mean-pool" / "runs.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in records] == ["scratch", "finetune", "lora", "linear-probe"]
    for r in records:
        assert r["status"] == "ok" and r["task"] == "mean-pool-classification", r.get("error")
        assert 0.0 <= r["metric"] <= 1.0 and r["metric_name"] == "accuracy" and set(r["metrics"]) >= {"accuracy", "f1"}
        assert r["train_samples"] == 32 and r["eval_samples"] == 100
        assert r["config"]["suite_source"]["imports"] == ["my_tasks"]  # for the published card's "Reproduce"
        assert r["config"]["suite_source"]["file"] == str((tmp_path / "my_suite.yaml").resolve())
    lora = next(r for r in records if r["mode"] == "lora")
    assert 0 < lora["params_trainable"] < 0.05 * lora["params_total"]  # adapters on query/value + the head
    assert "mean-pool-classification" in (tmp_path / "results" / "mean-pool" / "leaderboard.md").read_text()
