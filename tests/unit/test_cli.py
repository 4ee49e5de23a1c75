from __future__ import annotations

import subprocess

import pytest

from tte_scale.cli import COMMANDS, build_parser, main


def test_top_level_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: tte-scale " + name in capsys.readouterr().out


def test_parser_builds():
    assert build_parser().prog == "tte-scale"


def test_console_script_runs(cli_cmd):
    res = subprocess.run(cli_cmd + ["--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "tte-scale" in res.stdout


def test_deepspeed_local_rank_flag_is_ignored(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--local_rank=1", "synth", "--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit):
        main(["--local_rank", "0", "labels", "--help"])
    assert "usage: tte-scale labels" in capsys.readouterr().out
