"""One way to assemble a node's case parts: the store, the custody hook and the case service.

The node server (its case loop), the ``tongban case`` commands, the county API and the web inbox
all act on cases through :class:`~gateway.cases.service.CaseService`, with
:class:`~gateway.cases.custody_hook.CaseCustody` as its custody hook. :class:`CaseParts` builds
them the same way for each: the store and the custody service once, a service per use with a fresh
directory snapshot (the directory may be refreshed between two uses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import x25519

from gateway.cases.custody_hook import CaseCustody
from gateway.cases.service import ActionRecorder, CaseService
from gateway.cases.store import CaseStore
from gateway.errors import KeyFileError
from gateway.exchange.purposes import Profiles
from gateway.node import Node
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory


@dataclass(frozen=True)
class CaseParts:
    """A node's case store and custody hook, and :meth:`service` to act on its cases."""

    node: Node
    store: CaseStore
    custody: CaseCustody
    signer: Signer
    encryption_key: x25519.X25519PrivateKey | None
    directory: Callable[[], Directory]
    profiles: Profiles
    clock: Callable[[], datetime]

    @classmethod
    def build(
        cls,
        node: Node,
        *,
        signer: Signer,
        encryption_key: x25519.X25519PrivateKey | None,
        directory: Callable[[], Directory],
        profiles: Profiles,
        clock: Callable[[], datetime],
    ) -> CaseParts:
        cfg = node.config
        store = CaseStore(node.engine, node.keyring)
        custody = CaseCustody(
            cases=store,
            node_id=cfg.node_id,
            engine=node.engine,
            keyring=node.keyring,
            signer=signer,
            directory=directory,
            profiles=profiles,
            clock=clock,
            supervisors=cfg.case_supervisors,
        )
        return cls(node, store, custody, signer, encryption_key, directory, profiles, clock)

    @property
    def can_act(self) -> bool:
        """Whether :meth:`service` can be built (the node has its encryption key)."""
        return self.encryption_key is not None

    def service(self, *, recorder: ActionRecorder | None = None) -> CaseService:
        """A case service over a fresh directory snapshot (``KeyFileError`` without an encryption key);
        ``recorder``: see :class:`~gateway.cases.service.CaseService` (the county API's audit entries)."""
        if self.encryption_key is None:
            raise KeyFileError("this node has no encryption key: it cannot open case payloads")
        cfg = self.node.config
        return CaseService(
            node_id=cfg.node_id,
            division=cfg.division,
            store=self.store,
            keyring=self.node.keyring,
            directory=self.directory(),
            encryption_key=self.encryption_key,
            signer=self.signer,
            profiles=self.profiles,
            custody=self.custody,
            wall_clock=self.clock,
            supervisors=cfg.case_supervisors,
            recorder=recorder,
        )
