"""Cost: the device-hour cost model, the price table, energy counters (RAPL, NVML) and their report column."""
import json
import threading
import types
from pathlib import Path

import pytest
import torch

from helpers import result, run_main, write_store, write_suite
from transferbench import cost, energy
from transferbench.results import SCHEMA_VERSION, Store


def test_cost_model():
    price = cost.lookup("NVIDIA H100 80GB HBM3")
    assert price.per_device_hour > 0 and price.date and price.source.startswith("http")
    assert cost.lookup("CPU: AMD EPYC 7B13").per_device_hour > 0
    assert cost.lookup("NVIDIA H100 80GB HBM3", override=1.5) == cost.Price(1.5, None, "user override")
    assert cost.lookup("Some Unknown Accelerator").per_device_hour is None
    hours = cost.device_hours(1800, 4)
    assert hours == 2.0 and cost.cost_usd(hours, cost.Price(3.0, None, "x")) == 6.0


def test_price_keys_match_whole_words_only():
    assert cost.lookup("NVIDIA L4").per_device_hour == cost.price_table()["devices"]["L4"]["price"]
    assert cost.lookup("NVIDIA L40S").per_device_hour is None  # not the L4's price
    assert cost.lookup("NVIDIA A100-SXM4-80GB").per_device_hour == cost.price_table()["devices"]["A100"]["price"]


UJ = 1e-6 / 3.6e6  # kWh per microjoule


@pytest.fixture
def powercap(tmp_path, monkeypatch):
    """A fake /sys/class/powercap (whose class folder lists sub-zones beside their package, as sysfs does):
    package-0 with its core and dram sub-zones, and a psys zone; values in microjoules."""
    root = tmp_path / "powercap"

    def zone(name, kind, value, wrap=10**12, limit=None):
        z = root / name
        z.mkdir(parents=True)
        (z / "name").write_text(kind + "\n")
        (z / "energy_uj").write_text(str(value))
        (z / "max_energy_range_uj").write_text(str(wrap))
        if limit is not None:
            (z / "constraint_0_power_limit_uw").write_text(str(limit))
        return z / "energy_uj"

    files = {"package": zone("intel-rapl:0", "package-0", 1_000, limit=100 * 10**6),
             "core": zone("intel-rapl:0:0", "core", 5),
             "dram": zone("intel-rapl:0:1", "dram", 2_000),
             "psys": zone("intel-rapl:1", "psys", 7)}
    monkeypatch.setattr(energy, "POWERCAP", root)
    energy.rapl_counters.cache_clear()
    yield files
    energy.rapl_counters.cache_clear()


def test_rapl_package_and_dram_are_counted_core_and_psys_are_not(powercap, monkeypatch):
    monkeypatch.delenv(energy.GRID_ENV, raising=False)
    with energy.EnergyMeter(torch.device("cpu")) as meter:
        powercap["package"].write_text(str(1_000 + 7_200_000_000))  # 2 Wh
        powercap["dram"].write_text(str(2_000 + 3_600_000_000))  # 1 Wh
        powercap["core"].write_text(str(10**11))  # inside the package's count: ignored
        powercap["psys"].write_text(str(10**11))  # the whole platform, overlapping: ignored
    e = meter.result()
    assert e.source == "rapl" and e.kwh == pytest.approx(0.003)
    assert e.grid_gco2_per_kwh == 475 and e.co2_kg == pytest.approx(0.003 * 0.475)
    assert "package-0: 0.002 kWh" in e.note and "dram (intel-rapl:0:1): 0.001 kWh" in e.note


def test_a_wrapped_counter_is_unwrapped_and_the_grid_intensity_is_the_users(powercap, monkeypatch):
    monkeypatch.setenv(energy.GRID_ENV, "100")
    wrap = 10**12
    powercap["package"].parent.joinpath("max_energy_range_uj").write_text(str(wrap))
    powercap["package"].write_text(str(wrap - 1_000_000))
    with energy.EnergyMeter(torch.device("cpu")) as meter:
        powercap["package"].write_text(str(500_000))  # started again from 0
    e = meter.result()
    assert e.kwh == pytest.approx(1_500_000 * UJ)
    assert e.co2_kg == pytest.approx(1_500_000 * UJ * 100 / 1000) and e.grid_gco2_per_kwh == 100


