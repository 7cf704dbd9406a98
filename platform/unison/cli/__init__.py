"""The `unison` command line: one entry point for the stack, data, models, features and the three paths.

`root` assembles the app from one module per command group (`config`, `stack` with `status`, `data`, `demo`,
`optimize`, `models`, `features`, `batch`, `serve`, `stream`, `parity`, `deploy`); `common` holds the consoles,
settings loading and the error exit; `format` the pure `format_*` functions behind everything printed. Heavy
rooms (Ray, torch, Feast, ONNX Runtime) are imported inside the commands, so `unison --help` starts fast.
"""

from unison.cli.root import app, main

__all__ = ["app", "main"]
