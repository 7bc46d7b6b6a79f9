"""The county-facing side of a node (SPEC §7): API tokens and roles (:mod:`.auth`), client
certificates of the node's county CA (:mod:`.certs`), the permission table (:mod:`.permissions`),
the pure rules of what each caller sees and may do (:mod:`.views`), the wire converter
(:mod:`.wire`) and the authenticated gRPC service (:mod:`.servicer`)."""
