"""The `seedbed` command: `seedbed new NAME`, `seedbed update`, `seedbed cp PART`.

Bad input is one line on stderr and exit status 2, with nothing written; a merge
that needs the user (conflicts) exits 1 and leaves the merge to finish.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedbed import __version__
from seedbed.core.errors import EXIT_USER_ERROR, SeedbedError
from seedbed.project.cp import copy_part, how_to_use, parts
from seedbed.project.new import new_project, read_answers
from seedbed.project.update import MergeConflict, update_project


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its usage errors in one line and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = OneLineParser(prog="seedbed", description=__doc__.split("\n\n")[0])
    top.add_argument("--version", action="version", version=f"seedbed {__version__}")
    commands = top.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    new = commands.add_parser("new", help="a new project in ./NAME, your package named NAME")
    new.add_argument("name", help="the package name: lowercase letters, digits, underscores")
    new.add_argument("directory", nargs="?", help="where to put it (default ./NAME)")
    new.add_argument(
        "--no-git",
        action="store_true",
        help="render only: no git repository, no commit (seedbed update needs the commit)",
    )
    update = commands.add_parser("update", help="merge the template's changes into a project")
    update.add_argument("directory", nargs="?", default=".", help="the project (default .)")
    cp = commands.add_parser("cp", help="copy a library part into your project, to own")
    cp.add_argument("part", nargs="?", help="a module (loop, optim, ...) or configs/<group>")
    cp.add_argument("--list", action="store_true", help="list what can be copied")
    cp.add_argument("--project", default=".", help="the project's root (default .)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "new":
            target = new_project(args.name, args.directory, git_commit=not args.no_git)
            committed = "" if args.no_git else ", committed to git"
            print(f"{target}: a new project, package {args.name}{committed}")
            print(f"next: cd {target} && make train && make test")
        elif args.command == "update":
            print(update_project(args.directory))
        elif args.list or args.part is None:
            print("\n".join(parts()))
        else:
            written = copy_part(args.part, args.project)
            package = read_answers(Path(args.project))["name"] if written else ""
            for path in written:
                print(f"copied {path}")
            print(how_to_use(args.part, package))
    except MergeConflict as conflict:
        print(f"seedbed: {conflict}", file=sys.stderr)
        return 1
    except SeedbedError as error:
        print(f"seedbed: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def cli() -> None:
    sys.exit(main())
