"""Shell completion (issue 20): generated from the parsers, so it offers this version's commands and
flags; the bash script is run in a real bash."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

SCRIPT = [sys.executable, "-m", "mwtui.tui.cli", "completion"]


def complete_in_bash(*words: str) -> list[str]:
    script = subprocess.run([*SCRIPT, "bash"], capture_output=True, text=True, check=True).stdout
    line = " ".join(f"'{w}'" for w in words)
    run = f'{script}\nCOMP_WORDS=(mwtui {line}); COMP_CWORD={len(words)}; _mwtui; printf "%s\\n" "${{COMPREPLY[@]}}"'
    return subprocess.run(["bash", "-c", run], capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_flags_and_values() -> None:
    assert complete_in_bash("ser") == ["serve"]
    assert "--no-inspect" in complete_in_bash("serve", "--no-")
    assert complete_in_bash("token", "re") == ["revoke"]
    assert complete_in_bash("completion", "fi") == ["fish"]
    assert "--version" in complete_in_bash("--ver")


def test_zsh_and_fish_scripts_name_the_same_commands() -> None:
    zsh = subprocess.run([*SCRIPT, "zsh"], capture_output=True, text=True, check=True).stdout
    assert zsh.startswith("#compdef mwtui") and "complete -o filenames -F _mwtui mwtui" in zsh
    fish = subprocess.run([*SCRIPT, "fish"], capture_output=True, text=True, check=True).stdout
    assert "complete -c mwtui -n __fish_use_subcommand -a serve" in fish
    assert "complete -c mwtui -n '__fish_seen_subcommand_from serve' -l max-replicas" in fish


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "mwtui.tui.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("mwtui ") and out.stdout.split()[1][0].isdigit()
    help_text = subprocess.run([sys.executable, "-m", "mwtui.tui.cli", "--help"], capture_output=True, text=True).stdout
    assert help_text.splitlines()[0] == out.stdout.strip()  # --help opens with it
