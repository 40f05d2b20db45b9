"""transferbench: fine-tune, LoRA, linear-probe or train from scratch? Measured.

The Python API (implemented in transferbench.runners.api; imported on first use, so `import transferbench` stays
light and core modules never load the runners):

    import transferbench
    results = transferbench.run("quickstart")                  # as `transferbench run quickstart`
    results = transferbench.load("results/quickstart")         # a store that exists
    results.to_pandas()                                        # one row per run
    results.cells()                                            # one row per leaderboard cell
    results.plan(target=0.9)                                   # `transferbench plan`
    transferbench.plan("results/quickstart", target=0.9)       # the same, from folders
    transferbench.dry_run("quickstart")                        # the run plans, checked; nothing trains
"""
__version__ = "0.1.0"

_API = ("run", "load", "plan", "dry_run", "Results")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    # the one core -> runners import besides __main__ (import-linter's layers contract lists it as an exception)
    if name in _API:
        from transferbench.runners import api

        return getattr(api, name)
    raise AttributeError(f"module 'transferbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
