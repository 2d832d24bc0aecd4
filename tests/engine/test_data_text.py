"""Text tables: encodings, CSV/TSV/JSONL parsing, line numbers, skipped rows and user-facing errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tunedesk.engine.data import DataIssue, DataReport, TextExample, detect_encoding, read_text_table
from tunedesk.engine.errors import DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def data_error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.hint.strip(), "every DataError needs a hint"
    return err


# --- encodings ---------------------------------------------------------------------------------


def test_utf8(tmp_path):
    p = write(tmp_path / "a.csv", "text,label\nnaïve café ✓,pos\nplain,neg\n")
    ex, report = read_text_table(p)
    assert [(e.text, e.label, e.line) for e in ex] == [("naïve café ✓", "pos", 2), ("plain", "neg", 3)]
    assert report.encoding == "utf-8" and report.encoding_confident
    assert detect_encoding(p) == ("utf-8", True)


def test_utf8_bom(tmp_path):
    p = write(tmp_path / "a.csv", "text,label\ncafé,pos\nx,neg\n", "utf-8-sig")
    ex, report = read_text_table(p)
    assert report.encoding == "utf-8-sig"
    assert ex[0].text == "café"  # the BOM did not end up in the header: columns were found


def test_utf8_bom_with_forced_utf8_still_finds_header(tmp_path):
    p = write(tmp_path / "a.csv", "text,label\ncafé,pos\n", "utf-8-sig")
    ex, _ = read_text_table(p, encoding="utf-8")
    assert ex[0].text == "café"


def test_utf16_bom(tmp_path):
    p = write(tmp_path / "a.tsv", "text\tlabel\ncafé\tpos\n", "utf-16")
    ex, report = read_text_table(p)
    assert report.encoding == "utf-16" and ex[0].text == "café"


def test_cp1252_detected_and_decoded(tmp_path):
    text = "text,label\nCafé au lait is great,pos\nIt’s broken again,neg\nNaïve résumé façade,pos\n"
    p = write(tmp_path / "excel.csv", text, "cp1252")
    enc, _confident = detect_encoding(p)
    assert enc == "cp1252"
    ex, report = read_text_table(p)
    assert report.encoding == "cp1252"
    assert [e.text for e in ex] == ["Café au lait is great", "It’s broken again", "Naïve résumé façade"]


def test_latin1_short_file_decodes(tmp_path):
    p = write(tmp_path / "l1.csv", "text,label\nCafé\xa0crème,pos\n", "latin-1")
    ex, report = read_text_table(p)
    assert ex[0].text == "Café\xa0crème"
    assert report.encoding in ("cp1252", "latin-1", "iso8859-1")


def test_detection_without_charset_normalizer(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "charset_normalizer", None)  # import now raises ImportError
    p = write(tmp_path / "excel.csv", "text,label\nIt’s café,pos\n", "cp1252")
    assert detect_encoding(p) == ("cp1252", False)
    p.write_bytes(b"text,label\n\x81\x8d,pos\n")  # bytes cp1252 leaves undefined
    assert detect_encoding(p) == ("latin-1", False)


def test_non_utf8_late_in_large_file_is_not_called_utf8(tmp_path):
    body = "".join(f"row {i},pos\n" for i in range(40_000))
    p = tmp_path / "big.csv"
    p.write_bytes(("text,label\n" + body).encode() + "Café,neg\n".encode("cp1252"))
    enc, confident = detect_encoding(p, sample_bytes=4096)
    assert enc == "cp1252" and not confident
    ex, report = read_text_table(p)
    assert ex[-1].text == "Café" and ex[-1].line == 40_002
    assert "encoding guessed as cp1252" in report.summary()


def test_forced_utf8_on_cp1252_file_names_encoding_line_and_fix(tmp_path):
    p = write(tmp_path / "excel.csv", "text,label\nok,pos\nCafé,neg\n", "cp1252")
    err = data_error(read_text_table, p, encoding="utf-8")
    assert "utf-8" in err.message and "excel.csv" in err.message
    assert "line 3" in err.message and "0xE9" in err.message
    assert "cp1252" in err.hint and "UTF-8" in err.hint


def test_utf16_or_utf32_given_for_a_file_without_a_byte_order_mark(tmp_path):
    """Python's utf-16/utf-32 readers take the byte order from the mark and fail with a bare UnicodeError
    ("UTF-16 stream does not start with BOM") without one; found by fuzzing data.encoding."""
    p = write(tmp_path / "excel.csv", "text,label\nok,pos\nCafé,neg\n", "cp1252")
    for given in ("utf-16", "UTF16", "utf-32"):
        err = data_error(read_text_table, p, encoding=given)
        assert "excel.csv has no byte-order mark" in err.message and "-le" in err.hint, err
    bare = write(tmp_path / "le.csv", "text,label\nok,pos\nno,neg\n", "utf-16-le")
    assert "utf-16-le" in data_error(read_text_table, bare, encoding="utf-16").hint
    assert read_text_table(bare, encoding="utf-16-le")[0][0].text == "ok"  # what the hint says works
    marked = write(tmp_path / "bom.csv", "text,label\nok,pos\nno,neg\n", "utf-16")
    assert read_text_table(marked, encoding="utf-16")[0][0].text == "ok"


def test_unknown_encoding_name(tmp_path):
    p = write(tmp_path / "a.csv", "text,label\nx,y\n")
    err = data_error(read_text_table, p, encoding="utf-9")
    assert "utf-9" in err.message


# --- CSV / TSV -------------------------------------------------------------------------------------


def test_quoted_newlines_keep_start_line_numbers(tmp_path):
    p = write(
        tmp_path / "q.csv",
        'text,label\n"first\nsecond\nthird",pos\nsimple,neg\n"a, b and ""c""",pos\n,neg\n',
    )
    ex, report = read_text_table(p)
    assert [(e.text, e.line) for e in ex] == [("first\nsecond\nthird", 2), ("simple", 5), ('a, b and "c"', 6)]
    assert [(i.line, i.reason) for i in report.issues] == [(7, "empty text")]


