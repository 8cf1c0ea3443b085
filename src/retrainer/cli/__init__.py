"""The `retrainer` command: run the platform, validate specs and data, drive the DAGs.

One typer sub-app per theme (platform, models, cards, runs, rollout, tools, demo), merged into one flat
command line: `retrainer up`, `retrainer trigger MODEL`, ...
"""

from __future__ import annotations

import sys

import typer

from retrainer.cli import cards, demo, models, platform, rollout, runs, tools

app = typer.Typer(help=__doc__.splitlines()[0], no_args_is_help=True, add_completion=False)
for sub in (platform, models, cards, runs, rollout, tools, demo):
    app.add_typer(sub.app)


UNREACHABLE = ("mlflow", "httpx", "httpcore", "requests", "urllib3")


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # MLflow or a service failing under a command that did not expect it: what failed, in a
        # line, not a traceback
        library = type(exc).__module__.split(".")[0]
        if library not in UNREACHABLE:
            raise
        what = "MLflow" if library in ("mlflow", "requests", "urllib3") else "a service"
        print(
            f"error: {what} failed under this command ({type(exc).__name__}: "
            f"{str(exc)[:300]}); is the platform up? `retrainer status` tells",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
