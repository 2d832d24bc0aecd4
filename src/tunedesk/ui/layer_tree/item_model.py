"""The freeze tree's item model: module rows with a tri-state "trains" checkbox, drawn from the plan.

The model renders ``structure.ModelTree`` + a ``FreezeSpec`` and nothing else: a click turns into a
plan edit (``structure.toggle``), the plan is re-resolved by the engine, and only the rows whose
counts changed are repainted. Nodes are addressed by ``ModuleNode.uid`` (the index's internal id),
so no Python object has to outlive its index.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPalette

from tunedesk.engine.config import FreezeSpec
from tunedesk.engine.errors import TuneDeskError
from tunedesk.engine.shares import percent
from tunedesk.ui.layer_tree.fmt import count_text

if TYPE_CHECKING:
    from tunedesk.engine.structure import ModelTree, ModuleNode

COL_MODULE, COL_TYPE, COL_PARAMS, COL_TRAINABLE, COL_LR = range(5)
HEADERS = ("Module", "Type", "Parameters", "Trainable", "LR ×")
HEADER_TIPS = (
    "Tick to train a module, untick to freeze it. A partly ticked box: some of what is inside trains.",
    "The module's class and shape",
    "Parameters in the module and everything inside it",
    "Parameters that will train with this plan",
    "Learning-rate multiplier (double-click to edit; empty = inherit). The most specific module wins.",
)
PathRole = Qt.ItemDataRole.UserRole + 1
StateRole = Qt.ItemDataRole.UserRole + 2
NEW_COLOUR_LIGHT, NEW_COLOUR_DARK = QColor("#1f6fd1"), QColor("#6aa9ff")
LORA_COLOUR_LIGHT, LORA_COLOUR_DARK = QColor("#8e44ad"), QColor("#c39bd3")
_ROW_ROLES = [
    Qt.ItemDataRole.DisplayRole,
    Qt.ItemDataRole.CheckStateRole,
    Qt.ItemDataRole.ForegroundRole,
    Qt.ItemDataRole.DecorationRole,
    Qt.ItemDataRole.ToolTipRole,
    StateRole,
]
# Item flags, combined once: enum arithmetic per call was a visible share of a repaint.
_NO_FLAGS = Qt.ItemFlag.NoItemFlags
_PLAIN = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
_CHECKABLE = _PLAIN | Qt.ItemFlag.ItemIsUserCheckable
_EDITABLE = _PLAIN | Qt.ItemFlag.ItemIsEditable
_fonts: dict[str, QFont] = {}


def _font(kind: str) -> QFont:
    if kind not in _fonts:
        font = QFont()
        font.setBold(kind == "bold")
        font.setItalic(kind == "italic")
        _fonts[kind] = font
    return _fonts[kind]


def icon(name: str) -> QIcon:
    """resources/icons/<name>.svg"""
    from tunedesk.ui.resources import icon as resource_icon

    return resource_icon(f"{name}.svg")


def _dark() -> bool:
    from tunedesk.ui.resources import app_palette

    return app_palette().color(QPalette.ColorRole.Base).lightness() < 128


class FreezeTreeModel(QAbstractItemModel):
    """Rows are ``ModuleNode``s; the check state is computed from the current plan, never stored."""

    specChanged = Signal(object)  # FreezeSpec (a copy) after a user edit
    editFailed = Signal(str, str)  # message, hint

    def __init__(self, parent: Any = None, read_only: bool = False) -> None:
        super().__init__(parent)
        self.read_only = read_only
        self._tree: ModelTree | None = None
        self._spec = FreezeSpec()
        self._mult: list[float] | None = None
        self._mult_cache: dict[int, tuple[float | None, bool]] = {}
        self._highlight: set[int] = set()
        self._muted = QColor()
        self._refresh_colours()
        # A view may say which nodes show their children (expanded, with expanded ancestors): rows
        # under collapsed nodes are not on screen, and a view asks for their data afresh on expand.
        self.shown_parents: Callable[[], set[int]] | None = None
        self._handlers = self._role_handlers()

    # ---- content ----------------------------------------------------------------------------

    @property
    def tree(self) -> ModelTree | None:
        return self._tree

    def spec(self) -> FreezeSpec:
        return copy.deepcopy(self._spec)

    def set_tree(self, tree: ModelTree | None, spec: FreezeSpec | None = None) -> None:
        """Show another model (or none); the spec is resolved on it first, so a bad one raises here."""
        spec = copy.deepcopy(spec) if spec is not None else FreezeSpec()
        if tree is not None:
            tree.apply(spec)
        self.beginResetModel()
        self._tree = tree
        self._spec = spec
        self._reset_lr()
        self._highlight = set()
        self.endResetModel()

    def set_spec(self, spec: FreezeSpec, *, emit: bool = False) -> list[ModuleNode]:
        """Show another plan: only the rows whose counts changed are repainted. Raises ConfigError."""
        spec = copy.deepcopy(spec)
        changed: list[ModuleNode] = []
        if self._tree is not None:
            changed = self._tree.apply(spec)
        lr_changed = spec.lr_multipliers != self._spec.lr_multipliers
        self._spec = spec
        if self._tree is not None:
            self._emit_rows(changed)
            if lr_changed:
                self._reset_lr()
                self._emit_column(COL_LR)
        if emit:
            self.specChanged.emit(copy.deepcopy(spec))
        return changed

    def edit(self, make) -> bool:
        """Apply a plan edit ``make(tree, spec) -> spec`` from the user; errors become ``editFailed``."""
        if self._tree is None or self.read_only:
            return False
        try:
            new = make(self._tree, self._spec)
            self.set_spec(new, emit=True)
        except TuneDeskError as exc:
            self.editFailed.emit(exc.message, exc.hint)
            return False
        return True

    def toggle(self, node: ModuleNode, train: bool) -> bool:
        from tunedesk.engine import structure

        return self.edit(lambda tree, spec: structure.toggle(tree, spec, node.path, train))

    def set_highlight(self, nodes: list[ModuleNode]) -> None:
        old, self._highlight = self._highlight, {n.uid for n in nodes}
        if self._tree is not None and old != self._highlight:
            tree = self._tree
            self._emit_rows([tree.nodes[u] for u in old ^ self._highlight], [Qt.ItemDataRole.BackgroundRole])

    def _refresh_colours(self) -> None:
        from tunedesk.ui.resources import app_palette

        palette = app_palette()
        self._muted = palette.color(QPalette.ColorRole.PlaceholderText)
        self._new = NEW_COLOUR_DARK if _dark() else NEW_COLOUR_LIGHT
        self._lora = LORA_COLOUR_DARK if _dark() else LORA_COLOUR_LIGHT
        self._match = QColor(palette.color(QPalette.ColorRole.Highlight))
        self._match.setAlpha(45)

    # ---- change notification ------------------------------------------------------------------------

    def _emit_rows(self, nodes: list[ModuleNode], roles: list | None = None) -> None:
        """dataChanged over the minimal ranges: consecutive changed siblings become one range.

        With a ``shown_parents`` hook, rows inside collapsed modules are skipped: no view shows them,
        and an 8B model's 400 changed rows would otherwise cost the view ~100 ms per click.
        """
        assert self._tree is not None
        shown = self.shown_parents() if self.shown_parents is not None else None
        by_parent: dict[int, list[int]] = {}
        for node in nodes:
            parent_uid = node.parent.uid if node.parent else -1
            if shown is None or parent_uid < 0 or parent_uid in shown:
                by_parent.setdefault(parent_uid, []).append(node.row)
        last = len(HEADERS) - 1
        for parent_uid, rows in by_parent.items():
            rows.sort()
            parent = (
                QModelIndex() if parent_uid < 0 else self.createIndex(self._tree.nodes[parent_uid].row, 0, parent_uid)
            )
            start = prev = rows[0]
            for r in rows[1:] + [None]:
                if r is not None and r == prev + 1:
                    prev = r
                    continue
                self.dataChanged.emit(self.index(start, 0, parent), self.index(prev, last, parent), roles or _ROW_ROLES)
                if r is not None:
                    start = prev = r

    def _emit_column(self, column: int) -> None:
        if self._tree is None:
            return
        shown = self.shown_parents() if self.shown_parents is not None else None
        for node in self._tree.nodes:
            if node.children and (shown is None or node.uid in shown):
                parent = self.createIndex(node.row, 0, node.uid)
                self.dataChanged.emit(self.index(0, column, parent), self.index(len(node.children) - 1, column, parent))
        self.dataChanged.emit(self.index(0, column), self.index(0, column))

    # ---- learning-rate multipliers ------------------------------------------------------------------

    def _reset_lr(self) -> None:
        self._mult = None
        self._mult_cache = {}

    def lr_of(self, node: ModuleNode) -> tuple[float | None, bool]:
        """(multiplier shared by everything under the node or None when mixed, whether set on it exactly)."""
        assert self._tree is not None
        cached = self._mult_cache.get(node.uid)
        if cached is not None:
            return cached
        exact = (node.path or "*") in self._spec.lr_multipliers
        if not self._spec.lr_multipliers:
            value: tuple[float | None, bool] = (1.0, False)
        else:
            if self._mult is None:
                self._mult = self._tree.lr_multipliers(self._spec)
            seen = {self._mult[i] for s, e in node.spans for i in range(s, e)}
            value = (seen.pop() if len(seen) == 1 else (None if seen else 1.0), exact)
        self._mult_cache[node.uid] = value
        return value

    def set_lr(self, node: ModuleNode, value: float | None) -> bool:
        from tunedesk.engine import structure

        return self.edit(lambda tree, spec: structure.set_lr_multiplier(spec, node.path, value))

    # ---- QAbstractItemModel -------------------------------------------------------------------------

    def node(self, index: QModelIndex | QPersistentModelIndex) -> ModuleNode | None:
        if not index.isValid() or self._tree is None:
            return None
        return self._tree.nodes[index.internalId()]

    def index_of(self, node: ModuleNode, column: int = 0) -> QModelIndex:
        return self.createIndex(node.row, column, node.uid)

    def index(self, row: int, column: int, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> QModelIndex:
        if self._tree is None or column < 0 or column >= len(HEADERS) or row < 0:
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, self._tree.root.uid) if row == 0 else QModelIndex()
        children = self._tree.nodes[parent.internalId()].children
        if row >= len(children):
            return QModelIndex()
        return self.createIndex(row, column, children[row].uid)

    def parent(self, index: QModelIndex | None = None):  # type: ignore[override]
        if index is None:
            return super().parent()  # QObject.parent()
        node = self.node(index)
        if node is None or node.parent is None:
            return QModelIndex()
        return self.createIndex(node.parent.row, 0, node.parent.uid)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        if self._tree is None:
            return 0
        if not parent.isValid():
            return 1
        if parent.column() > 0:
            return 0
        return len(self._tree.nodes[parent.internalId()].children)

    def hasChildren(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> bool:
        return self.rowCount(parent) > 0

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(HEADERS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS[section]
        if role == Qt.ItemDataRole.TextAlignmentRole and section in (COL_PARAMS, COL_TRAINABLE, COL_LR):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        node = self.node(index)
        if node is None:
            return _NO_FLAGS
        if self.read_only:
            return _PLAIN
        column = index.column()
        if column == COL_MODULE and node.total_params:
            return _CHECKABLE
        if column == COL_LR and node.total_params:
            return _EDITABLE
        return _PLAIN

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # Called thousands of times per repaint: one dict lookup by role, then a small handler.
        tree = self._tree
        if tree is None or not index.isValid():
            return None
        handler = self._handlers.get(int(role))
        if handler is None:
            return None
        return handler(tree.nodes[index.internalId()], index.column())

    def _role_handlers(self) -> dict[int, Callable[[ModuleNode, int], Any]]:
        checks = (Qt.CheckState.Unchecked, Qt.CheckState.PartiallyChecked, Qt.CheckState.Checked)
        right = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

        def check(node, col):
            state = node.state
            return checks[state] if col == COL_MODULE and state is not None else None

        def foreground(node, col):
            if col == COL_LR:
                return None if node.total_params and self.lr_of(node)[1] else self._muted
            if not node.trainable:
                return self._lora if node.adapters and col in (COL_MODULE, COL_TRAINABLE) else self._muted
            return self._new if node.is_head and col <= COL_TYPE else None

        def font(node, col):
            if node.is_head and col <= COL_TYPE:
                return _font("bold")
            if col == COL_LR and node.total_params and not self.lr_of(node)[1]:
                return _font("italic")
            return None

        def decoration(node, col):
            if col != COL_MODULE:
                return None
            if node.is_head:
                return icon("new")
            return icon("freeze") if node.total_params and not node.trainable and not node.adapters else None

        def edit(node, col):
            if col != COL_LR:
                return None
            value = self._spec.lr_multipliers.get(node.path or "*")
            return "" if value is None else f"{value:g}"

        R = Qt.ItemDataRole  # noqa: N806 - a short alias for the role enum
        return {
            int(R.DisplayRole): self._display,
            int(R.CheckStateRole): check,
            int(R.ForegroundRole): foreground,
            int(R.FontRole): font,
            int(R.DecorationRole): decoration,
            int(R.TextAlignmentRole): lambda node, col: right if col >= COL_PARAMS else None,
            int(R.ToolTipRole): self._tooltip,
            int(R.EditRole): edit,
            int(R.BackgroundRole): lambda node, col: self._match if node.uid in self._highlight else None,
            int(PathRole): lambda node, col: node.path,
            int(StateRole): lambda node, col: node.state,
        }

    def _display(self, node: ModuleNode, col: int) -> str:
        if col == COL_MODULE:
            return node.name
        if col == COL_TYPE:
            if node.parent is None:
                return "the whole model"
            kind = node.type + (f" · {node.detail}" if node.detail else "")
            return kind + (" · new head" if node.is_head else "")
        if col == COL_PARAMS:
            return count_text(node.total_params) if node.total_params else ""
        if col == COL_TRAINABLE:
            if not node.total_params:
                return ""
            if node.lora is not None:
                return f"LoRA r={node.lora.rank}"
            lora = f"LoRA {count_text(node.adapters)}" if node.adapters else ""
            if node.trainable == 0:
                return lora or "frozen"
            if node.trainable == node.total_params:
                text = count_text(node.trainable)
            else:
                text = f"{count_text(node.trainable)} · {percent(node.trainable, node.total_params)}"
            return f"{text} + {lora}" if lora else text
        if col == COL_LR and node.total_params:
            value, exact = self.lr_of(node)
            if value is None:
                return "mixed"
            return f"×{value:g}" if exact or value != 1.0 else ""
        return ""

    def _tooltip(self, node: ModuleNode, col: int) -> str:
        assert self._tree is not None
        from tunedesk.engine import structure

        lines = [f"<b>{node.path or node.name}</b> ({node.type}{', ' + node.detail if node.detail else ''})"]
        if node.total_params:
            lines.append(
                f"{node.trainable:,} of {node.total_params:,} parameters train "
                f"({percent(node.trainable, node.total_params)})"
            )
            if node.own_params and node.children:
                lines.append(f"{node.own_params:,} of them belong to this module itself")
        else:
            lines.append("no parameters (nothing to train or freeze)")
        if node.is_head:
            lines.append("<b>New task head</b>: starts from random weights; it trains unless the plan is 'nothing'")
        if node.lora is not None:
            t = node.lora
            lines.append(
                f"<b>LoRA adapter</b> rank {t.rank}, alpha {t.alpha:g}, dropout {t.dropout:g}: "
                f"{node.adapters:,} adapter parameters train, the layer's own weights stay frozen"
            )
        elif node.adapters:
            lines.append(f"LoRA adapters inside: {node.adapters:,} adapter parameters")
        if node.is_block and node.block_index is not None:
            lines.append(f"repeated block {node.block_index + 1} of {len(self._tree.blocks)}")
        if node.kind == "batchnorm" and node.state == 0:
            keep = not self._spec.train_batchnorm_stats
            lines.append("frozen BatchNorm: running statistics " + ("kept as loaded" if keep else "still updated"))
        if node.total_params and self._tree is not None:
            lines.append(
                f"decided by {structure.explain(self._tree, self._spec, node.path) if node.path else 'the preset'}"
            )
        if col == COL_LR and node.total_params:
            lines.append("double-click to set a learning-rate multiplier for this module (empty = inherit)")
        return "<br>".join(lines)

    def setData(
        self, index: QModelIndex | QPersistentModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole
    ) -> bool:
        node = self.node(index)
        if node is None or self.read_only:
            return False
        if role == Qt.ItemDataRole.CheckStateRole and index.column() == COL_MODULE:
            checked = Qt.CheckState(value) if not isinstance(value, Qt.CheckState) else value
            return self.toggle(node, checked != Qt.CheckState.Unchecked)
        if role == Qt.ItemDataRole.EditRole and index.column() == COL_LR:
            text = str(value).strip().lstrip("×x*")
            if not text:
                return self.set_lr(node, None)
            try:
                number = float(text)
            except ValueError:
                self.editFailed.emit(
                    f"{text!r} is not a number", "type a multiplier such as 0.5, or clear the cell to inherit"
                )
                return False
            return self.set_lr(node, number)
        return False
