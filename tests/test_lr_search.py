"""`lr: auto` / `lr: [grid]`: a learning-rate search once per cell (its first seed; reused by the other seeds), by
successive halving, on the budget's validation part or examples held out beyond the budget; unset lr means auto
where the task's loop searches; a given rate keeps its run and run_id."""
import json

import pytest

from helpers import run_main, write_suite
from transferbench.config import parse_suite
from transferbench.errors import UserError
from transferbench.modes import MODES
from transferbench.runners.orchestrate.plan import plan_runs
from transferbench.runners.train.loops import loop_for
from transferbench.tasks import get_task


def expand(suite):
    """The suite's run specs, as the run plans hold them."""
    return [p.spec for p in plan_runs(suite)]


def _text(modes, defaults=None, task="text-classification"):
    return {"name": "s", "defaults": {"seeds": [0], "epochs": 3, **(defaults or {})},  # a fixed schedule
            "benchmarks": [{"task": task, "dataset": "builtin:topics", "models": ["m"], "modes": modes,
                            "train_samples": [32]}]}


def test_unset_lr_is_searched_where_the_loop_searches_and_a_given_rate_keeps_its_run_id():
    runs = {r.mode: r for r in expand(parse_suite(_text(
        {"scratch": None, "finetune": {"lr": 1e-4}, "lora": {"lr": "default"}, "linear-probe": {"lr": [1e-2, 1e-3]}})))}
    assert runs["scratch"].hyper.lr == "auto" and runs["scratch"].hyper.searched
    assert runs["lora"].hyper.lr == MODES["lora"].default_lr and not runs["lora"].hyper.searched
    assert runs["linear-probe"].hyper.lr == (1e-3, 1e-2)  # a grid, kept sorted
    # how a search would run is no part of a run given its rate: its run_id does not move with lr_search
    other = {r.mode: r for r in expand(parse_suite(_text(
        {"scratch": None, "finetune": {"lr": 1e-4}, "lora": {"lr": "default"}, "linear-probe": {"lr": [1e-2, 1e-3]}},
        {"lr_search": {"fraction": 0.5}})))}
    assert other["finetune"].run_id == runs["finetune"].run_id and other["lora"].run_id == runs["lora"].run_id
    assert other["scratch"].run_id != runs["scratch"].run_id  # ... but it is part of a searched run
    # "default" is the same run as the mode's default rate given as a number
    given = expand(parse_suite(_text({"lora": {"lr": MODES["lora"].default_lr}})))[0]
    assert given.run_id == runs["lora"].run_id


def test_a_loop_without_a_search_trains_unset_lr_at_the_mode_default_and_refuses_auto():
    assert not loop_for(get_task("object-detection"), "yolov8n.yaml").searches_lr
    run = expand(parse_suite(_text({"finetune": None}, task="object-detection")))[0]
    assert run.hyper.lr == MODES["finetune"].default_lr
    with pytest.raises(UserError, match=r"benchmarks\[0\].modes.finetune.lr: this task trains with its own loop"):
        expand(parse_suite(_text({"finetune": {"lr": "auto"}}, task="object-detection")))


def test_the_search_scores_on_examples_beyond_the_budget_and_leaves_the_budget_as_it_was(tiny_bert):
    from transferbench.runners.train import hf_loop

    plan, other = plan_runs(parse_suite(_text({"finetune": {"lr": "auto"}, "lora": {"lr": 1e-3}},
                                              {"task_args": {"max_length": 16}, "lr_search": {"validation": "beyond"}})))
    searched = plan.spec.model_copy(update={"model": tiny_bert})
    given = other.spec.model_copy(update={"model": tiny_bert})
    task = get_task("text-classification")({"max_length": 16})
    data, train_set, held = hf_loop.load(searched, task, tiny_bert, plan.search)
    _, same_set, none = hf_loop.load(given, task, tiny_bert)
    assert none is None and train_set.indices == same_set.indices  # every mode of a seed: the same subset
    assert len(held) == 100 and not set(held.indices) & set(train_set.indices)
    assert held.dataset is data.train  # from the training pool, never the test split
    # a larger budget of the same seed starts with this one (nested), whatever the search holds out
    bigger = searched.model_copy(update={"train_samples": 64})
    assert hf_loop.load(bigger, task, tiny_bert, plan.search)[1].indices[:32] == train_set.indices


