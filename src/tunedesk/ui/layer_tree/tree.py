"""The freeze tree view: ``FreezeTreeWidget`` (a QTreeView), its module filter and LR-cell editor.

The view owns what only a view can know (which modules are expanded, what the filter shows); the
plan and the counts live in ``item_model.FreezeTreeModel``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QLineEdit,
    QMenu,
    QStyledItemDelegate,
    QTreeView,
)

from tunedesk.engine.config import FreezeSpec
from tunedesk.ui.layer_tree.item_model import (
    COL_LR,
    COL_MODULE,
    COL_PARAMS,
    COL_TRAINABLE,
    COL_TYPE,
    HEADERS,
    FreezeTreeModel,
    PathRole,
    StateRole,
    icon,
)

if TYPE_CHECKING:
    from tunedesk.engine.structure import ModelTree, ModuleNode

__all__ = [
    "COL_LR",
    "COL_MODULE",
    "COL_PARAMS",
    "COL_TRAINABLE",
    "COL_TYPE",
    "HEADERS",
    "FreezeTreeModel",
    "FreezeTreeWidget",
    "LrDelegate",
    "ModuleFilter",
    "PathRole",
    "StateRole",
    "icon",
]


class ModuleFilter(QSortFilterProxyModel):
    """Shows the matching modules, their ancestors, and everything inside them."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._accepted: set[int] | None = None
        self.setRecursiveFilteringEnabled(True)
        self.setAutoAcceptChildRows(True)
        self.setDynamicSortFilter(False)  # names never change: no re-filtering on every check

    def set_accepted(self, uids: set[int] | None) -> None:
        """Node uids that match (None: no filter)."""
        if uids is None and self._accepted is None:
            return  # nothing to re-filter (a full re-filter also re-lays out the view)
        begin = getattr(self, "beginFilterChange", None)
        if begin is not None and hasattr(self, "endFilterChange"):
            begin()
            self._accepted = uids
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            self._accepted = uids
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        if self._accepted is None:
            return True
        model: FreezeTreeModel = self.sourceModel()  # type: ignore[assignment]
        node = model.node(model.index(source_row, 0, source_parent))
        return node is not None and node.uid in self._accepted


class LrDelegate(QStyledItemDelegate):
    """A plain line edit for multipliers: empty means "inherit"."""

    def createEditor(self, parent, option, index):
        editor = QLineEdit(parent)
        editor.setPlaceholderText("inherit")
        return editor

    def setEditorData(self, editor, index):
        editor.setText(str(index.data(Qt.ItemDataRole.EditRole) or ""))
        editor.selectAll()

    def setModelData(self, editor, model, index):
        model.setData(index, editor.text(), Qt.ItemDataRole.EditRole)


def _has_lora_dialog() -> bool:
    try:
        from tunedesk.ui.lm.lora_settings import ModuleLoraDialog  # noqa: F401 - the LM area's dialog
    except ImportError:
        return False
    return True


def _ancestor_uids(node: ModuleNode) -> list[int]:
    out = []
    parent = node.parent
    while parent is not None:
        out.append(parent.uid)
        parent = parent.parent
    return out


