"""Layer tree speed on a Llama-3-8B-shaped model: build on the meta device and show; toggle and refresh.

    python benchmarks/layer_tree.py [--repeat 30] [--task text_classification|causal_lm]
    python benchmarks/layer_tree.py --calibrate   # on a CUDA GPU: the memory estimate vs a real step

Targets (issue 3): the 8B config built and shown in the tree in < 0.5 s; toggling a top-level
checkbox and refreshing the live summary (counts, plan words, memory estimate) in < 50 ms (median
of --repeat toggles; the CPU time is printed too, as wall times swing with other work on the
machine). Times exclude importing torch/transformers (the app does that once, after its window
shows). "Shown" means the panel painted the tree: the Qt event queue is drained and the widget rendered.

--calibrate trains one step of a few models built from configs (random weights, AdamW, bf16
autocast, as the trainer does) and compares torch's peak allocated memory + the CUDA context
with freezing.estimate_memory. The last line printed is always one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

LLAMA3_8B = dict(
    num_hidden_layers=32,
    hidden_size=4096,
    intermediate_size=14336,
    vocab_size=128256,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
)
BUILD_SHOW_TARGET_S = 0.5
TOGGLE_TARGET_MS = 50.0


def drain(app) -> None:
    app.processEvents()
    app.processEvents()


def bench(task: str, repeat: int) -> dict:
    t0 = time.perf_counter()
    import torch  # noqa: F401
    import transformers
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    imports = time.perf_counter() - t0
    from tunedesk.engine import structure
    from tunedesk.engine.config import FreezeSpec
    from tunedesk.ui.layer_tree import LayerTreePanel
    from tunedesk.ui.state import AppState

    app = QApplication.instance() or QApplication(sys.argv)
    state = AppState(Path(os.environ.get("TMPDIR", "/tmp")) / "tunedesk-bench-home")
    panel = LayerTreePanel(state)
    panel.resize(1280, 800)
    panel.show()
    state.engineReady.emit()
    drain(app)
    config = transformers.LlamaConfig(**LLAMA3_8B)
    structure.build_meta_from_config(config, task)  # warm-up: first use of the class, the lazy imports

    t0 = time.perf_counter()
    loaded = structure.build_meta_from_config(config, task)
    t1 = time.perf_counter()
    tree = structure.ModelTree.from_loaded(loaded)
    tree.apply(FreezeSpec())
    tree.summary(**panel.summary_inputs())
    t2 = time.perf_counter()
    tree_s = t2 - t1
    # the app's background build (ui.layer_tree.controller.build_tree) also traces the feature cache for
    # the panel's input size, off the GUI thread: timed apart, not part of build + show
    inputs = panel.summary_inputs()
    tree.cache_trace(inputs["sequence_length"], inputs["image_size"])
    cache_trace_s = time.perf_counter() - t2
    t_show = time.perf_counter()
    panel.show_tree(tree)
    drain(app)
    panel.repaint()
    t3 = time.perf_counter()
    build, show = t1 - t0, t3 - t_show

    view = panel.tree
    body = tree.root.children[0]  # "model": the whole pre-trained body, 7.5 B parameters
    proxy = view.model()
    index = view.proxy_index(body)
    toggles, toggles_cpu = [], []
    for i in range(repeat):
        value = Qt.CheckState.Unchecked if i % 2 == 0 else Qt.CheckState.Checked
        t, c = time.perf_counter(), time.process_time()
        proxy.setData(index, value.value, Qt.ItemDataRole.CheckStateRole)  # plan edit, resolve, rows, summary
        drain(app)
        panel.repaint()
        toggles.append((time.perf_counter() - t) * 1000)
        toggles_cpu.append((time.process_time() - c) * 1000)
    assert state.freeze.rules == [] or state.freeze.rules[-1].pattern == body.path

    leaf = tree.by_path[tree.blocks.paths[-1] + ".mlp.down_proj"]
    leaf_index = view.proxy_index(leaf)
    leaf_times = []
    for i in range(repeat):
        value = Qt.CheckState.Unchecked if i % 2 == 0 else Qt.CheckState.Checked
        t = time.perf_counter()
        proxy.setData(leaf_index, value.value, Qt.ItemDataRole.CheckStateRole)
        drain(app)
        panel.repaint()
        leaf_times.append((time.perf_counter() - t) * 1000)

    preset_times = []
    for i in range(repeat):
        button = (panel.preset_head, panel.preset_last, panel.preset_all)[i % 3]
        t = time.perf_counter()
        button.click()
        drain(app)
        panel.repaint()
        preset_times.append((time.perf_counter() - t) * 1000)

    t = time.perf_counter()
    panel.filter.setText("q_proj")
    drain(app)
    panel.repaint()
    filter_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    panel.freeze_matches.click()
    drain(app)
    panel.repaint()
    glob_ms = (time.perf_counter() - t) * 1000
    panel.filter.clear()
    drain(app)
    summary = tree.summary(batch_size=4, sequence_length=2048, device="cuda:0")
    panel.wait_idle()
    panel.close()
    panel.deleteLater()
    drain(app)

    toggle_median, toggle_max = statistics.median(toggles), max(toggles)
    return {
        "benchmark": "layer_tree",
        "task": task,
        "architecture": loaded.architecture,
        "parameters": tree.total_params,
        "modules": len(tree.nodes),
        "blocks": len(tree.blocks),
        "import_s": round(imports, 2),
        "build_s": round(build, 4),
        "tree_s": round(tree_s, 4),
        "show_s": round(show, 4),
        "build_show_s": round(build + tree_s + show, 4),
        "build_show_target_s": BUILD_SHOW_TARGET_S,
        "toggle_top_ms_median": round(toggle_median, 2),
        "toggle_top_ms_max": round(toggle_max, 2),
        "toggle_top_cpu_ms_median": round(statistics.median(toggles_cpu), 2),
        "toggle_leaf_ms_median": round(statistics.median(leaf_times), 2),
        "preset_ms_median": round(statistics.median(preset_times), 2),
        "filter_ms": round(filter_ms, 2),
        "glob_rule_ms": round(glob_ms, 2),
        "toggle_target_ms": TOGGLE_TARGET_MS,
        "cache_trace_background_s": round(cache_trace_s, 3),
        "full_finetune_estimate_gib": round(summary.memory.total / 2**30, 1) if summary.memory else None,
        "pass": build + tree_s + show < BUILD_SHOW_TARGET_S and toggle_median < TOGGLE_TARGET_MS,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


# ---- memory calibration (GPU) ---------------------------------------------------------------------------


def calibrate() -> dict:
    import torch
    import transformers

    from tunedesk.engine import freezing
    from tunedesk.engine.config import FreezeSpec

    if not torch.cuda.is_available():
        return {"benchmark": "layer_tree_memory", "skipped": "needs a CUDA GPU"}
    device = torch.device("cuda")
    cases = []
    llama_small = transformers.LlamaConfig(
        num_hidden_layers=8,
        hidden_size=2048,
        intermediate_size=5632,
        vocab_size=32000,
        num_attention_heads=16,
        num_key_value_heads=4,
        num_labels=2,
        pad_token_id=0,
    )
    bert_base = transformers.BertConfig(num_labels=4)
    for name, cfg, auto, spec, batch, seq in (
        (
            "bert-base seq-cls, all",
            bert_base,
            transformers.AutoModelForSequenceClassification,
            FreezeSpec("all"),
            32,
            128,
        ),
        (
            "bert-base seq-cls, last 4",
            bert_base,
            transformers.AutoModelForSequenceClassification,
            FreezeSpec("last_n_blocks", last_n=4),
            32,
            256,
        ),
        ("llama-1B causal, all", llama_small, transformers.AutoModelForCausalLM, FreezeSpec("all"), 4, 512),
        (
            "llama-1B causal, last 2",
            llama_small,
            transformers.AutoModelForCausalLM,
            FreezeSpec("last_n_blocks", last_n=2),
            8,
            512,
        ),
        (
            "llama-1B seq-cls, head only",
            llama_small,
            transformers.AutoModelForSequenceClassification,
            FreezeSpec("head_only"),
            16,
            512,
        ),
    ):
        cases.append(
            _safe(lambda: _measure(name, auto.from_config(cfg), spec, batch, seq, device, freezing, torch), name)
        )
    import torchvision

    for name, spec, batch in (
        ("resnet50, all", FreezeSpec("all"), 64),
        ("resnet50, last 1", FreezeSpec("last_n_blocks", last_n=1), 64),
    ):
        model = torchvision.models.resnet50(num_classes=10)
        cases.append(
            _safe(
                lambda: _measure(name, model, spec, batch, 224, device, freezing, torch, heads=["fc"], image=True), name
            )
        )
    cases = [c for c in cases if c]
    ratios = [c["estimate_gib"] / c["measured_gib"] for c in cases] or [0.0]
    return {
        "benchmark": "layer_tree_memory",
        "device": torch.cuda.get_device_name(0),
        "cases": cases,
        "estimate_over_measured_min": round(min(ratios), 2),
        "estimate_over_measured_max": round(max(ratios), 2),
    }


def _safe(make, name: str) -> dict | None:
    try:
        case = make()
    except Exception as exc:  # noqa: BLE001 - one failing case must not lose the others
        print(f"{name}: failed ({type(exc).__name__}: {str(exc)[:200]})", flush=True)
        return None
    print(
        f"{name:<32} measured {case['measured_gib']:>6.2f} GiB  estimate {case['estimate_gib']:>6.2f} GiB  "
        f"{case['estimate']}",
        flush=True,
    )
    return case


def _measure(name, model, spec, batch, seq, device, freezing, torch, heads=None, image=False) -> dict:
    from tunedesk.engine.models import heuristic_head_paths

    def meta_device():
        return torch.device("meta")  # (the catalog's faster meta_device needs platformdirs, absent on GPU hosts)

    heads = heads if heads is not None else heuristic_head_paths(model)
    causal = type(model).__name__.endswith("ForCausalLM")
    # The estimate is made on a meta copy, as the layer tree makes it.
    if image:
        import torchvision

        with meta_device():
            meta = torchvision.models.resnet50(num_classes=10)
    else:
        with meta_device():
            meta = type(model)(model.config)
    meta_plan = freezing.resolve(meta, spec, heads)
    est = freezing.estimate_memory(
        meta, meta_plan, batch_size=batch, precision="bf16", sequence_length=seq, image_size=seq, cuda=True
    )
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    plan = freezing.resolve(model, spec, heads)
    freezing.apply(model, plan)
    model.to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    freezing.set_train_mode(model, spec.train_batchnorm_stats)
    for _ in range(2):  # the second step has the optimizer state allocated
        if image:
            x = torch.randn(batch, 3, seq, seq, device=device)
            y = torch.randint(0, 10, (batch,), device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
        else:
            ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                if causal:
                    loss = model(input_ids=ids, labels=ids).loss
                else:
                    labels = torch.randint(0, model.config.num_labels, (batch,), device=device)
                    loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    reserved = torch.cuda.max_memory_reserved()
    free, total = torch.cuda.mem_get_info()
    context = total - free - torch.cuda.memory_reserved()  # what the driver holds outside PyTorch's allocator
    model.to("cpu")
    del opt
    torch.cuda.empty_cache()
    measured = peak + max(context, 0)
    return {
        "case": name,
        "batch": batch,
        "size": seq,
        "trainable": plan.trainable_params,
        "total": plan.total_params,
        "measured_gib": round(measured / 2**30, 2),
        "peak_allocated_gib": round(peak / 2**30, 2),
        "reserved_gib": round(reserved / 2**30, 2),
        "cuda_context_gib": round(context / 2**30, 2),
        "estimate_gib": round(est.total / 2**30, 2),
        "sum_of_parts_gib": round(
            (est.weights + est.gradients + est.optimizer + est.activations + est.overhead) / 2**30, 2
        ),
        "estimate": {k: round(v / 2**30, 2) for k, v in est.to_dict().items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--task", default="text_classification", choices=("text_classification", "causal_lm"))
    parser.add_argument("--calibrate", action="store_true", help="compare the memory estimate with a real step (GPU)")
    args = parser.parse_args()
    if args.calibrate:
        result = calibrate()
    else:
        result = bench(args.task, args.repeat)
        print(f"{result['architecture']}: {result['parameters'] / 1e9:.2f} B parameters, {result['modules']} modules")
        print(
            f"build {result['build_s']:.3f} s + tree {result['tree_s']:.3f} s + show {result['show_s']:.3f} s "
            f"= {result['build_show_s']:.3f} s (target < {BUILD_SHOW_TARGET_S} s)"
        )
        print(
            f"toggle top-level: median {result['toggle_top_ms_median']:.1f} ms (CPU {result['toggle_top_cpu_ms_median']:.1f} ms), "
            f"max {result['toggle_top_ms_max']:.1f} ms (target < {TOGGLE_TARGET_MS:.0f} ms); "
            f"leaf {result['toggle_leaf_ms_median']:.1f} ms; "
            f"preset {result['preset_ms_median']:.1f} ms; filter {result['filter_ms']:.1f} ms"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
