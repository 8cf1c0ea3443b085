"""`python -m retrainer.cli`: the same command as `retrainer`."""

from retrainer.cli import main

main()
