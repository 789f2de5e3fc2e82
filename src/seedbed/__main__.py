"""`python -m seedbed new|update|cp ...`: the `seedbed` command (see seedbed.project)."""

from seedbed.project.cli import cli

if __name__ == "__main__":
    cli()