def test_crlf_line_endings(tmp_path):
    p = write(tmp_path / "w.csv", 'text,label\r\n"two\r\nlines",pos\r\nx,neg\r\n')
    ex, _ = read_text_table(p)
    assert [(e.text, e.line) for e in ex] == [("two\r\nlines", 2), ("x", 4)]


def test_tsv(tmp_path):
    p = write(tmp_path / "t.tsv", "id\tlabel\ttext\n1\tpos\thello, world\n2\tneg\tbye\n")
    ex, report = read_text_table(p)
    assert [(e.text, e.label) for e in ex] == [("hello, world", "pos"), ("bye", "neg")]
    assert report.summary() == "read 2 rows, kept 2"


def test_semicolon_csv_from_european_excel(tmp_path):
    p = write(tmp_path / "eu.csv", "text;label\nbonjour, monde;pos\nau revoir;neg\n")
    ex, _ = read_text_table(p)
    assert [(e.text, e.label) for e in ex] == [("bonjour, monde", "pos"), ("au revoir", "neg")]


def test_custom_columns_and_label_strip(tmp_path):
    p = write(tmp_path / "c.csv", "Body,Category\nhello,  billing \n")
    ex, _ = read_text_table(p, text_column="Body", label_column="Category")
    assert ex == [TextExample(text="hello", label="billing", line=2)]


def test_empty_texts_blank_labels_and_short_rows_skipped_with_lines(tmp_path):
    p = write(
        tmp_path / "tickets.csv",
        "text,label\n"
        "good one,a\n"  # 2
        "   ,a\n"  # 3 whitespace text
        "no label,\n"  # 4
        "\n"  # 5 blank line: ignored silently
        "spaces label,   \n"  # 6
        "lonely\n"  # 7 too few fields
        "good two,b\n"  # 8
        "x,y,z\n",  # 9 too many fields
    )
    ex, report = read_text_table(p)
    assert [e.line for e in ex] == [2, 8]
    assert [(i.line, i.category) for i in report.issues] == [
        (3, "empty text"),
        (4, "blank label"),
        (6, "blank label"),
        (7, "too few fields"),
        (9, "too many fields"),
    ]
    assert report.rows_read == 7 and report.rows_kept == 2
    assert str(report.issues[0]) == "tickets.csv line 3: empty text (skipped)"
    assert report.summary() == (
        "read 7 rows, kept 2; 5 skipped (2 blank label, 1 empty text, 1 too few fields, 1 too many fields)"
    )


