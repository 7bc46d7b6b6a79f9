"""Benchmark: loading and verifying a national directory of ~2,850 county nodes (issue 3).

    python -m bench.directory [--nodes 2850] [--quick] [--results-dir DIR]

Builds a PKI like the national one — a root (2 of 3), 31 provincial operators with their CAs, one
node per current county-level division (real codes from the shipped division table), each with a
real P-256 TLS certificate, an Ed25519 signing key and an X25519 encryption key — then times
``TrustState.accept`` on the signed bundle (what a node does at start-up and at every refresh) and
records its memory. Reference figures measured in the same run: Ed25519 verifications/s,
certificate signature checks/s and the JSON parse of the bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from bench.common import format_table, machine_info, measure, mib, si, traced_peak, write_result
from gateway.domain.divisions import DivisionTable
from gateway.trust.signing import Ed25519Signer, PublicKey, verify
from gateway.trust.verifier import TrustState
from tests.trustkit import NOW, new_pki


def build(nodes: int) -> tuple[bytes, bytes, list[str]]:
    table = DivisionTable.load_default()
    counties = [d for d in table.current_counties() if d.province_code not in {"71", "81", "82"}][:nodes]
    by_province: dict[str, list[str]] = defaultdict(list)
    for d in counties:
        by_province[d.province_code].append(d.code)
    provinces = tuple((p, table.province_of(p + "0000").name) for p in sorted(by_province))
    pki = new_pki(provinces=provinces)
    certs: list[str] = []
    for prefix, codes in by_province.items():
        prov = pki.provinces[prefix]
        for code in codes:
            certs.append(prov.enrol(f"n{code}", code).tls_cert_pem)
    return pki.roots[0].to_bytes(), pki.bundle(expires=NOW + timedelta(days=7)), certs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2850)
    parser.add_argument("--quick", action="store_true", help="300 nodes, one repeat")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    nodes = 300 if args.quick else args.nodes
    repeats = 1 if args.quick else 3

    print(f"building a PKI with {nodes} nodes …", file=sys.stderr)
    root, bundle, certs = build(nodes)
    state = TrustState.from_pinned_root(root, NOW)
    accepted = state.accept(bundle, NOW)[1]
    n = len(accepted)

    accept = measure(lambda: len(state.accept(bundle, NOW)[1]), repeats=repeats, unit="nodes/s")
    (_, directory), peak, retained = traced_peak(lambda: state.accept(bundle, NOW))
    parse = measure(lambda: len(json.loads(bundle)["parts"]), repeats=repeats, unit="parses/s")
    peers = measure(
        lambda: sum(1 for c in certs if directory.authenticate_peer(c, NOW)), repeats=repeats, unit="peer checks/s"
    )

    signer = Ed25519Signer.generate()
    message = b"x" * 200
    sig = signer.sign(message)
    key: PublicKey = signer.public_key
    ed_verify = measure(lambda: [verify(key, "ed25519", message, sig) for _ in range(2000)] and 2000, unit="verifies/s")
    ca_cert = x509.load_pem_x509_certificate(
        accepted.root.provinces[sorted(accepted.root.provinces)[0]].ca_certificate.encode()
    )
    leaves = [x509.load_pem_x509_certificate(c.encode()) for c in certs[:200]]
    same_ca = [c for c in leaves if c.issuer == ca_cert.subject] or leaves[:1]

    def check_certs() -> int:
        for c in same_ca:
            try:
                c.verify_directly_issued_by(ca_cert)
            except Exception:  # noqa: BLE001, S112 - only the timing matters here
                continue
        return len(same_ca)

    cert_verify = measure(check_certs, unit="cert checks/s")

    result: dict[str, Any] = {
        "machine": machine_info(),
        "nodes": n,
        "provinces": len(accepted.root.provinces),
        "bundle_bytes": len(bundle),
        "accept": {**accept.to_json(), "seconds": accept.median_s},
        "accept_peak_python_bytes": peak,
        "directory_retained_python_bytes": retained,
        "authenticate_peer": peers.to_json(),
        "reference": {
            "ed25519_verify": ed_verify.to_json(),
            "certificate_signature_check": cert_verify.to_json(),
            "bundle_json_parse": parse.to_json(),
        },
        "goal": "accept a 2,850-node directory well under a second, in tens of MB",
    }
    path = write_result("directory", result, results_dir=args.results_dir)
    print(
        format_table(
            ["figure", "value"],
            [
                ["nodes", str(n)],
                ["bundle size", mib(len(bundle))],
                ["accept (verify whole directory)", f"{accept.median_s * 1000:.0f} ms ({si(accept.rate, ' nodes/s')})"],
                ["  peak Python memory during accept", mib(peak)],
                ["  memory the directory keeps", mib(retained)],
                ["authenticate_peer", si(peers.rate, "/s")],
                ["ref: Ed25519 verify", si(ed_verify.rate, "/s")],
                ["ref: P-256 certificate signature check", si(cert_verify.rate, "/s")],
                ["ref: JSON parse of the bundle", f"{parse.median_s * 1000:.0f} ms"],
            ],
        )
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
