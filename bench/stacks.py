#!/usr/bin/env python3
"""Summarise py-spy raw (collapsed) stacks: `bench/run.py --profile DIR --profile-format raw` writes them.

For each function: self samples (it was the innermost frame) and inclusive samples (it was anywhere on the stack,
counted once per sample), as a share of all samples. A task's steps start at its coroutine
(py-spy shows no event-loop frame under them). Reads like a flame graph's widths,
but sortable.

    python bench/stacks.py DIR/gateway-none-c16.txt [--top 40] [--grep gateway/]
"""

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: lines differ per call site; one row per function."""
    m = _FRAME.match(frame)
    if m is None:
        return frame
    path = m.group("file")
    for marker in ("/site-packages/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    path = re.sub(r"^wt/[^/]+/", "", path)
    return f"{m.group('func')} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--grep", default="", help="only rows whose function or file contains this")
    args = parser.parse_args()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in args.stacks.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} samples")
    print(f"{'self %':>7} {'incl %':>7}  function")
    rows = sorted(inclusive, key=lambda f: (-own[f], -inclusive[f]))
    shown = 0
    for frame in rows:
        if args.grep and args.grep not in frame:
            continue
        print(f"{100 * own[frame] / total:7.1f} {100 * inclusive[frame] / total:7.1f}  {frame}")
        shown += 1
        if shown >= args.top:
            break


if __name__ == "__main__":
    main()