def test_trailing_empty_fields_are_fine(tmp_path):
    p = write(tmp_path / "t.csv", "text,label\nhello,pos,,\n")
    ex, report = read_text_table(p)
    assert len(ex) == 1 and not report.issues


def test_missing_column_lists_available_columns(tmp_path):
    p = write(tmp_path / "m.csv", "words,kind\nhello,pos\n")  # no usual name either (body, category are read)
    err = data_error(read_text_table, p)
    assert "'words'" in err.message and "'kind'" in err.message
    assert "text_column" in err.message and "label_column" in err.message
    assert "text_column" in err.hint and "label_column" in err.hint


def test_missing_label_column_only(tmp_path):
    p = write(tmp_path / "m.csv", "text,kind\nhello,pos\n")
    err = data_error(read_text_table, p)
    assert "label_column 'label'" in err.message and "text_column" not in err.message
    assert "'kind'" in err.hint


def test_header_only(tmp_path):
    p = write(tmp_path / "h.csv", "text,label\n\n")
    err = data_error(read_text_table, p)
    assert "header but no data rows" in err.message


def test_empty_file(tmp_path):
    p = write(tmp_path / "e.csv", "")
    err = data_error(read_text_table, p)
    assert "e.csv is empty" in err.message


def test_no_usable_rows(tmp_path):
    p = write(tmp_path / "n.csv", "text,label\n,a\n ,b\n")
    err = data_error(read_text_table, p)
    assert "no usable rows" in err.message and "2 empty text" in err.message
    assert "line 2" in err.hint


def test_missing_file_folder_and_unknown_suffix(tmp_path):
    err = data_error(read_text_table, tmp_path / "nope.csv")
    assert "not found" in err.message
    err = data_error(read_text_table, tmp_path)
    assert "folder" in err.message
    for name, hint_word in [("a.txt", ".csv"), ("a.json", ".jsonl"), ("a.xlsx", "CSV"), ("a.feather", ".parquet")]:
        err = data_error(read_text_table, write(tmp_path / name, "text,label\nx,y\n"))
        assert "unsupported file type" in err.message and hint_word in err.hint
    if importlib.util.find_spec("pyarrow") is not None:  # Parquet is read (the parquet extra): a CSV inside is not
        err = data_error(read_text_table, write(tmp_path / "a.parquet", "text,label\nx,y\n"))
        assert "cannot read a.parquet" in err.message and "copy it again" in err.hint


def test_same_text_and_label_column(tmp_path):
    p = write(tmp_path / "a.csv", "text,label\nx,y\n")
    err = data_error(read_text_table, p, text_column="text", label_column="text")
    assert "both" in err.message