class FreezeTreeWidget(QTreeView):
    """The layer tree. ``set_model(loaded_or_tree, spec)``, ``spec()``, ``specChanged(FreezeSpec)``.

    ``read_only=True`` shows a past run's freeze map: same rendering, no editing.
    """

    specChanged = Signal(object)
    editFailed = Signal(str, str)

    def __init__(self, read_only: bool = False, parent: Any = None) -> None:
        super().__init__(parent)
        self.read_only = read_only
        self.source = FreezeTreeModel(self, read_only)
        self.proxy = ModuleFilter(self)
        self.proxy.setSourceModel(self.source)
        self._filtered = False  # the proxy sits between view and model only while filtering (it doubles paint costs)
        self.setModel(self.source)
        self.source.specChanged.connect(self.specChanged)
        self.source.editFailed.connect(self.editFailed)
        self.source.shown_parents = self._shown_parents
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.setItemDelegateForColumn(COL_LR, LrDelegate(self))
        self.setAllColumnsShowFocus(True)
        self.setAnimated(False)
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(COL_MODULE, QHeaderView.ResizeMode.Stretch)
        for col in (COL_TYPE, COL_PARAMS, COL_TRAINABLE, COL_LR):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        fm = self.fontMetrics()
        bold = QFont(self.font())
        bold.setBold(True)
        fmb = type(fm)(bold)
        widths = {
            COL_TYPE: max(
                fm.horizontalAdvance("BertForSequenceClassification"),
                fmb.horizontalAdvance("Linear · 4096 → 14336 · new head"),
            )
            + 16,
            COL_PARAMS: max(fmb.horizontalAdvance(HEADERS[COL_PARAMS]), fm.horizontalAdvance("8.03 B")) + 28,
            COL_TRAINABLE: max(fmb.horizontalAdvance(HEADERS[COL_TRAINABLE]), fm.horizontalAdvance("1.18 M · 52%"))
            + 28,
            COL_LR: max(fmb.horizontalAdvance(HEADERS[COL_LR]), fm.horizontalAdvance("mixed")) + 28,
        }
        for col, width in widths.items():
            header.resizeSection(col, width)
        header.setMinimumSectionSize(40)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._context_menu)

    # ---- API --------------------------------------------------------------------------------------

    def set_model(self, loaded_or_tree: Any, spec: FreezeSpec | None = None) -> None:
        """Show a model (a ``LoadedModel``, ``ModelTree`` or None) with a plan; raises ConfigError for a bad plan."""
        tree = loaded_or_tree
        if tree is not None and not hasattr(tree, "nodes"):
            from tunedesk.engine.structure import ModelTree

            tree = ModelTree.from_loaded(tree) if hasattr(tree, "head_paths") else ModelTree(tree)
        self._use_proxy(False)
        self.proxy.set_accepted(None)
        self.source.set_tree(tree, spec)
        self._fit_type_column()
        self.expand_default()

    def _shown_parents(self) -> set[int]:
        """Uids of the nodes whose children are on screen: expanded, under expanded ancestors."""
        tree = self.source.tree
        if tree is None:
            return set()
        out: set[int] = set()
        stack = [tree.root]
        while stack:
            node = stack.pop()
            if node.children and self.isExpanded(self.proxy_index(node)):
                out.add(node.uid)
                stack.extend(c for c in node.children if c.children)
        return out

    def _fit_type_column(self) -> None:
        """Wide enough for this model's widest type text (bold for the head), never more than 320 px."""
        tree = self.source.tree
        if tree is None:
            return
        fm = self.fontMetrics()
        bold = QFont(self.font())
        bold.setBold(True)
        fmb = type(fm)(bold)
        widest = 0
        for node in tree.nodes[:3000]:
            text = self.source._display(node, COL_TYPE)
            widest = max(widest, (fmb if node.is_head else fm).horizontalAdvance(text))
        self.header().resizeSection(COL_TYPE, max(120, min(320, widest + 20)))

    def model_tree(self) -> ModelTree | None:
        return self.source.tree

    def spec(self) -> FreezeSpec:
        return self.source.spec()

    def set_spec(self, spec: FreezeSpec) -> None:
        """Show another plan without announcing it (``specChanged`` is for the user's edits)."""
        self.source.set_spec(spec)

    def edit_spec(self, make) -> bool:
        """Apply a plan edit as if the user made it (presets, filter buttons): ``specChanged`` follows."""
        return self.source.edit(make)

    def set_lr_column_visible(self, visible: bool) -> None:
        self.setColumnHidden(COL_LR, not visible)

    def node_at(self, view_index: QModelIndex) -> ModuleNode | None:
        """The node of an index of this view's model (the filter's, while filtering)."""
        return self.source.node(self.proxy.mapToSource(view_index) if self._filtered else view_index)

    def proxy_index(self, node: ModuleNode, column: int = 0) -> QModelIndex:
        """The node's index in this view's model (invalid while the filter hides it)."""
        index = self.source.index_of(node, column)
        return self.proxy.mapFromSource(index) if self._filtered else index

    def _use_proxy(self, on: bool) -> None:
        if on == self._filtered:
            return
        header = self.header()
        widths = [header.sectionSize(c) for c in range(len(HEADERS))]
        hidden = [self.isColumnHidden(c) for c in range(len(HEADERS))]
        self._filtered = on
        self.setModel(self.proxy if on else self.source)
        for col, (width, off) in enumerate(zip(widths, hidden)):
            if col != COL_MODULE:
                header.resizeSection(col, width)
            self.setColumnHidden(col, off)

    def expand_default(self) -> None:
        """The model row and the path down to the repeated blocks (their container), nothing more."""
        tree = self.source.tree
        if tree is None:
            return
        self.scheduleDelayedItemsLayout()
        self.expand(self.proxy_index(tree.root))
        target = tree.by_path.get(tree.blocks.container) if tree.blocks.paths else None
        if target is None and tree.blocks.paths:
            first = tree.by_path.get(tree.blocks.paths[0])
            target = first.parent if first is not None else None
        node = target
        while node is not None:
            self.expand(self.proxy_index(node))
            node = node.parent
        for child in tree.root.children:
            if child.children and len(tree.root.children) <= 3:
                self.expand(self.proxy_index(child))

    def expand_blocks(self, last: int | None = None) -> None:
        """Open the repeated blocks (all, or the last ``last``) to show what is inside them."""
        tree = self.source.tree
        if tree is None:
            return
        paths = tree.blocks.paths if last is None else tree.blocks.paths[-last:]
        self.scheduleDelayedItemsLayout()
        for path in paths:
            node = tree.by_path.get(path)
            while node is not None:
                self.expand(self.proxy_index(node))
                node = node.parent

    def set_filter(self, pattern: str) -> list[ModuleNode]:
        """Show only modules whose path matches the glob (and their ancestors); returns the outermost matches."""
        from tunedesk.engine import structure

        tree = self.source.tree
        every = structure.matching_nodes(tree, pattern) if tree is not None and pattern else []
        matched = {n.uid for n in every}
        matches = [n for n in every if not any(a in matched for a in _ancestor_uids(n))]
        was_filtering = self._filtered
        filtering = tree is not None and bool(pattern)
        self.proxy.set_accepted(matched if filtering else None)
        self._use_proxy(filtering)
        self.source.set_highlight(matches)
        if pattern and matches:
            self.scheduleDelayedItemsLayout()  # expands below are then only recorded: one layout, not one per row
            seen: set[int] = set()
            for node in matches[:2000]:
                parent = node.parent
                while parent is not None and parent.uid not in seen:
                    seen.add(parent.uid)
                    self.expand(self.proxy_index(parent))
                    parent = parent.parent
        elif not pattern and was_filtering:
            self.expand_default()
        return matches

    # ---- per-module choices (context menu) ---------------------------------------------------------

    def choose(
        self,
        node: ModuleNode,
        choice: str,
        *,
        rank: int | None = None,
        alpha: float | None = None,
        dropout: float | None = None,
    ) -> bool:
        """Make a module train fully (``train``), stay frozen (``frozen``) or get LoRA adapters (``lora``)."""
        from tunedesk.engine import structure

        return self.source.edit(
            lambda tree, spec: structure.set_module_choice(
                tree, spec, node.path, choice, rank=rank, alpha=alpha, dropout=dropout
            )
        )

    def _ask_lora(self, node: ModuleNode) -> None:
        from tunedesk.ui.lm.lora_settings import ModuleLoraDialog

        spec = self.source.spec()
        current = node.lora
        defaults = (
            (current.rank, current.alpha, current.dropout)
            if current is not None
            else (spec.lora.rank, spec.lora.alpha, spec.lora.dropout)
        )
        values = ModuleLoraDialog.ask(self, node.path, *defaults)
        if values is not None:
            rank, alpha, dropout = values
            self.choose(node, "lora", rank=rank, alpha=alpha, dropout=dropout)

    def context_actions(self, node: ModuleNode) -> list[tuple[str, Any]]:
        """(label, callback) pairs the context menu offers for a node (None: a separator)."""
        actions: list[tuple[str, Any]] = []
        tree = self.source.tree
        if not self.read_only and node.total_params:
            actions.append(("Train fully", lambda: self.choose(node, "train")))
            actions.append(("Freeze", lambda: self.choose(node, "frozen")))
            if tree is not None and tree.supports_lora and node.path and _has_lora_dialog():
                actions.append(("LoRA adapter…", lambda: self._ask_lora(node)))
            actions.append(("", None))
        if node.children:
            index = self.proxy_index(node)
            actions.append(("Expand everything inside", lambda: self.expandRecursively(index)))
            actions.append(("Collapse", lambda: self.collapse(index)))
        actions.append(("Copy module path", lambda: QApplication.clipboard().setText(node.path)))
        return actions

    def _context_menu(self, pos) -> None:
        node = self.node_at(self.indexAt(pos))
        if node is None:
            return
        menu = QMenu(self)
        icons = {"Train fully": "unfreeze", "Freeze": "freeze"}
        for label, callback in self.context_actions(node):
            if callback is None:
                menu.addSeparator()
                continue
            action = menu.addAction(label)
            if label in icons:
                action.setIcon(icon(icons[label]))
            action.triggered.connect(callback)
        menu.exec(self.viewport().mapToGlobal(pos))

    def keyPressEvent(self, event) -> None:
        """Space toggles every selected row (the first one decides: ticked rows untick, others tick)."""
        if event.key() == Qt.Key.Key_Space and not self.read_only:
            nodes = [n for i in self.selectionModel().selectedRows(COL_MODULE) if (n := self.node_at(i)) is not None]
            nodes = [n for n in nodes if n.state is not None]
            if nodes:
                train = nodes[0].state != 2
                from tunedesk.engine import structure

                def make(tree, spec):
                    for n in nodes:
                        spec = structure.toggle(tree, spec, n.path, train)
                    return spec

                self.source.edit(make)
                return
        super().keyPressEvent(event)
