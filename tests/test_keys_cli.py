"""``tongban keys`` end to end through ``gateway.cli.main``: the operators' story, exit codes, one-line
verification failures, key files encrypted with mode 0600, and no private key material in any output."""

from __future__ import annotations

import argparse
import base64
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.cli import build_parser, main
from gateway.trust import keyfile

PASSPHRASE = "cli-test-passphrase"


@dataclass
class Shell:
    """Runs ``tongban`` in-process in a scratch directory and keeps a transcript of all output."""

    capsys: pytest.CaptureFixture[str]
    transcript: list[str] = field(default_factory=list)

    def __call__(self, command: str) -> tuple[int, str, str]:
        """Run ``tongban COMMAND`` (split like a shell would); return (exit code, stdout, stderr)."""
        code = main(shlex.split(command))
        captured = self.capsys.readouterr()
        self.transcript += [captured.out, captured.err]
        return code, captured.out, captured.err

    def ok(self, command: str) -> str:
        code, out, err = self(command)
        assert code == 0, f"tongban {command} exited {code}: {err}"
        return out


@pytest.fixture
def sh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Shell:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TONGBAN_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("TONGBAN_KEY_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("TONGBAN_CONFIG", raising=False)
    return Shell(capsys)


def enrol(sh: Shell, province: str, node_id: str, division: str, port: int) -> None:
    sh.ok(f"node init {node_id} --id {node_id} --division {division} --listen 127.0.0.1:{port}")
    out = sh.ok(f"keys node request --config {node_id}")
    said = out.split("request fingerprint: ")[1].split("  (")[0]  # read out over the phone
    sh.ok(
        f"keys node issue {province} {node_id}/enrolment-request.json --out {node_id}.response.json "
        f"--fingerprint '{said}'"
    )
    source = shlex.quote(str(Path("bundle.json").resolve()))
    sh.ok(f"keys node install --config {node_id} {node_id}.response.json --root root/root.json --directory {source}")


@pytest.fixture
def story(sh: Shell) -> Shell:
    """Provinces 50 and 51, root 2-of-3, nodes 500157 and 511321 enrolled, parts published, directory
    v1 built and signed."""
    sh.ok("keys province init p50 --prefix 50 --name 重庆市民政局")
    sh.ok("keys province init p51 --prefix 51 --name 四川省民政厅")
    out = sh.ok("keys root init root --keys 3 --threshold 2 --province p50/province.json --province p51/province.json")
    assert "created root v1" in out
    enrol(sh, "p50", "cq-liangjiang", "500157", 7401)
    enrol(sh, "p51", "sc-nanbu", "511321", 7402)
    sh.ok("keys province publish p50 --out part50.json")
    sh.ok("keys province publish p51 --out part51.json")
    out = sh.ok("keys directory build --root root --part part50.json --part part51.json --out bundle.json")
    assert "UNSIGNED" in out
    sh.ok("keys directory sign bundle.json --key root/directory-key.pem")
    return sh


def one_line(out: str) -> str:
    lines = out.splitlines()
    assert len(lines) == 1, out
    return lines[0]


# --- the story ------------------------------------------------------------------------------------------


def test_enrolment_story_verifies_offline(story: Shell) -> None:
    code, out, err = story("keys directory verify bundle.json --root root/root.json")
    assert code == 0
    assert err == ""
    assert one_line(out).startswith("OK: directory v1, 2 nodes, expires ")
    # a node verifies with its own pinned copy of the root
    assert story.ok("keys directory verify bundle.json --root cq-liangjiang/trust/root.json")
    shown = story.ok("keys directory show bundle.json")
    assert shown.startswith("UNVERIFIED")
    assert "cq-liangjiang  500157  active" in shown
    assert "sc-nanbu  511321  active" in shown
    config = Path("cq-liangjiang/node.toml").read_text(encoding="utf-8")
    assert f'directory = "{Path("bundle.json").resolve()}"' in config
    assert Path("cq-liangjiang/keys/tls.crt.pem").exists()


def test_show_commands(story: Shell) -> None:
    root = story.ok("keys root show root/root.json")
    assert "root v1" in root
    assert "2 of 3 must sign" in root
    assert "50  重庆市民政局" in root
    assert "node CA sha256" in root
    province = story.ok("keys province show p50")
    assert "descriptor fingerprint" in province
    assert "cq-liangjiang  500157  active" in province


def test_an_unsigned_directory_fails_in_one_line(story: Shell) -> None:
    story.ok("keys directory build --root root --previous bundle.json --out next.json")
    code, out, err = story("keys directory verify next.json --root root/root.json")
    assert code == 77
    assert err == ""
    assert one_line(out).startswith("FAILED [threshold_not_met]: ")
    assert "directory publisher: 0 valid signature(s)" in out


VERIFY_FAILURES = {
    "expired": ("--root root/root.json --at 2099-01-01T00:00:00Z", "document_expired"),
    "tampered_part": ("--root root/root.json", "digest_mismatch"),
    "not_json": ("--root root/root.json", "malformed_document"),
    "another_root": ("--root other-root/root.json", "threshold_not_met"),
}


@pytest.mark.parametrize("case", sorted(VERIFY_FAILURES))
def test_verify_explains_each_failure_in_one_line(story: Shell, case: str) -> None:
    extra, code_name = VERIFY_FAILURES[case]
    bundle = Path("bundle.json")
    if case == "tampered_part":
        doc = json.loads(bundle.read_text(encoding="utf-8"))
        part = json.loads(base64.b64decode(doc["parts"]["50"]["payload"]))
        part["nodes"][0]["endpoint"] = "203.0.113.9:443"
        doc["parts"]["50"]["payload"] = base64.b64encode(json.dumps(part).encode()).decode()
        bundle.write_text(json.dumps(doc), encoding="utf-8")
    elif case == "not_json":
        bundle.write_text("<html>503</html>", encoding="utf-8")
    elif case == "another_root":
        story.ok("keys root init other-root --keys 1 --threshold 1")
    code, out, err = story(f"keys directory verify bundle.json {extra}")
    assert code == 77
    assert err == ""
    assert one_line(out).startswith(f"FAILED [{code_name}]: ")


def test_issue_outside_the_prefix_exits_77(story: Shell) -> None:
    story.ok("node init sc-jinjiang --id sc-jinjiang --division 510104")
    story.ok("keys node request --config sc-jinjiang")
    before = Path("p50/nodes.json").read_bytes()
    code, _, err = story("keys node issue p50 sc-jinjiang/enrolment-request.json --out x.json")
    assert code == 77
    assert one_line(err).startswith("tongban: error [outside_prefix]: ")
    assert not Path("x.json").exists()
    assert Path("p50/nodes.json").read_bytes() == before


def test_rotation_and_revocation(story: Shell) -> None:
    story.ok("keys node rotate --config cq-liangjiang")
    assert Path("cq-liangjiang/keys/signing.key.pem.new").exists()
    out = story.ok("keys node issue p50 cq-liangjiang/rotation-request.json --out rot.json --overlap-days 7")
    assert "rotated node cq-liangjiang" in out
    assert ", retired " in out
    story.ok("keys node install --config cq-liangjiang rot.json")
    assert not Path("cq-liangjiang/keys/signing.key.pem.new").exists()

    story.ok("keys node revoke p51 sc-nanbu")
    story.ok("keys province publish p50 --out part50.json")
    story.ok("keys province publish p51 --out part51.json")
    story.ok(
        "keys directory build --root root --part part50.json --part part51.json --previous bundle.json "
        "--out bundle.json"
    )
    story.ok("keys directory sign bundle.json --key root/directory-key.pem")
    assert "OK: directory v2, 2 nodes" in story.ok("keys directory verify bundle.json --root root")
    shown = story.ok("keys directory show bundle.json")
    assert "sc-nanbu  511321  revoked" in shown
    assert "refused after" in shown
    code, _, err = story("keys node reinstate p51 sc-nanbu")
    assert code == 78
    assert "revocation is final" in err


def test_root_update_needs_old_and_new_signatures(story: Shell) -> None:
    story.ok("keys province init p52 --prefix 52 --name 贵州省民政厅")
    story.ok("keys root update root --add-province p52/province.json --expires-days 400")
    out = story.ok("keys root sign root --key root/root-key-1.pem")
    assert "1 of 3 old keys signed (need 2)" in out
    code, _, err = story("keys root publish root")
    assert code == 77
    assert "root v1 keys: 1 valid signature(s) of 3 keys, 2 required" in err
    code, _, err = story("keys root sign root --key p52/operator-key.pem")
    assert code == 77
    assert "[wrong_key]" in err
    assert "ready to publish" in story.ok("keys root sign root --key root/root-key-3.pem")
    story.ok("keys root publish root")
    story.ok("keys directory build --root root/root.json --previous bundle.json --out bundle.json")
    story.ok("keys directory sign bundle.json --key root/directory-key.pem")
    out = story.ok("keys directory verify bundle.json --root cq-liangjiang/trust/root.json")
    assert "(root v2)" in out


# --- exit codes ------------------------------------------------------------------------------------------


def test_nothing_is_overwritten_exit_78(story: Shell) -> None:
    for command in (
        "keys root init root --keys 3 --threshold 2",
        "keys province init p50 --prefix 50 --name x",
        "keys node request --config cq-liangjiang",
        "keys root sign root --key root/root-key-1.pem",  # no draft to sign
        "keys directory build --root root --out bundle.json",  # would restart at v1 over the published one
    ):
        code, _, err = story(command)
        assert code == 78, command
        assert one_line(err).startswith("tongban: error [operator_state]: "), command


BAD_INPUT = {
    "prefix_governs_no_county": "keys province init new --prefix 99 --name nowhere",
    "threshold_above_keys": "keys root init new --keys 3 --threshold 4",
    "expiry_not_in_future": "keys root init new --keys 3 --threshold 2 --expires-days 0",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_exits_65(sh: Shell, case: str) -> None:
    code, _, err = sh(BAD_INPUT[case])
    assert code == 65
    assert one_line(err).startswith("tongban: error [invalid_input]: ")
    assert not Path("new").exists(), "nothing is created when the input is refused"


def test_without_a_passphrase_nothing_is_generated(sh: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TONGBAN_KEY_PASSPHRASE")
    code, _, err = sh("keys province init p50 --prefix 50 --name 重庆市民政局")
    assert code == 77
    assert "TONGBAN_KEY_PASSPHRASE" in err
    assert not Path("p50/operator-key.pem").exists()


def test_passphrase_file_and_change_passphrase(sh: Shell) -> None:
    Path("old.txt").write_text("from-a-file\n", encoding="utf-8")
    Path("new.txt").write_text("the official's own\n", encoding="utf-8")
    sh.ok("keys root init root --keys 1 --threshold 1 --passphrase-file old.txt")
    sh.ok("keys change-passphrase root/root-key-1.pem --passphrase-file old.txt --new-passphrase-file new.txt")
    sh.ok("keys province init p50 --prefix 50 --name 重庆市民政局 --passphrase-file new.txt")
    sh.ok("keys root update root --add-province p50/province.json")
    code, _, err = sh("keys root sign root --key root/root-key-1.pem --passphrase-file old.txt")
    assert code == 77
    assert "[key_file_error]" in err
    sh.ok("keys root sign root --key root/root-key-1.pem --passphrase-file new.txt")


# --- key files and output --------------------------------------------------------------------------------


def _private_key_files() -> Iterator[Path]:
    for path in Path().rglob("*.pem*"):
        if not path.name.endswith(".crt.pem"):
            yield path


def test_key_files_are_encrypted_and_private(story: Shell) -> None:
    files = list(_private_key_files())
    assert len(files) >= 3 + 1 + 2 * 2 + 2 * 3  # root, directory, two provinces, two nodes
    for path in files:
        assert keyfile.is_sealed(path.read_bytes()), path
        assert b"PRIVATE KEY" not in path.read_bytes(), path
        assert path.stat().st_mode & 0o777 == 0o600, path
    for directory in ("root", "p50", "cq-liangjiang/keys"):
        assert Path(directory).stat().st_mode & 0o077 == 0, directory


def test_no_private_key_material_in_any_output(story: Shell) -> None:
    story.ok("keys root show root")
    story.ok("keys province show p51")
    story.ok("keys directory show bundle.json")
    everything = "\n".join(story.transcript)
    assert "PRIVATE KEY" not in everything
    secrets: list[str] = []
    for path in _private_key_files():
        key = keyfile.read_any_private_key(path, PASSPHRASE.encode())
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        secrets += [base64.b64encode(der)[-40:].decode(), der[-32:].hex()]
    assert PASSPHRASE not in everything
    for secret in secrets:
        assert secret not in everything


# --- help --------------------------------------------------------------------------------------------------


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_commands(sub, (*prefix, name))
            return
    yield prefix


KEYS_COMMANDS = [c for c in _leaf_commands(build_parser()) if c[:1] == ("keys",)]


def test_every_command_of_the_issue_exists() -> None:
    names = {" ".join(c[1:]) for c in KEYS_COMMANDS}
    required = {"root init", "root sign", "root show", "province init", "province show", "node request"}
    required |= {"node issue", "node rotate", "node revoke", "directory build", "directory sign"}
    required |= {"directory verify", "directory show"}
    assert required <= names


@pytest.mark.parametrize("command", KEYS_COMMANDS, ids=lambda c: " ".join(c))
def test_help_documents_exit_codes(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "77" in out
