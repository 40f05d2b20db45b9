"""The free-space estimate of preflight (runners/orchestrate/disk_space.py): what the pending runs will write, per
artefact and folder, and a refusal only when the estimate exceeds the free space."""
from pathlib import Path

import pytest

from helpers import write_suite
from transferbench.config import load_suite
from transferbench.errors import UserError
from transferbench.runners.orchestrate import disk_space
from transferbench.runners.orchestrate.plan import plan_runs


def _plans(tmp_path, model, modes):
    suite = write_suite(tmp_path / "s.yaml", model, modes=modes, seeds="[0, 1, 2]",
                        extra="    save_models: final\n")
    return plan_runs(load_suite(suite))


def test_the_estimate_counts_store_lines_and_full_weights_per_saved_run(tiny_bert, tmp_path):
    weights = sum(p.stat().st_size for p in Path(tiny_bert).iterdir() if p.suffix in (".safetensors", ".bin"))
    assert weights > 0 and disk_space.weight_bytes(tiny_bert) == weights
    plans = _plans(tmp_path, tiny_bert, "[finetune, lora]")  # 3 seeds x 2 modes; lora saves adapters only,
    need = disk_space.needs(tmp_path / "res", plans, [])        # and once the base they reload on
    assert need[tmp_path / "res"] == {"store lines": 6 * disk_space.RECORD_BYTES}
    assert need[tmp_path / "res" / "models"] == {"saved models": (3 + 1) * weights}


def test_short_of_space_is_refused_with_the_numbers_and_enough_is_not(tiny_bert, tmp_path):
    plans = _plans(tmp_path, tiny_bert, "[finetune]")
    total = 3 * disk_space.RECORD_BYTES + 3 * disk_space.weight_bytes(tiny_bert)
    disk_space.check_space(tmp_path / "res", plans, [], free=lambda p: total)  # exactly enough: no refusal
    with pytest.raises(UserError, match=r"not enough free space: the pending runs will write about .* \(store lines "
                                        r".* saved models .*\) and .* has 0 B free"):
        disk_space.check_space(tmp_path / "res", plans, [], free=lambda p: 0)
    assert disk_space.weight_bytes("hub-org/not-cached-anywhere") == 0  # unknown size: counted as nothing