def test_poll_sees_every_wrap_and_a_long_gap_is_not_a_measurement(powercap, monkeypatch):
    # a 1 J counter range and a 1 W power limit: it could wrap every second
    zone = powercap["package"].parent
    (zone / "max_energy_range_uj").write_text(str(10**6))
    (zone / "constraint_0_power_limit_uw").write_text(str(10**6))
    (powercap["dram"].parent / "energy_uj").unlink()  # one counter only
    energy.rapl_counters.cache_clear()
    monkeypatch.setattr(energy, "POLL_SECONDS", 0.0)
    powercap["package"].write_text("0")
    with energy.EnergyMeter(torch.device("cpu")) as meter:
        for value in (900_000, 200_000, 500_000):  # two wraps: 0.9 + 0.3 + 0.3 J
            powercap["package"].write_text(str(value))
            energy.poll()
    assert meter.result().kwh == pytest.approx(1_500_000 * UJ)
    assert not energy._ACTIVE  # the meter stopped polling with the run

    clock = iter([0.0, 5.0])  # enter, exit: 5 s between reads at up to 1 W could hide a 1 J wrap
    monkeypatch.setattr(energy.time, "monotonic", lambda: next(clock))
    with energy.EnergyMeter(torch.device("cpu")) as meter:
        pass
    e = meter.result()
    assert e.kwh is None and "may have wrapped more than once between two reads (5 s apart)" in e.note


def test_unreadable_counters_give_no_number_and_say_why(powercap, monkeypatch):
    read = energy._read_uj

    def root_only(path):
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return read(path)

    monkeypatch.setattr(energy, "_read_uj", root_only)
    with energy.EnergyMeter(torch.device("cpu")) as meter:
        pass
    e = meter.result()
    assert e.kwh is None and e.co2_kg is None and e.source is None
    assert e.note.startswith("no CPU energy counter readable on this machine: RAPL counters are not readable by "
                             "this user") and "permission denied" in e.note


def test_nvml_counts_each_gpu_of_the_run_matched_by_uuid(monkeypatch, tmp_path):
    """NVML's counters (millijoules) of the run's GPUs, found by UUID, with no GPU here: pynvml and the CUDA
    device properties are stand-ins."""
    counters = {"GPU-aaa": 1_000, "GPU-bbb": 50_000, "GPU-ccc": 0}
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetHandleByUUID=lambda uuid: uuid,
        nvmlDeviceGetTotalEnergyConsumption=lambda handle: counters[handle],
        nvmlDeviceGetName=lambda handle: b"NVIDIA H200")
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: types.SimpleNamespace(uuid=["aaa", "bbb", "ccc"][i]))
    monkeypatch.setattr(energy, "POWERCAP", tmp_path / "none")
    energy._nvml.cache_clear()
    energy.rapl_counters.cache_clear()
    try:
        with energy.EnergyMeter(torch.device("cuda", 0), device_count=2) as meter:
            counters["GPU-aaa"] += 3_600_000  # 1 Wh
            counters["GPU-bbb"] += 7_200_000  # 2 Wh
            counters["GPU-ccc"] += 10**9  # not one of the run's GPUs
        e = meter.result()
    finally:
        energy._nvml.cache_clear()
        energy.rapl_counters.cache_clear()
    assert e.source == "nvml" and e.kwh == pytest.approx(0.003)
    assert "GPU 0 (NVIDIA H200): 0.001 kWh; GPU 1 (NVIDIA H200): 0.002 kWh" in e.note
    assert "not counted: no RAPL zones" in e.note  # what the number leaves out is said


def test_measuring_reads_each_counter_twice_a_run_and_starts_no_thread(powercap, monkeypatch):
    """What a run pays for its energy number: one read of each counter as it starts and one as it ends (zone
    discovery once per process), in the calling thread: microseconds, whatever the run's length."""
    threads = threading.active_count()
    with energy.EnergyMeter(torch.device("cpu")):  # discovery, cached per process
        pass
    reads, read_text = [], energy.read_text  # every counter is read through safe_read.read_text
    monkeypatch.setattr(energy, "read_text", lambda path, *a: reads.append(Path(path).name) or read_text(path, *a))
    for _ in range(100):
        with energy.EnergyMeter(torch.device("cpu")) as meter:
            assert threading.active_count() == threads
        meter.result()
    assert len(meter.counters) == 2 and energy.rapl_counters.cache_info().misses == 1
    assert reads == ["energy_uj"] * (100 * 2 * 2)  # 100 runs x 2 counters (package, dram) x start and end


