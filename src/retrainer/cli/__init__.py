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


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
