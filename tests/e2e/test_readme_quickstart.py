"""The README's quick start, as a newcomer runs it from a fresh clone.

The test clones the repository at its committed HEAD into a temporary directory,
runs the README's command 1 there as written (taken from the Quick start's first
bash block), waits until the stack says "Press Ctrl-C to stop.", then runs every
other bash block of the README that holds a `curl` or `servicetrail` example, in
the README's order, as one bash script from the clone (so later blocks see the
shell variables and files of earlier ones), and finally stops the stack with Ctrl-C.

Conventions the README's examples keep (so that this test can run them verbatim):
- a runnable example is a ```bash block; diagrams, SQL and settings are in plain
  ``` blocks; a bash block that starts a stack (`servicetrail up`: command 1, or
  a variant of it such as the Tracing section's) is not run while command 1's runs;
- commands run from the clone's root with the stack on its default ports
  (8001-8004) and the `.venv` of command 1 (`.venv/bin/servicetrail`);
- no placeholders: ids are captured from earlier answers into shell variables
  (`ORDER=$(curl ... | python3 -c ...)`) and files are written by the examples;
- every command must succeed: the script runs under `set -euo pipefail` and `curl`
  fails on an HTTP error (the test wraps it with `--fail-with-body`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Final

import pytest

from services.stack.servers import free_port, port_is_free

pytestmark = pytest.mark.e2e

REPO: Final = Path(__file__).resolve().parents[2]
README_PORTS: Final = range(8001, 8005)
READY_LINE: Final = "Press Ctrl-C to stop."
# pip install into a fresh venv, the stack's start and the demo history, on a busy
# two-core machine.
READY_TIMEOUT_SECONDS: Final = 1200.0
BASH_BLOCK: Final = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
NEWCOMER_VARIABLES: Final = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LC_",
    "TMPDIR",
    "PIP_",
    "PYENV",
    "SSL_CERT",
)
RUNNER_PRELUDE: Final = """\
set -euo pipefail
# Every example's curl must get a 2xx: print the problem body and fail otherwise.
curl() { command curl --fail-with-body "$@"; }
"""


def readme_bash_blocks(readme: str) -> list[str]:
    return [match.group(1) for match in BASH_BLOCK.finditer(readme)]


def command_one(readme: str) -> str:
    """The Quick start's command 1: its first bash block's first command line."""
    quick_start = readme.split("## Quick start", 1)[1]
    first_block = readme_bash_blocks(quick_start)[0]
    commands = [
        line for line in first_block.splitlines() if line and not line.startswith("#")
    ]
    return commands[0]


STARTS_A_STACK: Final = re.compile(r"servicetrail up\b")


def examples(readme: str, first: str) -> list[str]:
    """Every bash block with a curl or servicetrail example, but those starting a
    stack (command 1 and its variants: a second stack cannot start beside it)."""
    return [
        block
        for block in readme_bash_blocks(readme)
        if first not in block
        and not STARTS_A_STACK.search(block)
        and ("curl " in block or "servicetrail " in block)
    ]


def runner_script(blocks: list[str]) -> str:
    """One bash script running the blocks in order, saying which one runs."""
    parts = [RUNNER_PRELUDE]
    for n, block in enumerate(blocks, start=1):
        parts.append(f'echo "=== README example {n} of {len(blocks)}" >&2\n{block}')
    parts.append('echo "=== every README example succeeded" >&2\n')
    return "\n".join(parts)


def test_the_readme_parses_into_command_one_and_runnable_examples() -> None:
    readme = (REPO / "README.md").read_text()
    first = command_one(readme)
    assert first.endswith("servicetrail up --demo"), first
    blocks = examples(readme, first)
    assert len(blocks) >= 4
    for block in blocks:
        commands = [ln for ln in block.splitlines() if not ln.lstrip().startswith("#")]
        placeholders = [ln for ln in commands if re.search(r"<[a-z_]+>", ln)]
        assert not placeholders, f"placeholders left in the README: {placeholders}"


@pytest.fixture
def clone(scratch_dir: Path) -> Path:
    """A fresh clone of the repository at its committed HEAD."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = scratch_dir / "servicetrail"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-checkout", str(REPO), str(target)],
        check=True,
    )
    subprocess.run(
        ["git", "-C", str(target), "checkout", "--quiet", "--detach", head],
        check=True,
    )
    return target


def wait_for_line(log: Path, process: subprocess.Popen[bytes], line: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while line not in log.read_text(errors="replace"):
        if process.poll() is not None:
            pytest.fail(f"command 1 exited {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"command 1 not ready in time:\n{log.read_text()[-4000:]}")
        time.sleep(1.0)


def test_the_quick_start_and_every_readme_example_run_from_a_fresh_clone(
    clone: Path, scratch_dir: Path
) -> None:
    taken = [port for port in README_PORTS if not port_is_free(port)]
    if taken:
        pytest.skip(
            f"SKIPPED LOUDLY: the README's examples use ports 8001-8004 and "
            f"{taken} are taken on this machine"
        )
    readme = (clone / "README.md").read_text()
    first = command_one(readme)
    # A newcomer's shell: none of the test session's settings (its ledger key,
    # database and broker), only what finds programs, pip's packages and a locale.
    env = {k: v for k, v in os.environ.items() if k.startswith(NEWCOMER_VARIABLES)}
    # Not in the README's examples: other stacks on this machine may hold the
    # embedded servers' default ports.
    env |= {
        "SERVICETRAIL_POSTGRES_PORT": str(free_port()),
        "SERVICETRAIL_BROKER_PORT": str(free_port()),
    }
    log = scratch_dir / "command-1.log"
    with log.open("wb") as output:
        # Its own process group, as a terminal's foreground job: Ctrl-C reaches
        # bash and the stack alike.
        stack = subprocess.Popen(
            ["bash", "-c", first],
            cwd=clone,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_line(log, stack, READY_LINE)
        script = runner_script(examples(readme, first))
        ran = subprocess.run(
            ["bash", "-c", script],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert ran.returncode == 0, (
            f"a README example failed (exit {ran.returncode}):\n"
            f"{ran.stderr[-6000:]}\n--- stdout ---\n{ran.stdout[-3000:]}"
        )
        assert "every README example succeeded" in ran.stderr
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C
        try:
            stack.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait()
    printed = log.read_text(errors="replace")
    assert stack.returncode == 0, printed[-4000:]
    assert "Stopped." in printed
