"""Node-to-node exchange (SPEC §3, §4): what may be sent, to whom, and how it is protected.

The sending side runs, in this order::

    domain values ─▶ wire (gateway.wire) ─▶ purposes.minimise ─▶ [e2e.seal_to] ─▶ envelope (sign) ─▶ outbox

and the receiving side runs the mirror image: verify the envelope, then ``purposes.parse_payload``
(which refuses any field the purpose does not declare), then ``e2e.open_sealed`` for encrypted
purposes, then the domain.

* :mod:`gateway.exchange.purposes` — purpose profiles: the declared, versioned allow-lists of
  fields per purpose (``gateway/data/purposes.toml``), minimisation and the receiver's field check.
* :mod:`gateway.exchange.tokens` — pairwise, per-period keys and the ID-number tokens derived from
  them, so exact matching never sends an ID number and a token means nothing to a third node.
* :mod:`gateway.exchange.e2e` — HPKE (RFC 9180) encryption of case payloads to the recipient
  node's directory encryption key, so relays, proxies and logs see only ciphertext.
* ``envelope``, ``receiver``, ``outbox``, ``delivery``, ``retry``, ``transport`` — signing, checking,
  storing and moving envelopes; ``relay`` — moving them through a store-and-forward hub that can
  neither read nor forge them.

The ``purposes`` and ``tokens`` cores are pure (no sockets, no database, no clock).
"""
