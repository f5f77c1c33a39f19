"""An identical re-run sends identical requests, so the cache answers all of it (issue 14 s6).

Auto-generated node names came from a process-wide counter that examples running on
several threads advance in any order, and the names reached the requests ("feedback from
object_counting17", "op: object_counting60 = ..."): a re-run in a fresh process missed the
cache on 1 call in 25 and replayed differently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .reliability_harness import (
    copy_counting,
    optimize_args,
    run_cli_subprocess,
    subprocess_env,
    world_server,
)


@pytest.mark.parametrize("optimizer", ["tgd", "trace"])
def test_an_identical_rerun_is_answered_entirely_from_the_cache(tmp_path: Path,
                                                                 optimizer: str) -> None:
    task = copy_counting(tmp_path / "task")
    env = subprocess_env(tmp_path)
    with world_server() as (server, _):
        calls = []
        for i in range(2):
            before = server.request_count
            # --out keeps the prompt file as it was, so the second run starts where the first did
            args = optimize_args(task, server.url, tmp_path / f"run{i}", "--out",
                                 tmp_path / f"out{i}.prompt", optimizer=optimizer,
                                 batch_size=4)
            r = run_cli_subprocess(args, env)
            assert r.code == 0, r
            calls.append(server.request_count - before)
    assert calls[0] > 10 and calls[1] == 0, calls
    assert (tmp_path / "out0.prompt").read_text() == (tmp_path / "out1.prompt").read_text()
