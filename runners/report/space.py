"""`transferbench report ... --publish DIR --space SPACE_DIR`: a Gradio app that serves the published folder, ready
to run locally (`python SPACE_DIR/app.py`) and to push as a Hugging Face Space (README.md with the Space's front
matter, requirements.txt). The app is space_app.py, copied with the data source filled in; it reads the published
folder (a path relative to the app) or, after `--push-to-hub USER/NAME`, that dataset repo, and needs no
transferbench. Gradio is imported by the app only, never by `transferbench report`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from transferbench.errors import UserError

APP = Path(__file__).with_name("space_app.py")
PLACEHOLDER = "__TRANSFERBENCH_DATA__"
# what the Space installs: the app's imports (huggingface_hub for a dataset id), at the versions tested here
REQUIREMENTS = ["gradio>=6.0,<7", "pandas>=2.0", "matplotlib>=3.7", "huggingface_hub>=1.0"]


def check_space(space: Optional[str], publish: Optional[str]) -> None:
    if space is not None and not publish:
        raise UserError("--space serves the folder that --publish writes; add --publish DIR")


def front_matter(title: str) -> str:
    """The Space's README: its card metadata (sdk gradio, the app file) and what it shows."""
    try:  # only to pin sdk_version to the Gradio installed here; the writer runs with --space only
        import gradio
    except ImportError:
        raise UserError("--space needs Gradio to pin the Space's version: pip install 'transferbench[space]'") from None

    safe = title.replace('"', "'")
    return (f'---\ntitle: "{safe[:60]}"\nemoji: 📊\ncolorFrom: blue\ncolorTo: green\nsdk: gradio\n'
            f"sdk_version: {gradio.__version__}\napp_file: app.py\npinned: false\nlicense: apache-2.0\n"
            f"tags: [transferbench, leaderboard]\n---\n\n# {title}\n\n"
            "The decision per benchmark (which mode to use at which budget, what it costs, what it beats "
            "significantly), every cell as a filterable, sortable table, learning curves, a Pareto plot of any two "
            "measures, the plan's predictions and a CSV download. Written by `transferbench report --space`; run it "
            "locally with `pip install -r requirements.txt && python app.py`.\n")


def write_space(out: Path, data: Path, title: str, dataset_id: Optional[str] = None) -> list[Path]:
    """app.py, README.md and requirements.txt in `out`; the app reads `dataset_id` when given (the pushed dataset),
    else the published folder `data` as a path relative to the app (so the two folders move together)."""
    out.mkdir(parents=True, exist_ok=True)
    source = dataset_id or os.path.relpath(Path(data).resolve(), out.resolve())
    app = APP.read_text(encoding="utf-8").replace(PLACEHOLDER, source.replace("\\", "/"))
    files = {"app.py": app, "README.md": front_matter(title), "requirements.txt": "\n".join(REQUIREMENTS) + "\n"}
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in files]
