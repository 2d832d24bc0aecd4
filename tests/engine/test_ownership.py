"""Run ownership: a compare-and-set claim in the history, owners known by pid AND start time, live runs
never deleted, output folders never shared by two runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.data import tiny_text_config
from tests.fixtures.runs import make_run
from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.paths import database_path
from tunedesk.engine.store import RunStore, history
from tunedesk.engine.store.connection import owner_alive, process_start_time, this_process


@pytest.fixture
def store(home):
    s = RunStore(database_path(home))
    yield s
    s.close()


def _tunedesk(*args: str, home: Path) -> subprocess.Popen:
    env = dict(os.environ, TUNEDESK_HOME=str(home))
    return subprocess.Popen(
        [sys.executable, "-m", "tunedesk", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_this_process_is_its_own_owner_and_a_reused_pid_is_not():
    pid, started = this_process()
    assert started == pytest.approx(process_start_time(os.getpid()))
    assert owner_alive(pid, started)
    assert not owner_alive(pid, started - 3600)  # same pid, started an hour earlier: another process
    assert owner_alive(pid, None)  # rows from before start times were recorded: the pid alone decides
    assert not owner_alive(2**22 + 12345, None)


def test_a_run_whose_pid_now_names_another_process_is_marked_interrupted(store):
    rid = make_run(store, name="crashed", status="running")
    # the crashed trainer's pid was given to a live process (here: this one) that started later
    store.update_run(rid, pid=os.getpid(), owner_started=this_process()[1] - 600)
    assert not store.is_live(rid)
    assert store.mark_interrupted() == [rid]
    run = store.get_run(rid)
    assert run["status"] == "interrupted" and "unexpectedly" in run["error"]
    token = store.claim(rid)  # and it can be resumed
    assert store.get_run(rid)["owner_token"] == token


def test_a_live_run_keeps_running_and_cannot_be_claimed_twice(store):
    rid = make_run(store, name="live", status="stopped")
    token = store.claim(rid)
    assert store.get_run(rid)["status"] == "queued" and store.is_live(rid)
    assert store.mark_interrupted() == []
    with pytest.raises(TuneDeskError, match="already being trained by this TuneDesk") as err:
        store.claim(rid)
    assert "stop it there first" in err.value.hint
    done = make_run(store, name="done", status="completed")
    with pytest.raises(TuneDeskError, match="is completed, so there is nothing to resume"):
        store.claim(done)
    # a claim given back (preparing the resume failed) restores the run as it was
    store.release(rid, token, {"status": "stopped", "error": "stopped by the user", "error_hint": None})
    assert store.get_run(rid)["status"] == "stopped"
    assert not store.release(rid, "not-the-owner", {"status": "failed"})


def test_delete_of_a_live_run_is_refused_in_the_store_history_and_cli(store, home):
    rid = make_run(store, name="live", status="running", output_dir=str(home / "runs" / "run-live"))
    (home / "runs" / "run-live").mkdir(parents=True)
    with pytest.raises(TuneDeskError, match="training right now"):
        store.delete_run(rid)
    with pytest.raises(TuneDeskError, match="training right now"):
        history.delete_run(store, rid, home)
    # the CLI is another process: this test process is the live owner it sees
    proc = _tunedesk("runs", "delete", str(rid), "--yes", home=home)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: run") and "training right now" in lines[0]
    assert lines[1].startswith("hint: stop it first") and "Traceback" not in err
    assert store.get_run(rid)["status"] == "running" and (home / "runs" / "run-live").is_dir()
    store.set_status(rid, "stopped")
    assert history.delete_run(store, rid, home)["id"] == rid
    assert not (home / "runs" / "run-live").exists()


def test_a_reused_output_folder_is_refused_before_any_run_exists(home, tiny_bert_dir, text_csv, tmp_path):
    from tunedesk.engine.run.runner import check_output_dir, execute, prepare

    out = tmp_path / "my-model"
    config = tiny_text_config(tiny_bert_dir, text_csv, epochs=1)
    config.output_dir = str(out)
    prep = prepare(config)
    first = execute(config, prepared=prep)
    assert first.status == "completed"
    with pytest.raises(TuneDeskError, match=r"already holds another run's files \(run 1\)") as err:
        execute(config, prepared=prep)
    assert "choose a new or empty folder" in err.value.hint
    store = RunStore(database_path(home))
    try:
        assert [r["id"] for r in store.list_runs()] == [first.run_id]  # no bogus run
    finally:
        store.close()
    # a folder with only the user's own files is fine; one in the way is a file, or under one, is refused
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    check_output_dir(mine)
    with pytest.raises(TuneDeskError, match="is a file"):
        check_output_dir(mine / "notes.txt")
    with pytest.raises(TuneDeskError, match="notes.txt is a file, not a folder"):
        check_output_dir(mine / "notes.txt" / "out")


@pytest.mark.slow
def test_two_simultaneous_resumes_one_trains_the_other_exits_2(home, tiny_bert_dir, text_csv):
    from tunedesk.engine.run.events import Control
    from tunedesk.engine.run.runner import execute

    control = Control()

    def stopper(event) -> None:
        if event.kind == "StepLogged" and event.step >= 4:
            control.request_stop("test stop")

    stopped = execute(tiny_text_config(tiny_bert_dir, text_csv, epochs=2), listeners=[stopper], control=control)
    assert stopped.status == "stopped"
    procs = [_tunedesk("runs", "resume", str(stopped.run_id), home=home) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    _, out, err = next(r for r in results if r[0] == 2)
    lines = err.strip().splitlines()
    assert lines[-2].startswith("error: run") and "already being trained" in lines[-2], err
    assert lines[-1].startswith("hint: ") and "Traceback" not in err
    store = RunStore(database_path(home))
    try:
        run = store.get_run(stopped.run_id)
        steps = [r["step"] for r in store.step_metrics(stopped.run_id)]
        epochs = [e["epoch"] for e in store.epoch_metrics(stopped.run_id)]
    finally:
        store.close()
    assert run["status"] == "completed"
    assert epochs == [1, 2] and len(steps) == len(set(steps))  # every epoch once, no step twice
