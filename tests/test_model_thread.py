"""The model thread: one named thread that runs every LiteRT call of a process (a fresh process
per test, since the thread lives as long as its process)."""

import subprocess
import sys
import textwrap


def in_fresh_process(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_one_named_thread_runs_the_calls_and_its_hooks_see_it_once():
    out = in_fresh_process("""
        import threading
        from pathlib import Path
        from mcdask.runtime import model_thread as mt

        seen = []
        mt.on_start(seen.append)
        assert seen == []                                   # nothing starts before it is needed
        tids = {mt.run(threading.get_native_id) for _ in range(5)}
        assert tids == {mt.thread_id()} == set(seen), (tids, seen)
        (tid,) = tids
        assert tid != threading.get_native_id()
        assert Path(f"/proc/self/task/{tid}/comm").read_text().strip() == "mcdask-model"
        late = []
        mt.on_start(late.append)                            # a hook after the start runs at once
        assert late == [tid]
        try:
            mt.run(int, "not a number")
        except ValueError as e:
            print("raised:", e)
        print(mt.run(sum, [1, 2, 3]))
    """)
    assert out.splitlines() == ["raised: invalid literal for int() with base 10: 'not a number'", "6"]


def test_a_hook_that_fails_is_the_starters_error_and_a_later_call_starts_again():
    out = in_fresh_process("""
        from mcdask.runtime import model_thread as mt

        calls = []
        def hook(tid):
            calls.append(tid)
            if len(calls) == 1:
                raise PermissionError("no compute cgroup")
        mt.on_start(hook)
        try:
            mt.run(len, "abc")
        except PermissionError as e:
            print("start failed:", e)
        print(mt.run(len, "abc"), len(calls))
    """)
    assert out.splitlines() == ["start failed: no compute cgroup", "3 2"]
