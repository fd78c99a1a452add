"""Per-iteration progress: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def format_record(rec) -> str:
    cons = "  ".join(f"{k} {v:.4f}" for k, v in rec.constraints.items())
    extra = "  ".join(f"{k} {v:g}" for k, v in rec.extra.items())
    parts = [f"it {rec.iteration:4d}", f"obj {rec.objective:.6e}"]
    if cons:
        parts.append(cons)
    parts += [f"change {rec.change:.4f}", f"{rec.seconds:.3f}s"]
    if extra:
        parts.append(extra)
    return "  ".join(parts)


class ProgressReporter:
    """Prints one line per iteration; on a terminal also shows a progress bar."""

    def __init__(self, max_iter: int, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.console = Console(file=self.stream)
        self.bar: Progress | None = None
        self.max_iter = max_iter
        if not quiet and self.console.is_terminal:
            self.bar = Progress(TextColumn("[bold]optimizing"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                console=self.console, transient=True)
            self.task = self.bar.add_task("opt", total=max_iter)

    def __enter__(self) -> ProgressReporter:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def iteration(self, rec) -> bool:
        self.line(format_record(rec))
        if self.bar is not None:
            self.bar.update(self.task, completed=rec.iteration)
        return False
