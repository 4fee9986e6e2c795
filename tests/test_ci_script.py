"""The CI entry point is a shell script nobody runs locally: a syntax error in it
stops every landing after one second (it happened: an apostrophe inside a
``${var:-word}`` expansion). Parse it here so the quick suite catches that."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^\s+(python3 -m pytest[^\n]*)$", readme, re.M)
    assert commands, "README.md names no test command"
    assert commands[0].strip() in script