def test_max_items(tmp_path):
    p = write(tmp_path / "a.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(10)))
    ex, report = read_text_table(p, max_items=3)
    assert [e.text for e in ex] == ["t0", "t1", "t2"]
    assert report.limit_reached and report.rows_read == 3 and "stopped at max_items" in report.summary()
    ex, report = read_text_table(p, max_items=10)
    assert len(ex) == 10 and not report.limit_reached
    err = data_error(read_text_table, p, max_items=0)
    assert "max_items" in err.message


def test_unbalanced_quote_warns(tmp_path):
    p = write(tmp_path / "u.csv", 'text,label\nfine,pos\n"oops,pos\n' + "".join(f"r{i},neg\n" for i in range(150)))
    ex, report = read_text_table(p)
    assert [e.text for e in ex] == ["fine"]
    assert (3, "warning", "possible unbalanced quote") in [(i.line, i.action, i.category) for i in report.issues]


# --- JSONL -----------------------------------------------------------------------------------------


def test_jsonl_with_bad_lines(tmp_path):
    lines = [
        json.dumps({"text": "good", "label": "a"}),  # 1
        "{not json",  # 2
        "",  # 3 blank: ignored
        json.dumps(["a", "list"]),  # 4
        json.dumps({"text": "num label", "label": 3}),  # 5
        json.dumps({"text": "no label"}),  # 6
        json.dumps({"text": "", "label": "a"}),  # 7
        json.dumps({"text": {"x": 1}, "label": "a"}),  # 8
        json.dumps({"text": "good é", "label": " b "}),  # 9
    ]
    p = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    ex, report = read_text_table(p)
    assert [(e.text, e.label, e.line) for e in ex] == [("good", "a", 1), ("num label", "3", 5), ("good é", "b", 9)]
    assert [(i.line, i.category) for i in report.issues] == [
        (2, "invalid JSON"),
        (4, "not a JSON object"),
        (6, "missing field"),
        (7, "empty text"),
        (8, "text is not a string"),
    ]
    assert report.rows_read == 8


def test_jsonl_missing_field_everywhere_lists_keys(tmp_path):
    p = write(tmp_path / "d.json-lines", json.dumps({"words": "x", "label": "a"}) + "\n")
    err = data_error(read_text_table, p)
    assert "'words'" in err.message and "text_column 'text'" in err.message
    assert "text_column" in err.hint


def test_jsonl_empty(tmp_path):
    err = data_error(read_text_table, write(tmp_path / "d.jsonl", "\n\n"))
    assert "empty" in err.message


def test_jsonl_all_invalid(tmp_path):
    err = data_error(read_text_table, write(tmp_path / "d.jsonl", "nope\nnope too\n"))
    assert "no usable rows" in err.message and "invalid JSON" in err.message


# --- report ---------------------------------------------------------------------------------------


def test_report_summary_and_roundtrip():
    r = DataReport(source="/data/tickets.csv", rows_read=612, rows_kept=608)
    for line in (3, 9, 17):
        r.add("empty text", line)
    r.add("blank label", 40)
    r.add("possible unbalanced quote: one record spans lines 5-900", 5, action="warning")
    assert r.summary() == (
        "read 612 rows, kept 608; 4 skipped (3 empty text, 1 blank label); 1 warning (1 possible unbalanced quote)"
    )
    assert str(r.issues[2]) == "tickets.csv line 17: empty text (skipped)"
    assert str(DataIssue("cats/x.jpg", None, "truncated image", "skipped")) == "cats/x.jpg: truncated image (skipped)"
    back = DataReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.summary() == r.summary() and back.issues == r.issues
    with pytest.raises(ValueError):
        r.add("x", action="dropped")


def test_report_caps_stored_issues(monkeypatch):
    import tunedesk.engine.data.report as report_mod

    monkeypatch.setattr(report_mod, "MAX_STORED_ISSUES", 5)
    r = DataReport(source="x.csv", rows_read=10)
    for i in range(10):
        r.add("empty text", i)
    assert len(r.issues) == 5 and r.skipped == 10
    assert "10 skipped (10 empty text)" in r.summary()


def test_two_columns_of_the_same_name_are_read_from_the_first_and_said(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("text,text,label\ntitle one,the body,a\ntitle two,another body,b\n", encoding="utf-8")
    examples, report = read_text_table(path)
    assert [e.text for e in examples] == ["title one", "title two"]
    (issue,) = [i for i in report.issues if i.action == "warning"]
    assert "2 columns are named 'text': the first (column 1) is read" in issue.reason


def test_the_usual_column_names_of_real_data_sets_are_found_and_said(tmp_path):
    """SST-2's "sentence", IMDB exports' "review" / "sentiment": a run naming only model and data
    failed on them with "no column for text_column 'text'"."""
    csv_path = tmp_path / "sst2.csv"
    csv_path.write_text("idx,sentence,label\n1,a gripping film,1\n2,dull and long,0\n", encoding="utf-8")
    examples, report = read_text_table(csv_path)
    assert [(e.text, e.label) for e in examples] == [("a gripping film", "1"), ("dull and long", "0")]
    said = [i.reason for i in report.issues if i.action == "warning"]
    assert said == ["no 'text' column: the text is read from 'sentence' (set text_column to choose another)"]

    jsonl = tmp_path / "imdb.jsonl"
    rows = [{"Review": "loved it", "Sentiment": "positive"}, {"Review": "hated it", "Sentiment": "negative"}]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    examples, report = read_text_table(jsonl)
    assert [(e.text, e.label) for e in examples] == [("loved it", "positive"), ("hated it", "negative")]
    assert len([i for i in report.issues if "is read from" in i.reason]) == 2

    # a name the user chose is never replaced; data without a usual name still fails with its columns
    with pytest.raises(DataError, match="no column for text_column 'body_text'"):
        read_text_table(csv_path, text_column="body_text")
    odd = tmp_path / "odd.csv"
    odd.write_text("words,kind\nhello,a\nbye,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="columns found: 'words', 'kind'"):
        read_text_table(odd)