@pytest.mark.parametrize("mode, options", [("finetune", ""), ("linear-probe", ", cached_features: true")])
def test_a_searched_run_records_its_search_and_then_trains_as_the_chosen_rate_given(tiny_bert, tmp_path, mode,
                                                                                     options):
    """Every candidate's validation score is in the record; the winner is the best score (loss breaks ties); the
    run then trains exactly as a run given the winning rate (same curve), and pays for the search in its cost.
    A probe on cached features searches on features of the held-out examples (its own store, charged)."""
    extra = "    lr_search: {fraction: 0.5, min_steps: 1}\n    epochs: 4"
    grid = [1e-5, 3e-3, 0.5]
    searched = write_suite(tmp_path / "a.yaml", tiny_bert, modes=f"{{{mode}: {{lr: {grid}{options}}}}}",
                           budget="[32]", extra=extra)
    assert run_main("run", searched, "--results-dir", tmp_path / "a") == 0
    rec = json.loads((tmp_path / "a" / "runs.jsonl").read_text())
    s = rec["lr_search"]
    assert rec["status"] == "ok" and rec["config"]["hyper"]["lr"] == grid and s["kind"] == "grid"
    assert s["grid"] == grid and [x["lr"] for x in s["scores"]] == grid
    # validated inside the budget: 7 of its 32 examples (20%), the candidates fitting the other 25 for half of
    # their 8 planned steps; the run then trains 8 steps on all 32
    assert s["validation"] == "budget" and s["validation_samples"] == 7
    assert s["steps"] == 4 and rec["optimizer_steps"] == 8
    valid = [x for x in s["scores"] if x["metric"] is not None]
    top = max(x["metric"] for x in valid)
    assert s["chosen"] == rec["lr"] and s["chosen"] in [x["lr"] for x in valid if x["metric"] >= top - 0.5 / 7]
    assert all(0 <= x["metric"] <= 1 and x["loss"] > 0 for x in valid)
    assert len({(x["metric"], x["loss"]) for x in valid}) == len(valid)  # the candidates really trained differently
    assert rec["wall_seconds"] >= rec["train_seconds"] + rec["eval_seconds"] + rec["setup_seconds"] + s["seconds"] * 0.99
    assert s["seconds"] > 0 and rec["setup_seconds"] < s["seconds"] + rec["setup_seconds"]

    given = write_suite(tmp_path / "b.yaml", tiny_bert, modes=f"{{{mode}: {{lr: {s['chosen']}{options}}}}}",
                        budget="[32]", extra=extra)
    assert run_main("run", given, "--results-dir", tmp_path / "b") == 0
    plain = json.loads((tmp_path / "b" / "runs.jsonl").read_text())
    assert plain["lr_search"] is None and plain["lr"] == s["chosen"] and plain["run_id"] != rec["run_id"]
    assert [p["metric"] for p in plain["curve"]] == [p["metric"] for p in rec["curve"]]
    assert plain["metric"] == rec["metric"] and plain["loss_curve"] == rec["loss_curve"]


@pytest.mark.parametrize("modes, extra, message", [
    ("{finetune: {lr: [1e-3]}}", "", "a learning-rate grid needs at least two different rates"),
    ("{finetune: {lr: fast}}", "", "a learning rate is a finite number above 0, 'auto' (searched)"),
    ("{finetune: {lr: auto}}", "    lr_search: {fraction: 0}", "lr_search.fraction"),
])
def test_bad_learning_rates_are_one_line(tiny_bert, tmp_path, capsys, modes, extra, message):
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes=modes, budget="[32]", extra=extra)
    assert run_main("run", suite, "--results-dir", tmp_path / "r") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "r" / "runs.jsonl").exists()


