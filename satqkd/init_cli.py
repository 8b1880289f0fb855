"""`satqkd init DIR`: copy the example configs (missions, stations, scenarios, instrument
benches, a keyrate example, a broker configuration) into DIR/configs/, to edit and run from
anywhere."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

GROUP = "init"
EXIT_USAGE = 2


def register(sub: argparse._SubParsersAction) -> None:
    """Control: add `satqkd init DIR [--force]`."""
    parser = sub.add_parser(GROUP, help="copy the example configs into DIR/configs/")
    parser.add_argument("dir", metavar="DIR", help="working directory (created if missing)")
    parser.add_argument(
        "--force", action="store_true", help="overwrite files of an earlier copy in DIR/configs/"
    )


def copy_example_configs(target: Path, force: bool = False) -> list[Path]:
    """Control: copy the shipped example configs into `target`/configs; return the files
    written. ValueError (one line) if there are none to copy or a file would be overwritten
    without `force`."""
    from satqkd.config import example_configs_root

    source = example_configs_root()
    if source is None:
        raise ValueError("no example configs found in this installation (reinstall satqkd)")
    destination = target / "configs"
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    clashes = [destination / p.relative_to(source) for p in files]
    clashes = [p for p in clashes if p.exists()]
    if clashes and not force:
        raise ValueError(
            f"{clashes[0]} (and {len(clashes) - 1} more) already exist; give --force to overwrite"
            if len(clashes) > 1
            else f"{clashes[0]} already exists; give --force to overwrite"
        )
    written = []
    for path in files:
        copy = destination / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        written.append(copy)
    return written


def run(args: argparse.Namespace) -> int:
    """`satqkd init DIR`: copy the examples; print what to run next."""
    target = Path(args.dir)
    try:
        written = copy_example_configs(target, args.force)
    except ValueError as exc:
        print(f"satqkd: init: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"satqkd: init: {exc.filename or target}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    scenario = target / "configs" / "scenarios" / "jinan1-xinglong-clear.yaml"
    print(
        f"{len(written)} example files copied to {target / 'configs'}; try: satqkd sim pass "
        f"{scenario} --seed 7 --start-after-aos-s 190 --max-duration-s 60"
    )
    return 0
