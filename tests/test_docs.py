"""README stays true: every CLI option is documented, and the two first commands are there."""

from pathlib import Path

from tether.cli import cli
from tether.config import Config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_cli_option_is_in_readme():
    missing = [opt for p in cli.params for opt in getattr(p, "opts", []) if opt.startswith("--") and opt not in README]
    missing = [m for m in missing if m not in ("--help", "--version")]
    assert not missing, f"undocumented options: {missing}"


def test_every_config_field_has_a_cli_option():
    names = {p.name for p in cli.params}
    missing = [f for f in Config.__dataclass_fields__ if f not in names]
    assert not missing, f"Config fields without a CLI option: {missing}"


def test_readme_starts_with_serve_and_test_commands():
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.strip().splitlines() if line.strip()]
    assert "tether" in lines[0] and "pip install" in lines[0]
    assert "pytest" in lines[1]
    assert "python3 -m pytest -q -p no:cacheprovider" in (ROOT / ".ci" / "run").read_text()
