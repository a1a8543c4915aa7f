"""What the bench scripts share: the machine line and the update of one section of BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    return f"{platform.machine()} {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def write_section(title: str, command: str, body: str) -> None:
    """Replace (or append) the section `## {title}` of BENCHMARKS.md: date, machine, command, then `body`."""
    heading = f"## {title}"
    section = f"{heading}\n\n{dt.date.today().isoformat()}, {machine()}; command: `{command}`\n\n{body.strip()}\n"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n\n"
    pattern = re.compile(re.escape(heading) + r".*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: section.rstrip("\n") + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    BENCHMARKS.write_text(text if text.endswith("\n") else text + "\n")
    print(f"wrote {BENCHMARKS}")


def write_readme_block(name: str, body: str, command: str) -> None:
    """Replace README.md's block between `<!-- {name}:start -->` and `<!-- {name}:end -->`: `body`, then the command."""
    readme = BENCHMARKS.with_name("README.md")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        print(f"README.md has no {start} ... {end} block: not written")
        return
    block = f"{start}\n{body.strip()}\n\nCommand: `{command}`\n{end}"
    readme.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S))
    print(f"wrote {readme} ({name})")