def test_a_stage_trains_at_one_given_rate():
    data = {**_text({"finetune": None}), "pretrain": {"p": {"task": "text-classification", "dataset": "builtin:topics",
                                                             "model": "m", "lr": "auto"}}}
    data["benchmarks"][0]["models"] = ["pretrain:p"]
    with pytest.raises(UserError, match="pretrain.p.lr: a pretrain stage trains once at one rate"):
        expand(parse_suite(data))


def test_too_few_examples_left_for_the_search_is_refused_before_training(tiny_bert, tmp_path, capfd):
    """Issue 25: found by preflight (run and --dry-run alike), not as a failed row after other runs trained."""
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="{finetune: {lr: auto}}", budget="[32]",
                        extra="    lr_search: {validation: beyond, validation_samples: 100000}")
    for dry in ([], ["--dry-run"]):
        capfd.readouterr()
        assert run_main("run", suite, "--results-dir", tmp_path / "r", *dry) == 2
        (line,) = capfd.readouterr().err.strip().splitlines()
        assert "scores its candidate rates on 100000 training examples beyond the budget" in line
        assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("lr, peak, tried_beyond", [
    ("auto", 1.0, [3e-3, 1e-2]),  # best at the top end: two more rates above, then it stops
    ("auto", 1.5e-5, [3e-6]),  # best at the bottom: one below (3e-6 is worse), then the best is inside
    ("auto", 1e-4, []),  # best inside the grid: nothing more
    ([1e-4, 1e-3], 1.0, []),  # a given grid is searched as given
])
def test_an_auto_grid_extends_past_the_end_that_wins(lr, peak, tried_beyond):
    import math

    from transferbench.outcome import Diverged, TrainOutcome
    from transferbench.runners.train import lr_search

    (plan,) = plan_runs(parse_suite(_text({"finetune": {"lr": lr, "lr_search": {"halving": 1}}})))

    def fake(c, **rung):  # validation accuracy peaks at `peak` (in log rate); 3e-2 and above diverge
        if c.hyper.lr >= 3e-2:
            raise Diverged("nan")
        return TrainOutcome(metrics={"accuracy": -abs(math.log10(c.hyper.lr / peak)), "loss": 1.0})

    chosen, record, _ = lr_search.search(plan.spec, plan.search, 40, fake, "accuracy", True, 100)
    grid = list(MODES["finetune"].auto_grid) if lr == "auto" else lr
    assert [s["lr"] for s in record["scores"]] == grid + tried_beyond
    assert record["steps"] == 12 and record["grid"] == grid  # a quarter of 40 steps, at least 12
    best = max((s for s in record["scores"] if s["metric"] is not None), key=lambda s: s["metric"])
    assert chosen == record["chosen"] == best["lr"]


def test_a_search_where_every_rate_diverges_is_a_diverged_run():
    from transferbench.outcome import Diverged
    from transferbench.runners.train import lr_search

    (plan,) = plan_runs(parse_suite(_text({"finetune": {"lr": [1.0, 2.0]}})))

    def fake(c, **rung):
        raise Diverged("nan")

    with pytest.raises(Diverged, match="every candidate learning rate of the search diverged"):
        lr_search.search(plan.spec, plan.search, 40, fake, "accuracy", True, 100)


