"""The data keyring on disk: sealed with the key passphrase, refused in clear, never leaked."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from gateway.errors import ConfigError, KeyFileError
from gateway.store.keyring import ENV_KEYRING_JSON, DataKeyring


def test_sealed_round_trip_with_mode_0600(tmp_path: Path) -> None:
    ring = DataKeyring.generate()
    ring.rotate()
    path = tmp_path / "data-keys.json"
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    for key in [*ring.keys.values(), ring.index_key]:
        assert base64.b64encode(key) not in raw
        assert key not in raw
    loaded = DataKeyring.load(path)
    assert (loaded.active_key_id, loaded.keys, loaded.index_key) == (ring.active_key_id, ring.keys, ring.index_key)


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        pytest.param(lambda mp, p: mp.setenv("TONGBAN_KEY_PASSPHRASE", "wrong"), KeyFileError, id="wrong_passphrase"),
        pytest.param(lambda mp, p: mp.delenv("TONGBAN_KEY_PASSPHRASE"), KeyFileError, id="no_passphrase"),
        pytest.param(
            lambda mp, p: p.write_text(DataKeyring.generate().to_json()), KeyFileError, id="plain_keyring_on_disk"
        ),
        pytest.param(lambda mp, p: p.write_text("{"), KeyFileError, id="damaged_file"),
        pytest.param(lambda mp, p: p.unlink(), ConfigError, id="missing_file"),
    ],
)
def test_keyring_file_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: object, error: type[Exception]
) -> None:
    path = tmp_path / "data-keys.json"
    DataKeyring.generate().save(path)
    setup(monkeypatch, path)  # type: ignore[operator]
    with pytest.raises(error):
        DataKeyring.load(path)


def test_environment_keyring_for_secret_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ring = DataKeyring.generate()
    monkeypatch.setenv(ENV_KEYRING_JSON, ring.to_json())
    monkeypatch.delenv("TONGBAN_KEY_PASSPHRASE")
    assert DataKeyring.load(tmp_path / "absent.json").index_key == ring.index_key
    monkeypatch.setenv(ENV_KEYRING_JSON, json.dumps({"active": "x"}))
    with pytest.raises(ConfigError):
        DataKeyring.load(None)
