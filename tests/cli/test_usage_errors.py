"""Usage errors follow the suite's rule: one line naming the option, exit 2, nothing started."""
import socket

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main


@pytest.mark.parametrize("args, expected", [
    (["demo", "--dataset", "bogus"], "Invalid value for '--dataset': 'bogus' is not one of"),
    (["sweep", "lora-rank", "--parallel", "0"], "Invalid value for '--parallel': 0 is not in the range"),
    (["status", "--bogus"], "No such option '--bogus'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["demo", "--epochs", "0"], "0 (prep only) needs --quick"),
    (["status", "--watch", "--json"], "--watch refreshes a table and --json prints once"),
    (["status", "--watch", "--interval", "0"], "Invalid value for --interval: 0.0: expected seconds > 0"),
    (["demo", "--arch", "elunet"], "--arch: only read with --quick"),
    (["demo", "--quick", "--dataset", "metaldam", "--width", "2"], "--dataset, --width: only read without --quick"),
], ids=["choice", "range", "option", "command", "bad-parameter", "watch-json", "interval", "journey-flag",
        "quick-flags"])
def test_usage_errors_are_one_line_naming_the_help_to_read(args, expected):
    result = CliRunner().invoke(main, args, prog_name="steelseg-hpc")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("error:"), result.output
    assert "(see steelseg-hpc " in lines[0] and "--help)" in lines[0] and "Usage:" not in result.output


def test_help_still_shows_usage():
    result = CliRunner().invoke(main, ["demo", "--help"], prog_name="steelseg-hpc")
    assert result.exit_code == 0 and result.output.startswith("Usage: steelseg-hpc demo")


def test_the_quick_demo_refuses_an_unknown_architecture_before_writing_anything(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--quick", "--arch", "unet4", "--dir", str(tmp_path / "d")])
    assert result.exit_code == 2 and "unknown architecture 'unet4'" in result.output
    assert not (tmp_path / "d").exists()


def test_a_dashboard_port_another_server_holds_is_one_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(main, ["dashboard", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                                           "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: --host 127.0.0.1 --port {port}: 127.0.0.1:{port} is in use "
                                     "(another dashboard?); choose another --port")
    assert not (tmp_path / "x.db").exists()  # nothing opened before the check
