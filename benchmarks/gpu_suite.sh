#!/usr/bin/env bash
# The figures of docs/benchmarks.md, in one go (run on a CUDA machine): JSON lines to stdout.
set -u
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$py -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
b="$py benchmarks/engine_vs_plain.py"
$b --model bert-base --batch 64 --seq 128 --precision bf16 --steps 200 --repeats 3 --workers 4 | tail -1
$b --model bert-base --batch 64 --seq 128 --precision bf16 --steps 200 --repeats 3 --workers 4 --frozen | tail -1
$b --model resnet50 --batch 256 --precision bf16 --steps 100 --repeats 3 --workers 12 | tail -1
$b --model resnet50 --batch 256 --precision bf16 --steps 100 --repeats 3 --workers 12 --frozen | tail -1
$b --model tiny-bert --device cpu --threads 2 --steps 60 --repeats 3 | tail -1
$py benchmarks/layer_tree.py --calibrate | tail -1
PYTHONPATH=${PYTHONPATH:-}:. $py benchmarks/lm_lora.py | tail -1
# Files to the GPU: a JPEG folder and a CSV through `tunedesk train`, next to the anchor loops (issue 13)
[ -f shared/anchors/gpu_plain_loops.py ] && anchor=shared/anchors/gpu_plain_loops.py || anchor=../shared/anchors/gpu_plain_loops.py
PYTHONPATH=${PYTHONPATH:-}:src $py benchmarks/feed_e2e.py --out /tmp/tunedesk-feed-bench --anchor "$anchor" | tail -1
# Which attention backend a padded text batch should use (issue 13), and the LoRA step against a plain
# PEFT loop without the profiler on the whole 8B shape (issue 15)
PYTHONPATH=${PYTHONPATH:-}:src $py benchmarks/attention_backends.py | tail -1
PYTHONPATH=${PYTHONPATH:-}:src:benchmarks $py benchmarks/step_gap.py --case lm --layers 32 --no-profile --start 10 --steps 20 --variant num_workers=0 | tail -1