def test_successive_halving_trains_the_best_third_all_the_steps_and_only_they_can_win():
    """A first rung of a third of the candidate steps for every rate; the best third go on to all of them; a rate
    that led the first rung but fell behind in the second does not win; an end that wins outright extends at the
    full length."""
    from transferbench.outcome import TrainOutcome
    from transferbench.runners.train import lr_search

    (plan,) = plan_runs(parse_suite(_text({"finetune": {"lr": "auto"}})))
    grid = list(MODES["finetune"].auto_grid)  # 5 rates

    kept, most, continued = set(), [0], []  # the rates paused at the first rung, as the HF loop keeps them

    def fake(c, until=None, forget=()):  # short runs favour the largest rate; at full length the one below it
        assert c.hyper.max_steps == 12  # every candidate is a full-length one; a first rung stops `until` steps in
        kept.difference_update(forget)
        short = until is not None
        if short:
            kept.add(c.hyper.lr)
            most[0] = max(most[0], len(kept))
        elif c.hyper.lr in kept:
            kept.discard(c.hyper.lr)
            continued.append(c.hyper.lr)
        best = grid[-1] if short else grid[-2]
        return TrainOutcome(metrics={"accuracy": 1 - abs(math.log10(c.hyper.lr / best)) / 10, "loss": 1.0})

    import math

    chosen, record, _ = lr_search.search(plan.spec, plan.search, 40, fake, "accuracy", True, 100)
    # both promoted candidates go on from their rung, and no more than the promoted third and one more are kept
    assert sorted(continued) == sorted(grid)[-2:] and most[0] <= 3
    assert record["rungs"] == [4, 12] and record["steps"] == 12  # 12 candidate steps; a third, at least 4
    first = [s for s in record["scores"] if s["steps"] == 4]
    second = [s for s in record["scores"] if s["steps"] == 12]
    # the first rung's leader is the grid's top end: one rate beyond it at the rung's length, which does not lead
    assert [s["lr"] for s in first] == grid + [3e-3]
    assert sorted(s["lr"] for s in second) == sorted(grid)[-2:]  # ceil(5 / 3) = 2: the two best of the first rung
    assert chosen == record["chosen"] == grid[-2]  # the first rung's leader lost at full length
    assert record["outright"] and len(second) == 2  # the winner is inside what was tried: no extension


def test_a_first_rung_where_every_rate_scores_chance_promotes_by_validation_loss():
    """After a few steps every rate may still score chance; the validation loss already says which learn."""
    from transferbench.outcome import TrainOutcome
    from transferbench.runners.train import lr_search

    (plan,) = plan_runs(parse_suite(_text({"finetune": {"lr": "auto"}})))
    grid = list(MODES["finetune"].auto_grid)

    def fake(c, until=None, forget=()):  # chance for all at the rung; the loss falls with the rate up to 3e-4
        short = until is not None
        loss = 1.0 + abs(math.log10(c.hyper.lr / 3e-4))
        return TrainOutcome(metrics={"accuracy": 0.25 if short else 1 - loss / 10, "loss": loss})

    import math

    chosen, record, _ = lr_search.search(plan.spec, plan.search, 40, fake, "accuracy", True, 100)
    second = sorted(s["lr"] for s in record["scores"] if s["steps"] == 12)
    assert second == [1e-4, 3e-4] or second == [3e-4, 1e-3]  # the lowest loss and one of the two next to it
    assert chosen == 3e-4