def test_a_run_on_this_cpu_records_why_it_has_no_energy_and_the_report_says_so(tiny_bert, tmp_path, capsys):
    energy.rapl_counters.cache_clear()
    counters, why = energy.rapl_counters()
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[linear-probe]", budget="[32]")
    assert run_main("run", suite, "--results-dir", tmp_path / "res") == 0
    (r,) = Store(tmp_path / "res").records()
    assert r["schema_version"] == SCHEMA_VERSION and r["grid_gco2_per_kwh"] == 475
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| model |"))
    if counters:  # a machine whose RAPL counters this user may read: a measurement
        assert header.rstrip(" |").endswith("energy/run")
        assert r["energy_source"] == "rapl" and r["energy_kwh"] > 0
        assert "Energy per run (1 run): read from the RAPL counters" in printed
    else:  # a column empty in every row is hidden, and the note under the table intro says why
        assert r["energy_kwh"] is None and r["co2_kg"] is None and r["energy_source"] is None
        assert r["energy_note"] == f"no CPU energy counter readable on this machine: {why}"
        assert "energy/run" not in header
        assert f"energy/run (no CPU energy counter readable on this machine: {why})" in printed
        assert f"- Energy — (1 run): no CPU energy counter readable on this machine: {why}." in printed


def test_report_column_and_footer_from_measured_records(tmp_path):
    from transferbench.runners.report.outputs import report

    def run(seed, kwh):
        return result(f"r{seed}", schema_version=6, seed=seed, mode="finetune", metric=0.5, status="ok",
                      energy_kwh=kwh, co2_kg=kwh * 0.3, grid_gco2_per_kwh=300.0, energy_source="nvml",
                      energy_note="GPU 0 (NVIDIA H200): x kWh")
    store = write_store(tmp_path / "store", [json.loads(run(0, 0.002).to_json()), json.loads(run(1, 0.004).to_json())])
    text = report([store], out=tmp_path / "out")
    cells_table = text.split("<details>")[1]  # the decision table above names the mode too
    row = next(line for line in cells_table.splitlines() if "| finetune |" in line)
    assert row.rstrip(" |").endswith("0.003 kWh, 0.9 g CO2e")  # mean over the cell's runs
    assert "Energy per run (2 runs): read from NVML's total-energy counter of each GPU" in text
    assert "CO2e = kWh × 300 g CO2e per kWh" in text
    cells = json.loads((tmp_path / "out" / "leaderboard.json").read_text())["cells"]
    assert cells[0]["energy_kwh"] == pytest.approx(0.003) and cells[0]["co2_kg"] == pytest.approx(0.0009)


def test_a_bad_grid_intensity_is_one_line_before_training(tiny_bert, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(energy.GRID_ENV, "lots")
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[linear-probe]", budget="[32]")
    assert run_main("run", suite, "--results-dir", tmp_path / "res") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{energy.GRID_ENV} must be a finite number" in err
    assert not (tmp_path / "res").exists()


def test_a_counter_file_that_would_block_is_refused_not_read(powercap):
    """A FIFO where a counter should be (or any file that is not a regular one) would block a plain read forever and
    hang the first run: it is refused at once, and the other counters are still read."""
    import os
    import threading

    from helpers import HANG_GUARD_S
    from transferbench.safe_read import read_text

    package = powercap["package"]
    package.unlink()
    os.mkfifo(package)
    got = {}
    worker = threading.Thread(target=lambda: got.update(zip(("counters", "why"), energy.rapl_counters())),
                              daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)  # a guard against the hang this test is about, never a timing
    assert not worker.is_alive()
    assert [c.name for c in got["counters"]] == ["dram (intel-rapl:0:1)"]
    with pytest.raises(OSError, match="not a regular file"):
        read_text(package)
