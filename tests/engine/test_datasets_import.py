"""Importing into stored data sets: every source kind, progress and cancel, and each bad input."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from tunedesk.engine.datasets import (
    CancelToken,
    DatasetStore,
    ImportCancelled,
    ImportSpec,
    preview_table,
    run_import,
)
from tunedesk.engine.datasets import (
    flags as F,
)
from tunedesk.engine.errors import DataError
from tunedesk.engine.paths import database_path


@pytest.fixture
def store(tmp_path):
    s = DatasetStore(database_path(tmp_path / "home"))
    yield s
    s.close()


def write_csv(path: Path, rows, header=("text", "label"), encoding="utf-8", delimiter=","):
    with path.open("w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh, delimiter=delimiter)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def texts(store, ds):
    return [(it.text, it.label) for it in store.iter_items(ds)]


def test_text_csv_import_keeps_rows_order_classes_and_reports(store, text_csv):
    seen = []
    result = run_import(store, ImportSpec("text_table", str(text_csv)), progress=lambda *a: seen.append(a))
    assert result.items == 96 and result.kind == "text"
    info = store.get_dataset(result.dataset_id)
    assert info.status == "ready" and info.item_count == 96 and info.name == "tickets"
    assert store.classes(result.dataset_id) == ["account", "billing", "shipping", "technical"]
    rows = list(csv.reader(text_csv.open(encoding="utf-8")))[1:]
    assert texts(store, result.dataset_id) == [tuple(r) for r in rows]
    assert seen and seen[-1][2].startswith("looking for duplicates")
    assert [d.id for d in store.list_datasets()] == [result.dataset_id]


def test_quoted_newlines_bom_and_other_columns(store, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes('\ufeffid,Text,Label\n1,"two\nlines",a\n2,plain,b\n'.encode())
    result = run_import(store, ImportSpec("text_table", str(path), text_column="text", label_column="label"))
    items = list(store.iter_items(result.dataset_id))
    assert [(i.text, i.label, i.source_line) for i in items] == [("two\nlines", "a", 2), ("plain", "b", 4)]


def test_cp1252_is_detected_and_tsv_and_jsonl_work(store, tmp_path):
    cp = write_csv(tmp_path / "excel.csv", [["café crème", "food"], ["naïve résumé", "jobs"]], encoding="cp1252")
    r1 = run_import(store, ImportSpec("text_table", str(cp)))
    assert texts(store, r1.dataset_id)[0] == ("café crème", "food")
    assert r1.report.encoding == "cp1252"
    tsv = write_csv(tmp_path / "t.tsv", [["a, with comma", "x"], ["b", "y"]], delimiter="\t")
    assert texts(store, run_import(store, ImportSpec("text_table", str(tsv))).dataset_id)[0] == ("a, with comma", "x")
    jl = tmp_path / "t.jsonl"
    jl.write_text(
        '{"sentence": "hi", "intent": "greet"}\nnot json\n{"sentence": "bye", "intent": 7}\n', encoding="utf-8"
    )
    r3 = run_import(store, ImportSpec("text_table", str(jl), text_column="sentence", label_column="intent"))
    assert texts(store, r3.dataset_id) == [("hi", "greet"), ("bye", "7")]
    assert r3.report.skipped == 1


def test_mixed_encodings_forced_utf8_give_a_clear_error_and_store_nothing(store, tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes("text,label\nfiné,a\n".encode() + "caf\xe9,b\n".encode("cp1252"))
    with pytest.raises(DataError) as err:
        run_import(store, ImportSpec("text_table", str(path), encoding="utf-8"))
    assert "cannot decode mixed.csv as utf-8" in err.value.message and "line 3" in err.value.message
    assert "cp1252" in err.value.hint
    assert store.count_items(1) == 0 and store.list_datasets() == []
    # detected: not confident, the user is asked in the preview
    preview = preview_table(path)
    assert preview.encoding != "utf-8" and not preview.encoding_confident and "utf-8" in preview.encoding_choices


def test_blank_labels_are_imported_unlabelled_and_reported(store, tmp_path):
    path = write_csv(tmp_path / "b.csv", [["one", "a"], ["two", "  "], ["", "b"]])
    result = run_import(store, ImportSpec("text_table", str(path)))
    items = list(store.iter_items(result.dataset_id))
    assert [i.label for i in items] == ["a", "", "b"]
    assert items[1].flags & F.UNLABELLED and items[2].flags & F.EMPTY_TEXT
    assert "blank label" in result.report.summary() and "empty text" in result.report.summary()


@pytest.mark.parametrize(
    "content, message, hint",
    [
        ("text,label\n", "has a header but no data rows", "below the header"),
        ("", "is empty", "header row"),
        ("body,category\nhello,a\n", "has no column for text_column 'text' and label_column 'label'", "'body'"),
        ("text,label\nhello, \nbye,\n", "is blank on every row", "column that holds the class names"),
        ('text,label\n"never closed,a\n', "possible unbalanced quote", None),
    ],
)
def test_bad_tables_raise_data_errors_and_keep_saved_data(store, tmp_path, text_csv, content, message, hint):
    kept = run_import(store, ImportSpec("text_table", str(text_csv)))
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    if hint is None:  # an unbalanced quote swallows the file: imported as one row, with a warning
        result = run_import(store, ImportSpec("text_table", str(path), label_column=""))
        assert result.items == 1
    else:
        with pytest.raises(DataError) as err:
            run_import(store, ImportSpec("text_table", str(path)))
        assert message in err.value.message and hint in err.value.hint
    assert store.get_dataset(kept.dataset_id).item_count == 96 and store.count_items(kept.dataset_id) == 96
    assert store.conn.execute("SELECT COUNT(*) FROM datasets WHERE status != 'ready'").fetchone()[0] == 0


def test_unsupported_files_and_folders(store, tmp_path):
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported file type") as err:
        run_import(store, ImportSpec("text_table", str(tmp_path / "data.xlsx")))
    assert "CSV" in err.value.hint
    with pytest.raises(DataError, match="not found"):
        run_import(store, ImportSpec("text_table", str(tmp_path / "nope.csv")))
    with pytest.raises(DataError, match="is a folder"):
        run_import(store, ImportSpec("text_table", str(tmp_path)))


def test_cancel_removes_the_half_import_and_nothing_else(store, tmp_path, text_csv, monkeypatch):
    from tunedesk.engine.datasets import importers

    monkeypatch.setattr(importers, "PROGRESS_EVERY_S", 0.0)  # every row reports: a fast machine cancels too
    kept = run_import(store, ImportSpec("text_table", str(text_csv)))
    path = write_csv(tmp_path / "many.csv", [[f"text {i}", "ab"[i % 2]] for i in range(12_000)])
    token = CancelToken()

    def progress(done, total, message):
        if done > 3000:
            token.cancel()

    with pytest.raises(ImportCancelled) as err:
        run_import(store, ImportSpec("text_table", str(path)), progress=progress, cancel=token)
    assert "nothing was saved" in err.value.hint
    assert [d.id for d in store.list_datasets()] == [kept.dataset_id]
    assert store.conn.execute("SELECT COUNT(*) FROM dataset_items").fetchone()[0] == 96


def test_interrupted_import_of_a_dead_process_is_cleaned_up(store, text_csv):
    ds = store.create_dataset("half", "text", status="importing")
    store.conn.execute("UPDATE datasets SET pid = 999999999 WHERE id = ?", (ds,))
    store.insert_items(ds, [(1, "a", "", 0, "h", "n", None, 1, None, None, None, None, "x")])
    assert store.list_datasets() == []
    assert store.cleanup_interrupted_imports() == [ds]
    assert store.conn.execute("SELECT COUNT(*) FROM dataset_items").fetchone()[0] == 0


def test_big_file_is_streamed(store, tmp_path):
    """A large table goes in batches: memory does not grow with the file (only a few hundred bytes per
    item for the duplicate search), so a file of several GB imports without filling memory."""
    import tracemalloc

    path = tmp_path / "big.csv"
    body = "a long support ticket that goes on and on " * 360
    with path.open("w", encoding="utf-8") as fh:
        fh.write("text,label\n")
        for i in range(600):
            fh.write(f"{body}{i},label{i % 3}\n")
    size = path.stat().st_size
    tracemalloc.start()
    result = run_import(store, ImportSpec("text_table", str(path)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.items == 600 and size > 9e6
    assert peak < size / 2, (peak, size)


def test_preview_guesses_columns(tmp_path):
    path = write_csv(
        tmp_path / "p.csv",
        [["1", "I want a refund", "billing"], ["2", "app crashes", "tech"]],
        header=("id", "message", "category"),
    )
    p = preview_table(path)
    assert p.columns == ["id", "message", "category"] and p.text_column == "message" and p.label_column == "category"
    assert p.encoding == "utf-8" and p.encoding_confident and p.rows[0] == ["1", "I want a refund", "billing"]


# ---- images ----------------------------------------------------------------------------------


def test_image_folder_import_flags_bad_files_instead_of_dropping_them(store, image_folder):
    from PIL import Image

    (image_folder / "red" / "broken.png").write_bytes(b"not an image at all")
    good = (image_folder / "green" / "green_0.png").read_bytes()
    (image_folder / "green" / "cut.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (6, 6), (30, 30, 200)).save(image_folder / "blue" / "tiny.png")
    result = run_import(store, ImportSpec("image_folder", str(image_folder)))
    assert result.kind == "image" and result.items == 27
    assert store.classes(result.dataset_id) == ["blue", "green", "red"]
    by_name = {Path(i.path).name: i for i in store.iter_items(result.dataset_id)}
    assert by_name["broken.png"].flags & F.UNREADABLE_IMAGE
    assert by_name["cut.png"].flags & F.TRUNCATED_IMAGE
    assert by_name["tiny.png"].flags & F.TINY_IMAGE and by_name["tiny.png"].width == 6
    ok = by_name["red_0.png"]
    assert ok.flags & F.FILE_FLAGS == 0 and ok.width == 40 and len(ok.near_hash) == 64 + 96 and ok.content_hash
    assert os.path.isabs(ok.path)
    assert result.report.warnings == 3
    assert (result.report.rows_read, result.report.rows_kept) == (27, 27)  # each image counted once (was 54)


def test_image_folder_bad_layouts(store, tmp_path, image_folder):
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "cats" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images found") as err:
        run_import(store, ImportSpec("image_folder", str(empty)))
    assert "sub-folder per class" in err.value.hint
    with pytest.raises(DataError, match="not found"):
        run_import(store, ImportSpec("image_folder", str(tmp_path / "missing")))
    assert store.list_datasets() == []


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_symlink_loops_do_not_hang_the_import(store, image_folder):
    os.symlink(image_folder, image_folder / "red" / "loop")  # a folder linking to its ancestor
    os.symlink(image_folder / "loop2", image_folder / "loop2")  # a link to itself
    os.symlink("self.png", image_folder / "blue" / "self.png")  # an image link to itself
    result = run_import(store, ImportSpec("image_folder", str(image_folder)))
    by_name = {Path(i.path).name: i for i in store.iter_items(result.dataset_id)}
    assert result.items == 25
    assert by_name["self.png"].flags & F.UNREADABLE_IMAGE


def test_flat_folder_with_a_csv_of_labels(store, tmp_path, image_folder):
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for label in ("red", "green"):
        for i in range(3):
            name = f"{label}{i}.png"
            (flat / name).write_bytes((image_folder / label / f"{label}_{i}.png").read_bytes())
            rows.append([name, label])
    rows.append(["gone.png", "red"])
    labels = write_csv(flat / "labels.csv", rows, header=("filename", "class"))
    result = run_import(store, ImportSpec("image_csv", str(labels), label_column="class"))
    items = list(store.iter_items(result.dataset_id))
    assert [(Path(i.path).name, i.label) for i in items] == [tuple(r) for r in rows]
    assert items[-1].flags & F.MISSING_FILE and not items[0].flags & F.MISSING_FILE
    wrong_root = ImportSpec("image_csv", str(labels), label_column="class", images_root=str(tmp_path))
    with pytest.raises(DataError, match="none of the 7 files") as err:
        run_import(store, wrong_root)
    assert "folder the file names are relative to" in err.value.hint


# ---- language-model corpora -------------------------------------------------------------------


def test_text_corpus_and_chat_jsonl(store, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("First paragraph\nstill first.\n\nSecond one.\n", encoding="utf-8")
    (corpus / "b.txt").write_text("\n\nThird.", encoding="utf-8")
    r = run_import(store, ImportSpec("text_corpus", str(corpus)))
    assert r.kind == "text_corpus"
    assert [i.text for i in store.iter_items(r.dataset_id)] == [
        "First paragraph\nstill first.",
        "Second one.",
        "Third.",
    ]
    chat = tmp_path / "chat.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    lines = [good, {"messages": [{"role": "robot", "content": "x"}]}, {"messages": [{"role": "user", "content": "q"}]}]
    chat.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    r2 = run_import(store, ImportSpec("chat_jsonl", str(chat)))
    items = list(store.iter_items(r2.dataset_id))
    assert len(items) == 1 and json.loads(items[0].text) == good
    assert "unknown role" in r2.report.summary() and "no assistant reply" in r2.report.summary()
    wrong = tmp_path / "labels.jsonl"
    wrong.write_text('{"text": "a", "label": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="holds no conversations"):
        run_import(store, ImportSpec("chat_jsonl", str(wrong)))


def test_chat_import_reads_every_shape_training_reads(store, tmp_path):
    """The Datasets area and training read conversations through one function: pairs, ShareGPT and
    content parts come in as messages, exactly as a training run would see them."""
    from tunedesk.engine.lm.data import read_chat_jsonl

    rows = [
        {"prompt": "where is my parcel", "response": "arr, at sea", "system": "talk like a pirate"},
        {"instruction": "translate", "input": "hello", "output": "ahoy"},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ahoy"}]},
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
                {"role": "assistant", "content": "ab"},
            ]
        },
        {"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run_import(store, ImportSpec("chat_jsonl", str(path)))
    stored = [json.loads(i.text)["messages"] for i in store.iter_items(result.dataset_id)]
    assert stored == read_chat_jsonl(path).conversations and len(stored) == 4
    assert stored[0] == [
        {"role": "system", "content": "talk like a pirate"},
        {"role": "user", "content": "where is my parcel"},
        {"role": "assistant", "content": "arr, at sea"},
    ]
    assert stored[1][0]["content"] == "translate\n\nhello" and stored[2][0] == {"role": "user", "content": "hi"}
    assert stored[3][0]["role"] == "system" and stored[3][1]["content"] == "ab"
    assert "line 5: unknown role: 'tool'" in "\n".join(str(i) for i in result.report.issues)


def test_a_split_image_folder_imports_its_classes_and_keeps_each_image_in_its_part(store, tmp_path):
    from collections import Counter

    from PIL import Image

    root = tmp_path / "pets"
    for part, n in (("train", 4), ("validation", 2), ("test", 1)):
        for label in ("cat", "dog"):
            (root / part / label).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (24, 24), (10 * i, 80, 160)).save(root / part / label / f"{i}.png")
    result = run_import(store, ImportSpec("image_folder", str(root)))
    assert store.classes(result.dataset_id) == ["cat", "dog"]
    parts = Counter(i.split for i in store.iter_items(result.dataset_id))
    assert parts == {"train": 8, "val": 4, "": 2}  # test/ beside val/: imported, assigned to neither
    assert (result.report.rows_read, result.report.rows_kept) == (14, 14)
    assert any("the folder is split already" in w for w in result.warnings)


def test_a_csv_with_two_columns_of_the_same_name_says_which_one_is_imported(store, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("text,text,label\ntitle one,the body,a\ntitle two,another body,b\n", encoding="utf-8")
    result = run_import(store, ImportSpec("text_table", str(path)))
    assert [i.text for i in store.iter_items(result.dataset_id)] == ["title one", "title two"]
    assert any("2 columns are named 'text': the first (column 1) is read" in w for w in result.warnings)
