""" "Try it": chat with a causal-LM run's fine-tuned model. Replies are generated in the background
(``ui.background``) by ``tunedesk.engine.lm.export.generate`` (the model is loaded once and kept between replies)."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from tunedesk.ui.background import BackgroundTask, gui_thread, run_in_background

GenerateFn = Callable[..., str]  # generate(run_id, messages, max_new_tokens, temperature, home=...)


def _generate(generate_fn: GenerateFn | None, request: dict[str, Any]) -> str:
    """In the reply's thread: the reply of the run's model (the engine keeps the model between calls)."""
    if generate_fn is None:
        from tunedesk.engine.lm.export import generate

        generate_fn = generate
    return generate_fn(
        request["run_id"],
        request["messages"],
        request["max_new_tokens"],
        request["temperature"],
        home=request["home"],
    )


class ChatTryItWidget(QWidget):
    """A chat box over one run: type a message, read the fine-tuned model's reply.

    ``ChatTryItWidget(home, run_id)``; ``set_run(run_id)`` switches runs (and clears the chat). For
    a run trained on conversations the whole chat is sent (multi-turn, through the chat template);
    for a corpus run the message is a text to continue. Call ``stop_and_wait()`` before deleting.
    """

    replyReceived = Signal(str)  # for tests and hosts

    def __init__(
        self,
        home: str | Path | None = None,
        run_id: int | None = None,
        parent: QWidget | None = None,
        *,
        generate_fn: GenerateFn | None = None,
    ) -> None:
        super().__init__(parent)
        self.home = str(home) if home is not None else None
        self.run_id = run_id
        self.messages: list[dict[str, str]] = []
        self._pending: int | None = None
        self._next_id = 0
        self.chat = True
        self._why = ""

        self.title = QLabel()
        self.title.setProperty("role", "title")
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Start a new conversation")
        self.clear_button.clicked.connect(self.clear)
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.clear_button)

        self.transcript = QTextBrowser()
        self.transcript.setOpenLinks(False)
        self.transcript.setPlaceholderText("Ask the fine-tuned model something in the tone you trained it for.")

        self.input = QLineEdit()
        self.input.setPlaceholderText("Type a message and press Enter")
        self.input.returnPressed.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addWidget(self.send_button)

        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.7)
        self.temperature.setToolTip("0 always picks the likeliest word (repeatable); higher values vary more")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 2048)
        self.max_tokens.setValue(128)
        self.max_tokens.setToolTip("Longest reply, in tokens")
        settings = QHBoxLayout()
        settings.addWidget(QLabel("Temperature"))
        settings.addWidget(self.temperature)
        settings.addSpacing(12)
        settings.addWidget(QLabel("Max reply tokens"))
        settings.addWidget(self.max_tokens)
        settings.addStretch(1)

        self.status = QLabel()
        self.status.setProperty("role", "hint")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(row)
        layout.addLayout(settings)
        layout.addWidget(self.status)

        self._generate_fn = generate_fn
        self._task: BackgroundTask | None = None
        self._render()
        self._update_state()

    # -- public -----------------------------------------------------------------------------------
    def set_run(self, run_id: int | None, chat: bool = True, why: str = "") -> None:
        """Talk to another run (``chat`` False: a corpus run, messages are continued as text).
        ``run_id`` None: nothing to talk to yet; ``why`` says so in the input box."""
        self.run_id, self.chat = run_id, chat
        self._why = why
        self.clear()

    def clear(self) -> None:
        self.messages = []
        self._pending = None
        self._set_status("")
        self._render()
        self._update_state()

    def send(self, text: str | None = None) -> None:
        text = (text if isinstance(text, str) else self.input.text()).strip()
        if not text or self._pending is not None or self.run_id is None:
            return
        self.input.clear()
        self.messages.append({"role": "user", "content": text})
        self._next_id += 1
        self._pending = self._next_id
        request = {
            "id": self._pending,
            "run_id": self.run_id,
            "home": self.home,
            "messages": list(self.messages) if self.chat else text,
            "max_new_tokens": self.max_tokens.value(),
            "temperature": self.temperature.value(),
        }
        self._set_status("Thinking\u2026 (the first reply also loads the model)")
        self._render()
        self._update_state()
        rid = self._pending
        self._task = run_in_background(
            lambda _ctx: _generate(self._generate_fn, request),
            name="generating a reply",
            on_result=lambda reply: self._on_reply(rid, reply),
            on_error=lambda message, hint: self._on_error(rid, message, hint),
            parent=self,
        )

    def stop_and_wait(self, timeout_ms: int = 60000) -> bool:
        """Wait for a reply in progress (generation cannot be interrupted); safe to call more than once."""
        return self._task is None or self._task.wait(timeout_ms)

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        return self.stop_and_wait(timeout_ms)

    # -- worker results ---------------------------------------------------------------------------
    @gui_thread
    def _on_reply(self, request_id: int, reply: str) -> None:
        if request_id != self._pending:
            return  # cleared or switched runs meanwhile
        self._pending = None
        self.messages.append({"role": "assistant", "content": reply})
        self._set_status("")
        self._render()
        self._update_state()
        self.replyReceived.emit(reply)

    @gui_thread
    def _on_error(self, request_id: int, message: str, hint: str) -> None:
        if request_id != self._pending:
            return
        self._pending = None
        if self.messages and self.messages[-1]["role"] == "user":
            self.input.setText(self.messages.pop()["content"])  # give the message back to edit or resend
        self._set_status(message + (f"\n{hint}" if hint else ""), error=True)
        self._render()
        self._update_state()

    # -- drawing ------------------------------------------------------------------------------------
    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setProperty("role", "error" if error else "hint")
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)

    def _update_state(self) -> None:
        ready = self.run_id is not None and self._pending is None
        self.title.setText(f"Try it \u2014 run {self.run_id}" if self.run_id is not None else "Try it")
        self.input.setEnabled(ready)
        self.send_button.setEnabled(ready)
        self.clear_button.setEnabled(bool(self.messages) and self._pending is None)
        self.input.setPlaceholderText(
            "Type a message and press Enter"
            if self.run_id is not None
            else self._why or "Choose a finished language-model run to talk to it"
        )

    def _render(self) -> None:
        pal = self.palette()
        user_bg = pal.highlight().color().name()
        user_fg = pal.highlightedText().color().name()
        bot_bg = pal.alternateBase().color().name()
        parts = []
        for m in self.messages:
            text = html.escape(m["content"]).replace("\n", "<br>") or "<i>(empty reply)</i>"
            if m["role"] == "user":
                parts.append(
                    f'<table width="100%" cellspacing="0" cellpadding="0"><tr><td width="25%"></td>'
                    f'<td style="background:{user_bg}; color:{user_fg}; padding:6px 10px;" align="left">'
                    f"{text}</td></tr></table>"
                )
            else:
                parts.append(
                    f'<table width="100%" cellspacing="0" cellpadding="0"><tr>'
                    f'<td style="background:{bot_bg}; padding:6px 10px;" align="left">{text}</td>'
                    f'<td width="25%"></td></tr></table>'
                )
        if self._pending is not None:
            parts.append('<p style="color:gray"><i>\u2026</i></p>')
        self.transcript.setHtml('<div style="margin:0">' + '<div style="height:6px"></div>'.join(parts) + "</div>")
        bar = self.transcript.verticalScrollBar()
        bar.setValue(bar.maximum())
