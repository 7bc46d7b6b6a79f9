"""Node configuration: TOML file, environment overrides, fail-closed validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_rendered_config_loads_with_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, config.render("cq-liangjiang", "500157", "127.0.0.1:0", "sqlite:///node.db"))
    cfg = config.load(p, environ={})
    assert cfg.node_id == "cq-liangjiang"
    assert cfg.listen == "127.0.0.1:0"
    assert cfg.database_url == f"sqlite:///{(tmp_path / 'node.db').resolve()}"
    assert cfg.data_keyring == tmp_path.resolve() / "data-keys.json"


def test_environment_overrides(tmp_path: Path) -> None:
    p = _write(tmp_path, config.render("cq-liangjiang", "500157", "127.0.0.1:0", "sqlite:///node.db"))
    cfg = config.load(
        p,
        environ={
            "TONGBAN_SERVER_LISTEN": "127.0.0.1:7999",
            "TONGBAN_DATABASE_URL": "postgresql://127.0.0.1/x",
            "TONGBAN_SERVER_GRACE_SECONDS": "1.5",
        },
    )
    assert (cfg.listen, cfg.database_url, cfg.grace_seconds) == (
        "127.0.0.1:7999",
        "postgresql://127.0.0.1/x",
        1.5,
    )


@pytest.mark.parametrize(
    ("text", "environ", "fragment"),
    [
        pytest.param(
            '[node]\nid="a-b"\ndivision="500157"\n[sever]\nlisten="x"\n',
            {},
            "unknown section",
            id="typo_section",
        ),
        pytest.param('[node]\nid="a-b"\ndivision="500157"\nlisten="x"\n', {}, "unknown key", id="typo_key"),
        pytest.param('[node]\nid="a-b"\n', {}, "missing node.division", id="missing_division"),
        pytest.param('[node]\nid="A B"\ndivision="500157"\n', {}, "node id", id="bad_node_id"),
        pytest.param('[node]\nid="a-b"\ndivision="5001"\n', {}, "six-digit", id="bad_division"),
        pytest.param('[node]\nid="a-b"\ndivision=500157\n', {}, "must be a str", id="division_not_string"),
        pytest.param(
            '[node]\nid="a-b"\ndivision="500157"\n',
            {"TONGBAN_SERVER_GRACE_SECONDS": "soon"},
            "must be a float",
            id="bad_env_value",
        ),
        pytest.param("[node\n", {}, "node.toml", id="not_toml"),
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, text: str, environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(_write(tmp_path, text), environ=environ)
    assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config.load(tmp_path / "absent.toml", environ={})


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        pytest.param("", {}, "", id="off_by_default"),
        pytest.param('[metrics]\nlisten = "0.0.0.0:7309"\n', {}, "0.0.0.0:7309", id="file"),
        pytest.param("", {"TONGBAN_METRICS_LISTEN": "127.0.0.1:0"}, "127.0.0.1:0", id="environment"),
        pytest.param('[metrics]\nlisten = "[::1]:7309"\n', {}, "[::1]:7309", id="ipv6"),
    ],
)
def test_metrics_listen(tmp_path: Path, text: str, environ: dict[str, str], expected: str) -> None:
    cfg = config.load(_write(tmp_path, '[node]\nid="a-b"\ndivision="500157"\n' + text), environ=environ)
    assert cfg.metrics_listen == expected


@pytest.mark.parametrize("listen", ["7309", "localhost", "0.0.0.0:port", "host :7309"])
def test_metrics_listen_must_be_host_and_port(tmp_path: Path, listen: str) -> None:
    text = f'[node]\nid="a-b"\ndivision="500157"\n[metrics]\nlisten = "{listen}"\n'
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        config.load(_write(tmp_path, text), environ={})
