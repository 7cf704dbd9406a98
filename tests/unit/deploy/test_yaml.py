"""Every YAML file in deploy/ (and the lint configurations themselves) passes yamllint with .yamllint.yaml."""

from pathlib import Path

import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parents[3]
FILES = sorted([*ROOT.glob("deploy/**/*.yaml"), *ROOT.glob("deploy/**/*.yml"), ROOT / ".yamllint.yaml",
                ROOT / ".hadolint.yaml"])


@pytest.fixture(scope="module")
def config() -> YamlLintConfig:
    return YamlLintConfig(file=str(ROOT / ".yamllint.yaml"))


def test_deploy_has_the_expected_yaml() -> None:
    names = {str(path.relative_to(ROOT)) for path in FILES}
    assert {"deploy/serve.yaml", "deploy/kuberay/rayservice.yaml", "deploy/kuberay/rayjob.yaml",
            "deploy/kuberay/monitoring.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yamllint_finds_nothing(path: Path, config: YamlLintConfig) -> None:
    problems = list(linter.run(path.read_text(), config, str(path)))
    assert not problems, "\n".join(f"{path.relative_to(ROOT)}:{p.line}:{p.column} {p.level} {p.message} ({p.rule})"
                                   for p in problems)


def test_the_configuration_still_catches_real_problems(config: YamlLintConfig) -> None:
    text = "key: value\nkey: again\nlong: " + "word " * 30 + "\nindent:\n   - odd\n"
    rules = {p.rule for p in linter.run(text, config)}
    assert {"key-duplicates", "line-length"} <= rules
