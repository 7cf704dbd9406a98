"""`unison --help` starts fast: importing the command line loads none of the heavy rooms' libraries."""

import json
import subprocess
import sys

HEAVY = ("ray", "torch", "feast", "onnxruntime")


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = ("import json, sys\n"
            "import unison.cli\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_help_runs_without_the_heavy_libraries() -> None:
    code = ("import json, sys\n"
            "from unison.cli import main\n"
            "sys.argv = ['unison', '--help']\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "Usage: unison" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
