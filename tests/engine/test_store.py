"""Run history store: migrations, pragmas, CRUD, filters, cascades, interrupted runs."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.paths import database_path
from tunedesk.engine.store import MIGRATIONS, RunStore, apply_migrations, open_database, pid_alive


def make_run(store: RunStore, **overrides) -> int:
    kwargs = dict(
        config={"task": "text_classification", "hparams": {"learning_rate": 2e-5}},
        name="tickets",
        task="text_classification",
        model_name="all-MiniLM-L6-v2",
        model_path="/models/minilm",
        model_hash="abc123",
        dataset_name="support-tickets",
        dataset_hash="d41d8",
    )
    kwargs.update(overrides)
    return store.create_run(**kwargs)


@pytest.fixture
def store(tmp_path: Path):
    s = RunStore(database_path(tmp_path))
    yield s
    s.close()


# -- schema ---------------------------------------------------------------------------------


def test_new_database_is_migrated_once_and_recorded(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    with RunStore(path) as store:
        rows = list(store.db["_migrations"].rows)
        assert [r["number"] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
        assert rows[0]["name"] == "m001_run_history" and rows[0]["applied_at"]
        assert store.schema_version == len(MIGRATIONS)
        tables = set(store.db.table_names())
        assert {"runs", "step_metrics", "epoch_metrics", "checkpoints", "run_logs", "samples", "run_tags"} <= tables
        assert {"datasets", "dataset_items", "dataset_versions"} <= tables  # migration 2


def test_reopen_is_idempotent(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    with RunStore(path) as store:
        run_id = make_run(store)
        first = list(store.db["_migrations"].rows)
    for _ in range(3):
        with RunStore(path) as store:
            assert list(store.db["_migrations"].rows) == first
            assert store.get_run(run_id)["name"] == "tickets"
            assert apply_migrations(store.db, path) == []


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def opener() -> None:
        try:
            barrier.wait()
            with RunStore(path) as store:
                make_run(store)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with RunStore(path) as store:
        assert [r["number"] for r in store.db["_migrations"].rows] == list(range(1, len(MIGRATIONS) + 1))
        assert store.count_runs() == 8


def test_later_migrations_apply_in_order_on_an_existing_file(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    RunStore(path).close()
    calls = []

    def m002_example(db) -> None:
        calls.append(2)
        db.execute("CREATE TABLE example (id INTEGER PRIMARY KEY)")

    db = open_database(path)
    try:
        n = len(MIGRATIONS) + 1
        assert apply_migrations(db, path, [*MIGRATIONS, m002_example]) == [n]
        assert apply_migrations(db, path, [*MIGRATIONS, m002_example]) == []
        assert calls == [2] and db["example"].exists()
        assert db["_migrations"].get(n)["name"] == "m002_example"
    finally:
        db.close()


def test_failing_migration_rolls_back_and_is_not_recorded(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    RunStore(path).close()

    def m002_broken(db) -> None:
        db.execute("CREATE TABLE half_done (id INTEGER)")
        raise RuntimeError("boom")

    db = open_database(path)
    try:
        with pytest.raises(RuntimeError):
            apply_migrations(db, path, [*MIGRATIONS, m002_broken])
        assert not db["half_done"].exists()
        assert [r["number"] for r in db["_migrations"].rows] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        db.close()


def test_database_from_newer_tunedesk_is_refused_clearly(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    RunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations (number, name, applied_at) VALUES (99, 'm099_future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(TuneDeskError) as info:
        RunStore(path)
    assert "newer TuneDesk" in info.value.message and "99" in info.value.message
    assert "update TuneDesk" in info.value.hint


def test_not_a_database_gives_a_tunedesk_error(tmp_path: Path) -> None:
    path = tmp_path / "tunedesk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TuneDeskError) as info:
        RunStore(path)
    assert "is damaged" in info.value.message and "move the file away" in info.value.hint


def test_pragmas_wal_synchronous_foreign_keys_busy_timeout(store: RunStore) -> None:
    q = lambda sql: store.db.execute(sql).fetchone()[0]  # noqa: E731
    assert q("PRAGMA journal_mode") == "wal"
    assert q("PRAGMA synchronous") == 1  # NORMAL
    assert q("PRAGMA foreign_keys") == 1
    assert q("PRAGMA busy_timeout") >= 1000


def test_indices_serve_the_common_queries(store: RunStore) -> None:
    def plan(sql: str, args=()) -> str:
        return " ".join(r[3] for r in store.db.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall())

    assert "idx_runs_created" in plan("SELECT id FROM runs ORDER BY created_at DESC LIMIT 200")
    assert "idx_runs_started" in plan("SELECT id FROM runs ORDER BY started_at DESC LIMIT 200")
    assert "idx_runs_status" in plan("SELECT id FROM runs WHERE status = ? ORDER BY created_at DESC", ["failed"])
    assert "idx_runs_model" in plan("SELECT id FROM runs WHERE model_name = ?", ["m"])
    assert "idx_runs_dataset" in plan("SELECT id FROM runs WHERE dataset_name = ?", ["d"])
    assert "idx_run_tags_tag" in plan("SELECT run_id FROM run_tags WHERE tag = ?", ["x"])
    assert "PRIMARY KEY" in plan("SELECT * FROM step_metrics WHERE run_id = ? ORDER BY step", [1])


def test_store_is_bound_to_its_thread(store: RunStore, tmp_path: Path) -> None:
    errors: list[BaseException] = []
    ids: list[int] = []

    def worker() -> None:
        try:
            store.list_runs()
        except RuntimeError as exc:
            errors.append(exc)
        with RunStore(database_path(tmp_path)) as own:  # the documented way: one store per thread
            ids.append(make_run(own))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors and "open another RunStore" in str(errors[0])
    assert store.get_run(ids[0])["status"] == "queued"


# -- runs -----------------------------------------------------------------------------------


def test_create_and_get_run_decodes_json(store: RunStore) -> None:
    run_id = make_run(
        store,
        trainable_names=["classifier.weight", "classifier.bias"],
        trainable_params=1538,
        total_params=22_700_000,
        freeze_summary="12% - last 2 blocks + head",
        dataset_version="v3",
        output_dir="/runs/1",
        device="cuda:0",
        precision="bf16",
    )
    run = store.get_run(run_id)
    assert run["status"] == "queued" and run["created_at"] and run["pid"]
    assert run["config"] == {"task": "text_classification", "hparams": {"learning_rate": 2e-5}}
    assert run["trainable_names"] == ["classifier.weight", "classifier.bias"]
    assert run["final_metrics"] == {} and run["tags"] == []
    assert run["freeze_summary"] == "12% - last 2 blocks + head" and run["dataset_version"] == "v3"
    assert "config_json" not in run and "tags_json" not in run


def test_missing_run_raises_tunedesk_error(store: RunStore) -> None:
    with pytest.raises(TuneDeskError) as info:
        store.get_run(42)
    assert info.value.message == "run 42 not found" and info.value.hint == "`tunedesk runs` lists the runs"
    for call in (
        lambda: store.update_run(42, name="x"),
        lambda: store.set_status(42, "running"),
        lambda: store.set_tags(42, ["a"]),
        lambda: store.delete_run(42),
        lambda: store.rename(42, "x"),
    ):
        with pytest.raises(TuneDeskError, match="run 42 not found"):
            call()


def test_update_run_json_fields_and_validation(store: RunStore) -> None:
    run_id = make_run(store)
    store.update_run(run_id, final_metrics={"val_accuracy": 0.91}, best_metric=0.91, best_metric_name="val_accuracy")
    run = store.get_run(run_id)
    assert run["final_metrics"] == {"val_accuracy": 0.91} and run["best_metric"] == 0.91
    with pytest.raises(ValueError, match="no column"):
        store.update_run(run_id, nonsense=1)
    with pytest.raises(ValueError, match="status"):
        store.update_run(run_id, status="exploded")


def test_set_status_stamps_times(store: RunStore) -> None:
    run_id = make_run(store)
    store.set_status(run_id, "running")
    run = store.get_run(run_id)
    assert run["status"] == "running" and run["started_at"] and run["finished_at"] is None
    store.set_status(run_id, "failed", error="CUDA out of memory", error_hint="lower the batch size")
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["finished_at"] >= run["started_at"]
    assert run["duration_s"] is not None and run["duration_s"] >= 0
    assert (run["error"], run["error_hint"]) == ("CUDA out of memory", "lower the batch size")


def test_rename_notes_tags(store: RunStore) -> None:
    run_id = make_run(store)
    store.rename(run_id, "baseline")
    store.set_notes(run_id, "lr too high?")
    store.set_tags(run_id, ["keep", " paper ", "keep", ""])
    run = store.get_run(run_id)
    assert (run["name"], run["notes"], run["tags"]) == ("baseline", "lr too high?", ["keep", "paper"])
    store.update_run(run_id, tags=["other"])
    assert store.get_run(run_id)["tags"] == ["other"]
    assert store.list_runs(tag="keep") == []
    assert [r["id"] for r in store.list_runs(tag="other")] == [run_id]


def test_list_runs_filters_search_order_paging(store: RunStore) -> None:
    a = make_run(store, name="alpha tickets", model_name="bert-base", dataset_name="tickets")
    b = make_run(store, name="beta photos", model_name="resnet18", dataset_name="flowers", task="image_classification")
    c = make_run(store, name="gamma 100%_done", model_name="bert-base", dataset_name="reviews")
    store.set_status(b, "running")
    store.set_status(b, "completed")
    store.set_status(c, "failed", error="boom")
    store.set_tags(a, ["baseline"])
    store.set_notes(c, "interesting failure")

    assert [r["id"] for r in store.list_runs()] == [c, b, a]  # created_at desc, id breaks ties
    assert [r["id"] for r in store.list_runs(order="created_at asc")] == [a, b, c]
    assert [r["id"] for r in store.list_runs(order="name asc")] == [a, b, c]
    assert [r["id"] for r in store.list_runs(status="completed")] == [b]
    assert [r["id"] for r in store.list_runs(status=["failed", "queued"])] == [c, a]
    assert [r["id"] for r in store.list_runs(model="bert-base")] == [c, a]
    assert [r["id"] for r in store.list_runs(dataset="flowers")] == [b]
    assert [r["id"] for r in store.list_runs(tag="baseline")] == [a]
    assert [r["id"] for r in store.list_runs(search="PHOTOS")] == [b]  # case-insensitive
    assert [r["id"] for r in store.list_runs(search="resnet")] == [b]
    assert [r["id"] for r in store.list_runs(search="interesting")] == [c]  # notes
    assert [r["id"] for r in store.list_runs(search="baseline")] == [a]  # tags
    assert [r["id"] for r in store.list_runs(search="100%_")] == [c]  # wildcards are literal
    assert store.list_runs(search="0%x") == []
    assert [r["id"] for r in store.list_runs(search=f"#{b}")] == [b]
    assert [r["id"] for r in store.list_runs(model="bert-base", status="failed")] == [c]
    assert [r["id"] for r in store.list_runs(limit=2)] == [c, b]
    assert [r["id"] for r in store.list_runs(limit=2, offset=2)] == [a]
    assert [r["id"] for r in store.list_runs(offset=1)] == [b, a]
    assert store.count_runs() == 3 and store.count_runs(model="bert-base") == 2
    assert store.count_runs(search="tickets", status="queued") == 1

    light = store.list_runs()[0]
    assert "config_json" not in light and "trainable_names_json" not in light and "notes" not in light
    assert light["tags"] == [] and light["status"] == "failed" and light["error"] == "boom"
    with pytest.raises(ValueError):
        store.list_runs(order="name; DROP TABLE runs")
    with pytest.raises(ValueError):
        store.list_runs(status="bogus")


def test_delete_run_cascades_and_returns_the_row(store: RunStore) -> None:
    run_id = make_run(store, output_dir="/runs/7")
    keep = make_run(store)
    child = make_run(store, parent_run_id=run_id)
    for rid in (run_id, keep):
        store.add_step_metrics(rid, [{"step": s, "loss": 1.0} for s in range(5)])
        store.add_epoch_metrics(rid, 1, 5, {"val_loss": 0.5}, [[1, 0], [0, 1]], ["a", "b"], {}, True)
        store.set_checkpoint(rid, "best", "/c/best", 5, 1)
        store.add_log(rid, "info", "hello")
        store.add_sample(rid, 5, 1, "Hi", "there")
        store.set_tags(rid, ["x"])
    store.set_status(run_id, "completed")  # a queued run of a live process is refused (see test_ownership)
    row = store.delete_run(run_id)
    assert row["id"] == run_id and row["output_dir"] == "/runs/7" and row["tags"] == ["x"]
    with pytest.raises(TuneDeskError):
        store.get_run(run_id)
    for table in ("step_metrics", "epoch_metrics", "checkpoints", "run_logs", "samples", "run_tags"):
        counts = dict(store.db.execute(f"SELECT run_id, COUNT(*) FROM {table} GROUP BY run_id").fetchall())
        assert run_id not in counts and counts[keep] >= 1, table
    assert store.get_run(child)["parent_run_id"] is None  # resumed runs survive their parent


def test_run_ids_are_never_reused(store: RunStore) -> None:
    first = make_run(store)
    store.set_status(first, "failed")
    store.delete_run(first)
    assert make_run(store) > first


# -- metrics and children -------------------------------------------------------------------


def test_step_metrics_roundtrip_and_downsampling(store: RunStore) -> None:
    run_id = make_run(store)
    rows = [
        {"step": s, "epoch": s // 10, "loss": 1 / (s + 1), "learning_rate": 1e-4, "samples_per_second": 50.0,
         "elapsed": s * 0.1, "gpu_memory_mb": 512.0, "kind": "StepLogged", "run_id": 999}
        for s in range(1, 101)
    ]  # fmt: skip
    store.add_step_metrics(run_id, rows)
    got = store.step_metrics(run_id)
    assert len(got) == 100 and got[0]["step"] == 1 and got[-1]["step"] == 100
    assert got[4]["loss"] == pytest.approx(1 / 6) and got[4]["epoch"] == 0 and got[4]["gpu_peak_memory_mb"] is None
    every = [r["step"] for r in store.step_metrics(run_id, every=10)]
    assert every == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100]  # last point always kept
    assert len(store.step_metrics(run_id, max_points=20)) <= 21
    assert [r["step"] for r in store.step_metrics(run_id, since_step=97)] == [98, 99, 100]
    store.add_step_metrics(run_id, [{"step": 100, "loss": 0.0}])  # repeated step replaces
    assert store.step_metrics(run_id)[-1]["loss"] == 0.0 and len(store.step_metrics(run_id)) == 100
    assert store.step_metrics(run_id + 1) == []


def test_step_metrics_downsampling_of_irregular_and_spaced_steps(store: RunStore) -> None:
    spaced = make_run(store)
    store.add_step_metrics(spaced, [{"step": s, "loss": 1.0} for s in range(10, 10_001, 10)])  # logged every 10
    got = [r["step"] for r in store.step_metrics(spaced, every=100)]
    assert got == list(range(10, 10_001, 1000)) + [10_000]
    assert len(store.step_metrics(spaced, max_points=50)) in (50, 51)

    irregular = make_run(store)
    steps = [1] + list(range(10, 1001, 10))  # a first step, then every 10: step arithmetic misses
    store.add_step_metrics(irregular, [{"step": s} for s in steps])
    assert [r["step"] for r in store.step_metrics(irregular, every=10)] == steps[::10]
    assert store.step_metrics(irregular, every=10)[-1]["step"] == 1000


def test_epoch_metrics_checkpoints_logs_samples(store: RunStore) -> None:
    run_id = make_run(store)
    store.add_epoch_metrics(run_id, 1, 10, {"val_accuracy": 0.5}, [[3, 1], [2, 4]], ["neg", "pos"],
                            {"neg": {"f1": 0.6}, "pos": {"f1": 0.7}}, False)  # fmt: skip
    store.add_epoch_metrics(run_id, 2, 20, {"val_accuracy": 0.8}, [], [], {}, True)
    epochs = store.epoch_metrics(run_id)
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[1]["is_best"] is True
    assert epochs[0]["confusion"] == [[3, 1], [2, 4]] and epochs[0]["label_names"] == ["neg", "pos"]
    assert epochs[0]["per_class"]["pos"] == {"f1": 0.7} and epochs[0]["is_best"] is False

    store.set_checkpoint(run_id, "last", "/ck/last-10", 10, 1)
    store.set_checkpoint(run_id, "last", "/ck/last-20", 20, 2)  # upsert: one row per kind
    store.set_checkpoint(run_id, "best", "/ck/best", 20, 2)
    cks = store.checkpoints(run_id)
    assert set(cks) == {"best", "last"} and cks["last"]["path"] == "/ck/last-20" and cks["last"]["step"] == 20
    assert store.db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] == 2
    with pytest.raises(ValueError):
        store.set_checkpoint(run_id, "middle", "/x", 1, 1)

    store.add_log(run_id, "info", "started")
    store.add_log(run_id, "warning", "loss is noisy")
    logs = store.logs(run_id)
    assert [(l["level"], l["message"]) for l in logs] == [("info", "started"), ("warning", "loss is noisy")]
    assert [l["message"] for l in store.logs(run_id, since_id=logs[0]["id"])] == ["loss is noisy"]

    store.add_sample(run_id, 20, 2, "Once upon", "a time")
    assert [(s["prompt"], s["text"], s["step"]) for s in store.samples(run_id)] == [("Once upon", "a time", 20)]


def test_children_of_a_missing_run_are_refused(store: RunStore) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add_step_metrics(12345, [{"step": 1, "loss": 1.0}])


def test_resume_support_truncates_and_requeues(store: RunStore) -> None:
    run_id = make_run(store)
    store.add_step_metrics(run_id, [{"step": s, "loss": 1.0} for s in range(1, 31)])
    for epoch, step in ((1, 10), (2, 20), (3, 30)):
        store.add_epoch_metrics(run_id, epoch, step, {"val_loss": 1.0 / epoch}, [], [], {}, False)
    store.add_sample(run_id, 30, 3, "p", "t")
    store.add_log(run_id, "info", "kept")
    store.set_checkpoint(run_id, "last", "/ck/last", 20, 2)
    store.set_status(run_id, "running")
    store.update_run(run_id, pid=_dead_pid())
    store.set_status(run_id, "stopped", error="stopped by the user")

    store.truncate_metrics_after(run_id, 20)
    assert store.step_metrics(run_id)[-1]["step"] == 20 and len(store.step_metrics(run_id)) == 20
    assert [e["epoch"] for e in store.epoch_metrics(run_id)] == [1, 2]
    assert store.samples(run_id) == [] and len(store.logs(run_id)) == 1 and "last" in store.checkpoints(run_id)

    started = store.get_run(run_id)["started_at"]
    store.set_status(run_id, "queued")
    run = store.get_run(run_id)
    assert run["status"] == "queued" and run["finished_at"] is None and run["error"] is None
    assert run["pid"] == __import__("os").getpid() and run["started_at"] == started
    assert store.mark_interrupted() == []  # owned by a live process now
    with pytest.raises(TuneDeskError):
        store.truncate_metrics_after(999, 1)


# -- interrupted runs -----------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_mark_interrupted_uses_the_pid(store: RunStore) -> None:
    dead = _dead_pid()
    assert not pid_alive(dead) and pid_alive(__import__("os").getpid())
    gone_running = make_run(store)
    store.update_run(gone_running, status="running", pid=dead, started_at="2025-01-01T00:00:00.000+00:00")
    gone_queued = make_run(store)
    store.update_run(gone_queued, pid=dead)
    alive = make_run(store)
    store.set_status(alive, "running")  # this process: alive
    done = make_run(store)
    store.update_run(done, status="completed", pid=dead)

    store.add_step_metrics(gone_running, [{"step": 1, "elapsed": 5.0}, {"step": 2, "elapsed": 90.5}])
    assert sorted(store.mark_interrupted()) == sorted([gone_running, gone_queued])
    run = store.get_run(gone_running)
    assert run["status"] == "interrupted" and run["duration_s"] == 90.5  # ended at its last step
    assert run["finished_at"] == "2025-01-01T00:01:30.500+00:00"
    assert store.get_run(gone_queued)["finished_at"] and store.get_run(gone_queued)["duration_s"] is None
    assert run["error"] and run["error_hint"]
    assert store.get_run(alive)["status"] == "running"
    assert store.get_run(done)["status"] == "completed"
    assert store.mark_interrupted() == []  # nothing left

    assert store.mark_interrupted(all_unfinished=True) == [alive]  # app start: nothing else trains
    assert store.get_run(alive)["status"] == "interrupted"
