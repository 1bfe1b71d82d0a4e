"""How ``triact stress`` shows itself: a live rich display on a terminal, plain lines
otherwise, and a summary table at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ._stress import StressOptions, StressReport, _Load

_SHOWN_VIOLATIONS = 3
_SHOWN_UNEXPECTED = 5


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class Display:
    """Progress on ``err``, summary on ``out``. ``live``: force the rich display on
    (True) or off (False); by default it is on when ``err`` is a terminal and rich is
    installed (the ``testing`` extra)."""

    def __init__(
        self, options: StressOptions, out: TextIO, err: TextIO, live: bool | None = None
    ) -> None:
        self.options = options
        self.out = out
        self.err = err
        if live is None:
            live = err.isatty() and _rich_available()
        self.interval = max(1.0, options.duration / 10)
        self._next_line = self.interval
        self._progress: Any = None
        self._task: Any = None
        if live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._console = Console(file=err, force_terminal=True)
            self._progress = Progress(
                TextColumn("[bold]triact stress"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self._console,
                transient=True,
            )
            self._task = self._progress.add_task("load", total=options.duration, stats="")
            self._progress.start()

    def progress(self, elapsed: float, load: _Load) -> None:
        ops, errors = load.done, load.errors
        rate = ops / elapsed if elapsed > 0 else 0.0
        stats = f"{ops:,} ops  {rate:,.0f} ops/s  {errors:,} errors"
        faults = sum(load.target.faults().values())
        if faults:
            stats += f"  {faults:,} faults"
        if self._progress is not None:
            self._progress.update(self._task, completed=elapsed, stats=stats)
        elif elapsed >= self._next_line:
            self._next_line += self.interval
            print(
                f"triact stress: {elapsed:.1f}/{self.options.duration:g} s  {stats}",
                file=self.err,
                flush=True,
            )

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def error(self, exc: BaseException) -> None:
        print(f"triact stress: error: {exc}", file=self.err, flush=True)

    def summary(self, report: StressReport) -> None:
        o = report.options
        title = (
            f"triact stress: {report.description}; {o.sessions} sessions, {o.clients} "
            f"clients, {report.elapsed:.1f} s, faults {o.faults:g}, seed {report.seed}"
        )
        rows = report.rows()
        if self._rich_out():
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title, show_header=False)
            table.add_column(style="bold")
            table.add_column()
            for name, value in rows:
                failed = name in ("errors by kind", "invariant violations")
                style = "red" if failed and value not in ("0", "none") else ""
                table.add_row(name, value, style=style)
            Console(file=self.out).print(table)
        else:
            width = max(len(name) for name, _ in rows)
            print(title, file=self.out)
            for name, value in rows:
                print(f"  {name.ljust(width)}  {value}", file=self.out)
        for violation in report.violations[:_SHOWN_VIOLATIONS]:
            print(f"\n{violation}", file=self.out)
        if len(report.violations) > _SHOWN_VIOLATIONS:
            more = len(report.violations) - _SHOWN_VIOLATIONS
            print(f"\n... and {more} more violations", file=self.out)
        if report.unexpected:
            print("\nunexpected outcomes:", file=self.out)
            for op in report.unexpected[:_SHOWN_UNEXPECTED]:
                print(f"  {op.describe()}", file=self.out)
        self.out.flush()

    def _rich_out(self) -> bool:
        return self.out.isatty() and _rich_available()
