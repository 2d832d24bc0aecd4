#!/usr/bin/env bash
# Wheels `tunedesk train` needs beyond torch/torchvision/transformers, for a GPU machine without network.
# Run here (with network), carry the git-ignored .whl/ folder, then on the GPU machine:
#   pip install --no-index --find-links .whl sqlite-utils platformdirs tqdm
# and run the CLI with PYTHONPATH=src (`python -m tunedesk.cli train ...`): it never imports Qt.
# The versions are the ones installed here (the test suite's), so both machines run the same code.
set -eu
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
pins=$($py - <<'PY'
from importlib.metadata import version, PackageNotFoundError
# sqlite-utils and what it requires (all pure Python), platformdirs (paths), tqdm (the CLI's progress bar)
names = ["sqlite-utils", "sqlite-fts4", "click", "click-default-group", "tabulate", "python-dateutil", "six",
         "pluggy", "platformdirs", "tqdm"]
out = []
for n in names:
    try:
        out.append(f"{n}=={version(n)}")
    except PackageNotFoundError:
        out.append(n)
print(" ".join(out))
PY
)
pip download --no-deps -d .whl $pins
ls -1 .whl
