"""The build cache shared by stacks that start at once (make test's workers, two terminals): each
artifact is built once, and no stack sees it half built."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from local_stack.artifacts import cached


def test_stacks_starting_at_once_build_an_artifact_once_and_both_get_it_whole(
    tmp_path: Path,
) -> None:
    builds: list[str] = []

    def slow_build(out: Path, log_file: Path) -> None:
        builds.append(out.name)
        (out / "part-1").write_text("1")
        time.sleep(0.5)  # the other stack arrives while this one is half done
        (out / "part-2").write_text("2")

    start = threading.Barrier(2)
    seen: list[set[str]] = []

    def start_stack() -> None:
        start.wait()
        target = cached(tmp_path, "artifact", slow_build)
        seen.append({path.name for path in target.iterdir()})

    stacks = [threading.Thread(target=start_stack) for _ in range(2)]
    for thread in stacks:
        thread.start()
    for thread in stacks:
        thread.join(timeout=30)

    assert builds == [".artifact.partial"]
    assert seen == [{"part-1", "part-2", ".complete"}] * 2
