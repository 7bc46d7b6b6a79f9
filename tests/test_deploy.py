"""``deploy/`` holds only what is real: every file parses, and every command, port, path, setting and
environment variable it names exists in the project.

TOML goes through the node's own loader (``gateway.config.load``), YAML through PyYAML, the
Dockerfile, ``.dockerignore`` and the systemd unit through small line parsers below. Commands are
checked against the real ``tongban`` argument parser: an exec array (a probe, a health check, the
entrypoint) must parse as a whole; a ``tongban …`` mention in a comment or the README must name a
real command group and subcommand. Then ``tongban node health`` itself, which the container health
check and the Kubernetes probes run, is run against real node servers.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import ipaddress
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config, logs
from gateway.cli import build_parser, main
from gateway.cli.node import ENV_CONFIG, EXIT_UNHEALTHY, dial_address
from gateway.domain.divisions import DivisionTable
from gateway.errors import ConfigError
from gateway.node import init_node, open_node
from gateway.server import NodeServer
from gateway.trust import keyfile
from tests.test_mtls import PASSPHRASE, LivePki, enrol_on_disk, publish

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLES = sorted((DEPLOY / "examples").glob("*.toml"))
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "systemd" / "tongban-node.service"
CONTAINER_NODE_DIR = "/srv/tongban"


# --- the command line as the files use it ---------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


PARSER = build_parser()


def command_path(words: list[str]) -> list[str]:
    """The longest chain of real (sub)commands at the start of ``words``; ``ValueError`` if the
    first word is not a command group or a group's next word is not one of its subcommands."""
    parser, path = PARSER, []
    for word in words:
        choices = _subcommands(parser)
        if not choices:
            break
        if word not in choices:
            raise ValueError(f"`tongban {' '.join([*path, word])}` is not a command")
        parser, path = choices[word], [*path, word]
    if _subcommands(parser):
        raise ValueError(f"`tongban {' '.join(path)}` needs a subcommand")
    return path


