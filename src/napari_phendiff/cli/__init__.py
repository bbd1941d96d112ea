"""The `phendiff` command: parse arguments, call the core, show a progress bar. No science here, no Qt.

    parser.py    each command's arguments, made from core/options.py
    commands.py  what each command runs: its call into the core and what it prints
    progress.py  the progress bars

`main` runs one command and turns the project's errors, out of memory, Ctrl-C and SIGTERM into one line and an exit
status.
"""

from __future__ import annotations

import logging
import sys

from .parser import MODEL_FIELDS, build_parser

__all__ = ["MODEL_FIELDS", "main"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill` and cluster schedulers send before pre-emption), handled like Ctrl-C: training saves a
    resumable checkpoint, translation stops between two files (each written atomically)."""


def _terminate(signum, frame) -> None:
    raise Terminated()


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a pipe, a test's capture), not the one at creation."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def show_core_log() -> None:
    """What the core logs (SVDiff's decompositions, a cache it uses) is shown on stderr, one line each."""
    shown = logging.getLogger("napari_phendiff")
    if not any(isinstance(h, _CurrentStderr) for h in shown.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        shown.addHandler(handler)
        shown.setLevel(logging.INFO)
    # bitsandbytes (for --optimizer adamw8bit; diffusers imports it whenever it is installed) warns at import that
    # optional 4-bit CPU kernels it would download are missing: nothing here uses them
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Run one command. The exit status: 0 done, 1 no command given, 2 a bad setting, input or out of memory (one
    line, no traceback), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    import signal
    import threading

    show_core_log()
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        from ..core.errors import PhenDiffError

        args.run(args)
    except PhenDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # out of memory: one line with what to change, as the docks say it
        from ..core.device import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        advice = MEMORY_ADVICE.get(args.run.__name__, MEMORY_ADVICE[""])
        print(f"error: out of memory on {getattr(args, 'device', 'auto')}. {advice}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    return 0


# What to change when a command runs out of memory, by the function it runs (commands.py); "" for the others.
MEMORY_ADVICE = {
    "train_command": "Lower --batch-size or --image-size, or use --device cpu; for a fine-tuned model add "
    "--gradient-checkpointing or use --adapter lora.",
    "generalization_command": "Lower --batch-size or --image-size, or use --device cpu.",
    "": "Lower --batch-size (fields per network call), or use --device cpu.",
}
