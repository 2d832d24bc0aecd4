"""Everything that is not drawing. This package must never import Qt (tests/engine/test_boundary.py)."""
