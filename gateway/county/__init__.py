"""The county-facing side of a node (SPEC §7): API tokens and roles (:mod:`.auth`), the permission
table (:mod:`.permissions`) and the authenticated gRPC service (:mod:`.servicer`)."""
