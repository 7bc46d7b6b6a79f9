"""Trust (SPEC §2): signatures, the national root, provincial parts, the signed directory, node
identity. The verifying core (``signing``, ``dsse``, ``documents``, ``verifier``) takes bytes and an
explicit time and does no I/O; ``store`` and ``tls`` are the edges that read files and sockets."""