def parses(argv: list[str]) -> argparse.Namespace:
    """``argv`` (without ``tongban``) as the real parser reads it; fails the test on a usage error."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = PARSER.parse_args(argv)
        except SystemExit:
            pytest.fail(f"`tongban {shlex.join(argv)}` does not parse: {err.getvalue().strip()}")
    assert getattr(args, "handler", None) is not None, argv
    return args


# `tongban group sub …` where a command stands: at the start of a (comment) line, after a backtick, a
# shell separator or an install path — not a path (/srv/tongban), a name (tongban-node) or a namespace.
MENTION = re.compile(r"(?:^[ \t#>*-]*|`|bin/|&& |; )tongban((?: [a-z][a-z0-9-]*)+)", re.MULTILINE)


def mentions(text: str) -> list[list[str]]:
    return [m.group(1).split() for m in MENTION.finditer(text)]


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def known_environment() -> set[str]:
    """Every TONGBAN_* variable the project reads: one per configuration key, and the others."""
    from_config = {f"TONGBAN_{s}_{k}".upper() for s, keys in config._SCHEMA.items() for k in keys}
    return from_config | {ENV_CONFIG, keyfile.ENV_PASSPHRASE, keyfile.ENV_PASSPHRASE_FILE, logs.ENV_FORMAT}


def port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


# --- every command named anywhere in deploy/ -------------------------------------------------------------


def test_deploy_holds_the_expected_files() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in deploy_files()}
    assert {
        "README.md",
        "Dockerfile",
        "systemd/tongban-node.service",
        "examples/county-node.toml",
        "examples/relay-node.toml",
        "examples/provincial-operator.toml",
        "k8s/kustomization.yaml",
        "k8s/deployment.yaml",
        "k8s/configmap.yaml",
        "k8s/secrets.yaml",
        "k8s/service.yaml",
        "k8s/networkpolicy.yaml",
        "k8s/poddisruptionbudget.yaml",
    } <= names
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for name in names - {"README.md"}:
        assert f"`{name}`" in readme, f"deploy/README.md does not explain {name}"
    assert "`.dockerignore`" in readme
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_command_mentioned_is_real(path: Path) -> None:
    found = mentions(path.read_text(encoding="utf-8"))
    for words in found:
        try:
            command_path(words)
        except ValueError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {exc}")


def test_the_mention_finder_finds_commands_and_skips_names() -> None:
    text = "run `tongban node serve --config /srv/tongban` or /opt/tongban/bin/tongban node health; tongban-node\n"
    text += "#   tongban keys node issue cq\nkubectl -n tongban create secret generic x\n"
    assert mentions(text) == [["node", "serve"], ["node", "health"], ["keys", "node", "issue", "cq"]]
    with pytest.raises(ValueError, match="not a command"):
        command_path(["node", "server"])
    with pytest.raises(ValueError, match="needs a subcommand"):
        command_path(["node"])


def test_there_is_no_separate_worker_command_so_no_worker_unit() -> None:
    """The delivery worker runs inside `tongban node serve`. Should a separate worker command
    appear, it needs its own systemd unit (and this test an update)."""
    names = {f"{g} {s}" for g, p in _subcommands(PARSER).items() for s in _subcommands(p)}
    assert not [n for n in names if "worker" in n or "deliver" in n]
    assert [p.name for p in (DEPLOY / "systemd").iterdir()] == ["tongban-node.service"]


# --- example configurations ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def examples() -> dict[str, config.NodeConfig]:
    return {p.stem: config.load(p, environ={}) for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_loads_with_the_nodes_own_loader(path: Path) -> None:
    cfg = config.load(path, environ={})
    DivisionTable.load_default().current(cfg.division)  # a current county-level code
    base = path.parent.resolve()
    # the node-directory layout `tongban node init` and `tongban keys node install` produce
    assert (cfg.tls_key, cfg.tls_certificate) == (base / "keys/tls.key.pem", base / "keys/tls.crt.pem")
    assert (cfg.signing_key, cfg.encryption_key) == (base / "keys/signing.key.pem", base / "keys/encryption.key.pem")
    assert (cfg.data_keyring, cfg.trust_root) == (base / "data-keys.json", base / "trust/root.json")
    assert cfg.directory_source.startswith("https://")
    # the health check dials the county listener: loopback, with a fixed port
    assert is_loopback(cfg.county_listen)
    assert port(cfg.county_listen) != 0
    assert dial_address(cfg.county_listen, "county.listen") == cfg.county_listen
    assert (port(cfg.listen), port(cfg.metrics_listen)) == (7301, 7309)


def test_the_examples_name_each_other(examples: dict[str, config.NodeConfig]) -> None:
    county, relay, operator = examples["county-node"], examples["relay-node"], examples["provincial-operator"]
    assert relay.serve_relay
    assert not county.serve_relay
    assert not operator.serve_relay
    assert config.supervisor_for(county.case_supervisors, county.division) == operator.node_id
    assert county.division[:2] == operator.division[:2] == relay.division[:2]
    text = (DEPLOY / "examples" / "county-node.toml").read_text(encoding="utf-8")
    assert f'"{relay.node_id}"' in text, "the county example shows how to use the relay example"
    assert len({c.node_id for c in examples.values()}) == 3


# --- Dockerfile and .dockerignore -------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, rest = (pending + line).partition(" ")
        out.append((instruction.upper(), rest.strip()))
        pending = ""
    assert not pending, "a continuation line runs off the end"
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage (the ARGs before the first FROM are stage 0's preamble)."""
    result: list[list[tuple[str, str]]] = [[]]
    for instruction, rest in dockerfile():
        if instruction == "FROM":
            result.append([])
        result[-1].append((instruction, rest))
    return result


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"not the exec form: {rest}"
    assert all(isinstance(v, str) for v in value)
    return value


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _matches(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        parts = path.split("/")
        return any(_matches("/".join(parts[i:]), pattern[3:]) for i in range(len(parts)))
    return fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + "/")


