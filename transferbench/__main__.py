"""`python -m transferbench` / `accelerate launch -m transferbench run ...` (the one core->runners import)."""
from transferbench.runners.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
