"""./launch.sh: once set up, running it again starts at once without reinstalling anything."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rerunning_launch_sh_does_not_reinstall():
    proc = subprocess.run([str(ROOT / "launch.sh"), "samplers", "--json"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert '"DPM++ 2M"' in proc.stdout
    assert "installing" not in proc.stderr and "creating .venv" not in proc.stderr