def in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern that matches decides; ``!`` lets a path back in."""
    included = True
    for pattern in dockerignore():
        negated = pattern.startswith("!")
        if _matches(path, pattern.lstrip("!").rstrip("/")):
            included = negated
    return included


def test_dockerfile_builds_a_wheel_then_a_slim_non_root_runtime() -> None:
    preamble, *built = stages()
    args = dict(rest.split("=", 1) for instruction, rest in preamble if instruction == "ARG")
    assert args == {"PYTHON_IMAGE": "python:3.11-slim"}
    assert [s[0][1] for s in built] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    build, runtime = built
    assert any(i == "RUN" and "pip wheel" in r for i, r in build)
    assert any(i == "RUN" and "from=build" in r and "pip install --no-index" in r for i, r in runtime)
    assert not any(i == "COPY" for i, _ in runtime), "the runtime stage copies nothing from the context"
    users = [r for i, r in runtime if i == "USER"]
    assert users == ["10001:10001"]
    assert "useradd --system --uid 10001" in " ".join(r for i, r in runtime if i == "RUN")


def test_dockerfile_copies_only_sources_that_exist_and_are_in_the_build_context() -> None:
    copies = [r.split() for i, r in dockerfile() if i == "COPY" and not r.startswith("--from")]
    sources = [src for words in copies for src in words[:-1]]
    assert sources == ["pyproject.toml", "README.md", "proto/", "gateway/", "adapters/", "keys/"]
    secret = re.compile(r"\.(pem|db|key)$|data-keys\.json$|node\.toml$")
    for src in sources:
        path = ROOT / src
        assert path.exists(), src
        files = (
            [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        )
        for f in files:
            rel = str(f.relative_to(ROOT))
            assert not secret.search(rel), f"{rel} would be baked into the image"
            assert in_build_context(rel), f"{rel} is needed by the build but .dockerignore leaves it out"


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "node/node.toml",
        "srv/tongban/keys/tls.key.pem",
        "gateway/keys/signing.key.pem",
        "data-keys.json",
        "gateway/node.db",
        "gateway/__pycache__/config.cpython-311.pyc",
        "bench/results/store.json",
    ],
)
def test_dockerignore_keeps_node_data_and_everything_else_out(path: str) -> None:
    assert not in_build_context(path)


def test_dockerfile_entrypoint_command_and_health_check_are_real_commands(
    examples: dict[str, config.NodeConfig],
) -> None:
    runtime = stages()[-1]
    one = {i: r for i, r in runtime if i in {"ENTRYPOINT", "CMD", "HEALTHCHECK", "EXPOSE", "WORKDIR"}}
    assert exec_form(one["ENTRYPOINT"]) == ["tongban"]
    assert command_path(exec_form(one["CMD"])) == ["node", "serve"]
    parses(exec_form(one["CMD"]))
    options, _, health = one["HEALTHCHECK"].partition("CMD ")
    assert "--interval=" in options
    health_argv = exec_form(health)
    assert health_argv[0] == "tongban"
    assert command_path(health_argv[1:]) == ["node", "health"]
    parses(health_argv[1:])
    county = examples["county-node"]
    assert {int(p) for p in one["EXPOSE"].split()} == {port(county.listen), port(county.metrics_listen)}
    assert one["WORKDIR"] == CONTAINER_NODE_DIR


def test_dockerfile_environment_names_real_variables_and_paths() -> None:
    env: dict[str, str] = {}
    for instruction, rest in stages()[-1]:
        if instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
    tongban_env = {k: v for k, v in env.items() if k.startswith("TONGBAN_")}
    assert set(tongban_env) <= known_environment()
    assert tongban_env[ENV_CONFIG] == f"{CONTAINER_NODE_DIR}/{config.CONFIG_FILE}"
    assert tongban_env[logs.ENV_FORMAT] == "json"


# --- systemd ---------------------------------------------------------------------------------------------


def unit() -> list[tuple[str, str, str]]:
    """(section, key, value) in order; keys may repeat (SystemCallFilter=, Environment=)."""
    entries, section = [], ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def test_systemd_unit_is_hardened() -> None:
    service = {}
    for section, key, value in unit():
        if section == "Service":
            service.setdefault(key, []).append(value)
    required = {
        "User": "tongban",
        "Group": "tongban",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
    }
    for key, value in required.items():
        assert service.get(key) == [value], key
    assert service["SystemCallFilter"][0] == "@system-service"
    assert {s for s, _, _ in unit()} == {"Unit", "Service", "Install"}


def test_systemd_unit_runs_the_real_serve_command_on_its_writable_node_directory() -> None:
    service = [(k, v) for s, k, v in unit() if s == "Service"]
    (exec_start,) = [v for k, v in service if k == "ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/tongban/bin/tongban"
    assert command_path(argv[1:]) == ["node", "serve"]
    args = parses(argv[1:])
    (writable,) = [v for k, v in service if k == "ReadWritePaths"]
    assert args.config == writable == CONTAINER_NODE_DIR
    assert dict(service)["WorkingDirectory"] == writable
    environment = dict(v.split("=", 1) for k, v in service if k == "Environment")
    assert set(environment) <= known_environment()
    assert environment[ENV_CONFIG] == f"{writable}/{config.CONFIG_FILE}"
    credential, _, source = dict(service)["LoadCredential"].partition(":")
    assert environment[keyfile.ENV_PASSPHRASE_FILE] == f"%d/{credential}"
    assert source.startswith("/etc/")
    assert dict(service)["RestartPreventExitStatus"] == str(ConfigError.exit_code)


def test_systemd_unit_migrates_the_database_before_serving() -> None:
    """`ExecStartPre=` runs `tongban node migrate` on the same configuration as `ExecStart=`."""
    service = [(k, v) for s, k, v in unit() if s == "Service"]
    (pre,) = [v for k, v in service if k == "ExecStartPre"]
    (start,) = [v for k, v in service if k == "ExecStart"]
    pre_argv, start_argv = shlex.split(pre), shlex.split(start)
    assert pre_argv[0] == start_argv[0]
    assert command_path(pre_argv[1:]) == ["node", "migrate"]
    assert parses(pre_argv[1:]).config == parses(start_argv[1:]).config
    keys = [k for k, _ in service]
    assert keys.index("ExecStartPre") < keys.index("ExecStart")
    assert dict(service)["TimeoutStartSec"].endswith("min"), "a long migration is part of starting"


# --- Kubernetes ----------------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in k8s_documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    spec: dict[str, Any] = one("Deployment")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["containers"]
    return dict(c)


@pytest.fixture(scope="module")
def node_toml(tmp_path_factory: pytest.TempPathFactory) -> config.NodeConfig:
    """The ConfigMap's node.toml, loaded by the node's own loader as if mounted at /srv/tongban."""
    directory = tmp_path_factory.mktemp("srv-tongban")
    path = directory / config.CONFIG_FILE
    path.write_text(one("ConfigMap", "tongban-node-config")["data"]["node.toml"], encoding="utf-8")
    return config.load(path, environ={})


def mounted(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Every file the pod mounts: container path -> (kind, object name, key)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    files: dict[str, tuple[str, str, str]] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        sources = volume["projected"]["sources"] if "projected" in volume else [volume]
        for source in sources:
            for kind, ref in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if ref in source:
                    name = source[ref].get("name") or source[ref].get("secretName")
                    for item in source[ref]["items"]:
                        files[f"{mount['mountPath']}/{item['path']}"] = (kind, name, item["key"])
    return files


def test_every_manifest_parses_and_kustomize_lists_all_but_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests - {"secrets.yaml"}
    for doc in k8s_documents():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
    namespace = one("Namespace")["metadata"]
    assert kustomization["namespace"] == namespace["name"]
    assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deployment_runs_several_replicas_of_the_real_serve_command(
    container: dict[str, Any], pod: dict[str, Any]
) -> None:
    assert one("Deployment")["spec"]["replicas"] >= 2
    assert command_path(container["args"]) == ["node", "serve"]
    parses(container["args"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == next(r for i, r in stages()[-1] if i == "USER").split(":")[0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False


def test_an_init_container_migrates_the_database_before_the_node_starts(
    container: dict[str, Any], pod: dict[str, Any], node_toml: config.NodeConfig
) -> None:
    """Every pod runs `tongban node migrate` first, from the node's own image, on the node's own
    configuration and database; it needs no key (gateway.store.db: replicas take turns on a
    PostgreSQL advisory lock, so several pods may run it at once)."""
    (init,) = pod["initContainers"]
    assert init["image"] == container["image"]
    assert command_path(init["args"]) == ["node", "migrate"]
    parses(init["args"])
    env = {e["name"]: e for e in init["env"]}
    assert set(env) <= known_environment()
    node_env = {e["name"]: e for e in container["env"]}
    assert env[ENV_CONFIG] == node_env[ENV_CONFIG]
    assert env["TONGBAN_DATABASE_URL"] == node_env["TONGBAN_DATABASE_URL"]
    assert keyfile.ENV_PASSPHRASE_FILE not in env
    assert init["securityContext"] == container["securityContext"]
    files = mounted(pod, init)
    assert files == {env[ENV_CONFIG]["value"]: ("ConfigMap", "tongban-node-config", "node.toml")}
    assert node_toml.database_url.startswith("postgresql://")


def test_probes_run_the_real_health_command(container: dict[str, Any]) -> None:
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        argv = container[probe]["exec"]["command"]
        assert argv[0] == "tongban"
        assert command_path(argv[1:]) == ["node", "health"]
        args = parses(argv[1:])
        assert args.listener == "county"
        assert container[probe]["timeoutSeconds"] > args.timeout


def test_environment_and_secrets_are_real(container: dict[str, Any], pod: dict[str, Any]) -> None:
    names = {e["name"] for e in container["env"]}
    assert names <= known_environment()
    env = {e["name"]: e for e in container["env"]}
    database = env["TONGBAN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert database["key"] in one("Secret", database["name"])["stringData"]
    files = mounted(pod, container)
    assert files[env[ENV_CONFIG]["value"]] == ("ConfigMap", "tongban-node-config", "node.toml")
    assert files[env[keyfile.ENV_PASSPHRASE_FILE]["value"]][:2] == ("Secret", "tongban-key-passphrase")
    for kind, name, key in files.values():
        data = one(kind, name)["data" if kind == "ConfigMap" else "stringData"]
        assert key in data, f"{kind} {name} has no key {key}"


def test_the_configmap_node_toml_loads_and_its_paths_are_the_mounts(
    node_toml: config.NodeConfig, container: dict[str, Any], pod: dict[str, Any]
) -> None:
    base = node_toml.base_dir
    files = mounted(pod, container)
    for path in (
        node_toml.tls_key,
        node_toml.tls_certificate,
        node_toml.signing_key,
        node_toml.encryption_key,
        node_toml.data_keyring,
        node_toml.trust_root,
    ):
        assert f"{CONTAINER_NODE_DIR}/{path.relative_to(base)}" in files, path
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    for path in (node_toml.trust_state, node_toml.last_good_directory):
        assert any(str(path).startswith(w + "/") for w in writable), f"{path} is not on a writable volume"
    assert node_toml.database_url.startswith("postgresql://"), "replicas share one PostgreSQL"
    assert is_loopback(node_toml.county_listen)
    assert port(node_toml.county_listen) != 0


def test_ports_match_the_configuration_everywhere(node_toml: config.NodeConfig, container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"node": port(node_toml.listen), "metrics": port(node_toml.metrics_listen)}
    assert not is_loopback(node_toml.listen)
    assert not is_loopback(node_toml.metrics_listen)
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one("Deployment")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for service in (one("Service", "tongban-node"), one("Service", "tongban-node-metrics")):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for p in service["spec"]["ports"]:
            assert p["port"] == ports[p["targetPort"]]
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"
    budget = one("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["minAvailable"] < one("Deployment")["spec"]["replicas"]


def test_network_policy_admits_peers_to_the_node_port_and_the_county_to_metrics_only(
    node_toml: config.NodeConfig,
) -> None:
    policy = one("NetworkPolicy")["spec"]
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    admitted = [{p["port"] for p in rule["ports"]} for rule in policy["ingress"]]
    assert admitted == [{port(node_toml.listen)}, {port(node_toml.metrics_listen)}]
    for rule in policy["ingress"]:
        assert rule["from"], "every rule names who it admits"
        for peer in rule["from"]:
            if "ipBlock" in peer:
                ipaddress.ip_network(peer["ipBlock"]["cidr"])


# --- `tongban node health`, as the health check and the probes run it ------------------------------------


@pytest.mark.parametrize(
    ("listen", "dialled"),
    [
        ("127.0.0.1:7302", "127.0.0.1:7302"),
        ("0.0.0.0:7301", "127.0.0.1:7301"),
        ("[::]:7301", "[::1]:7301"),
        ("[::1]:7302", "[::1]:7302"),
        ("node.example.cn:7301", "node.example.cn:7301"),
    ],
)
def test_health_dials_wildcards_on_loopback(listen: str, dialled: str) -> None:
    assert dial_address(listen, "server.listen") == dialled


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.0.0.1", "localhost:port"])
def test_health_needs_a_fixed_port(listen: str) -> None:
    with pytest.raises(ConfigError, match="fixed port"):
        dial_address(listen, "county.listen")


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[tuple[Path, NodeServer]]:
    cfg = init_node(tmp_path / "node", node_id="cq-liangjiang", division="500157", listen="127.0.0.1:0")
    server = NodeServer(open_node(cfg))
    server.start()
    try:
        yield cfg.base_dir, server
    finally:
        server.stop(grace=0)


def test_health_answers_serving_then_unhealthy_once_stopped(
    plain_server: tuple[Path, NodeServer], capsys: pytest.CaptureFixture[str]
) -> None:
    node_dir, server = plain_server
    assert main(["node", "health", "--config", str(node_dir), "--address", server.county_address]) == 0
    assert f"county {server.county_address}: SERVING" in capsys.readouterr().out
    argv = ["node", "health", "--config", str(node_dir), "--listener", "node", "--address", server.address]
    assert main(argv) == 0
    assert main([*argv, "--service", "tongban.v1.NodeExchange"]) == 0
    assert main([*argv, "--service", "no.such.Service"]) == EXIT_UNHEALTHY
    server.stop(grace=0)
    assert main(["node", "health", "--config", str(node_dir), "--address", server.county_address]) == EXIT_UNHEALTHY
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_health_without_a_fixed_county_port_is_a_configuration_error(
    plain_server: tuple[Path, NodeServer], capsys: pytest.CaptureFixture[str]
) -> None:
    node_dir, _ = plain_server  # node init leaves [county] listen at 127.0.0.1:0
    assert main(["node", "health", "--config", str(node_dir)]) == ConfigError.exit_code
    assert "fixed port" in capsys.readouterr().err


def test_health_of_an_enrolled_nodes_own_port_speaks_mutual_tls_as_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    live = LivePki.create()
    cfg = enrol_on_disk(tmp_path, live, "cq-liangjiang", "500157")
    publish(cfg, live.bundle())
    server = NodeServer(open_node(cfg))
    server.start()
    try:
        argv = ["node", "health", "--config", str(cfg.base_dir), "--listener", "node", "--address", server.address]
        assert main(argv) == 0
        assert main([*argv, "--service", "tongban.v1.NodeExchange"]) == 0
        assert main(["node", "health", "--config", str(cfg.base_dir), "--address", server.county_address]) == 0
    finally:
        server.stop(grace=0)