@pytest.mark.parametrize("mode", ["finetune", "linear-probe"])  # linear-probe: a head on cached features
def test_a_candidate_paused_at_its_rung_goes_on_exactly_as_one_trained_straight_through(tiny_bert, tmp_path, mode):
    """A first rung's candidate keeps its optimizer, schedule, random and data-order state in memory; promoted, it
    ends where a candidate trained all its steps at once ends: same losses, validation score and weights."""
    import torch

    from transferbench.runners.orchestrate.execute import accelerator_for
    from transferbench.runners.train import hf_loop, lr_search

    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes=f"{{{mode}: {{lr: 3e-3}}}}", budget="[48]",
                        extra="    epochs: 3")  # 3 batches an epoch: the rung stops inside the second epoch
    from transferbench.config import load_suite

    (plan,) = plan_runs(load_suite(suite))
    spec = plan.spec
    task = get_task(spec.task)(spec.task_args)
    data, train_set, _ = hf_loop.load(spec, task, tiny_bert)
    key = ("test", mode)
    c = lr_search.candidate(spec, 3e-3, 8)

    def trained(**rung):
        initial = hf_loop.Initial(task, tiny_bert, data)
        return lambda **more: hf_loop._candidate(c, task, initial, data, train_set, accelerator_for(c), key,
                                                 **rung, **more)

    straight = trained()()
    kept = {}
    go = trained(kept=kept)
    rung = go(until=4)
    assert rung.stop_reason == "rung" and rung.optimizer_steps == 4 and len(kept) == 1
    ended = go()
    assert not kept and ended.resumed_at_step == 4 and ended.optimizer_steps == straight.optimizer_steps == 8
    assert ended.losses == pytest.approx(straight.losses, rel=1e-5, abs=1e-6)
    assert ended.losses[:4] == pytest.approx(rung.losses, rel=1e-6)
    assert ended.metrics["loss"] == pytest.approx(straight.metrics["loss"], rel=1e-5)
    assert ended.metrics["accuracy"] == straight.metrics["accuracy"]
    for (name, a), b in zip(ended.model.state_dict().items(), straight.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a_search_under_two_processes_goes_on_from_its_rungs_as_one_process_does(tiny_bert, tmp_path):
    """`accelerate launch` over 2 CPU processes: every process trains the candidates (data-parallel), pauses them at
    the first rung and resumes the promoted one, as a 1-process launch does."""
    from helpers import accelerate_launch

    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="{finetune: {lr: [1.0e-4, 1.0e-3, 1.0e-2]}}",
                        budget="[64]", extra="    epochs: 8\n    batch_size: 8\n"
                                             "    lr_search: {min_steps: 6, min_rung_steps: 2}")
    two = accelerate_launch("run", suite, "--results-dir", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    assert run_main("run", suite, "--results-dir", tmp_path / "one") == 0
    (r2,), (r1,) = (list(map(json.loads, (tmp_path / d / "runs.jsonl").read_text().splitlines())) for d in ("two", "one"))
    assert r2["num_processes"] == 2 and r1["num_processes"] == 1 and r2["status"] == r1["status"] == "ok"
    for rec in (r1, r2):
        search = rec["lr_search"]
        rung, length = search["rungs"]
        promoted = [c for c in search["scores"] if c["steps"] == length and c["lr"] in search["grid"]]
        assert rung < length and len(promoted) == 1  # ceil(3 / 3): the best of the first rung goes on
        assert promoted[0]["from_step"] == rung  # from where its rung stopped, not from the start
        assert rec["lr"] == search["chosen"] == promoted[0]["lr"]  # only a candidate that trained all steps wins


def test_a_cell_searches_once_and_its_other_seeds_reuse_the_choice(tiny_bert, tmp_path, monkeypatch):
    """lr_search.per: cell (the default): the first seed's run trains the candidates; the second trains none, trains
    at the same rate and records whose search it used; per: run searches for every seed."""
    from transferbench.runners.train import cell_search, lr_search

    trained = []
    real = lr_search.candidate
    monkeypatch.setattr(lr_search, "candidate", lambda spec, lr, steps: trained.append(spec.seed) or real(spec, lr, steps))
    extra = "    lr_search: {fraction: 0.5, min_steps: 1}\n    epochs: 4"
    for per, folder in (("cell", "a"), ("run", "b")):
        trained.clear()
        cell_search._DONE.clear()  # what this process remembers: the second suite finds its searches on disk only
        suite = write_suite(tmp_path / f"{folder}.yaml", tiny_bert, seeds="[0, 1]", budget="[32]",
                            modes="{finetune: {lr: [1e-5, 3e-3]}}",
                            extra=extra.replace("min_steps: 1", f"min_steps: 1, per: {per}"))
        assert run_main("run", suite, "--results-dir", tmp_path / folder) == 0
        recs = {r["seed"]: r for r in map(json.loads, (tmp_path / folder / "runs.jsonl").read_text().splitlines())}
        first, second = recs[0]["lr_search"], recs[1]["lr_search"]
        if per == "cell":
            assert trained == [0, 0]  # two candidates, both of seed 0, none for seed 1
            assert first["by"] == second["by"] == recs[0]["run_id"] and not first["reused"] and second["reused"]
            assert recs[1]["lr"] == recs[0]["lr"] == first["chosen"] and second["scores"] == first["scores"]
            assert (tmp_path / folder / "lr_search" / f"{recs[0]['run_id']}.json").exists()
        else:
            assert trained == [0, 0, 1, 1] and first["by"] == recs[0]["run_id"] and second["by"] == recs[1]["run_id"]
            assert not first["reused"] and not second["reused"]
