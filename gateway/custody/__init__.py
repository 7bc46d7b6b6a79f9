"""Custody of cases (SPEC §6): an append-only chain of signed events per case, folded into its holder.

Pure: no database, no gRPC, no clock. :mod:`.events` is what is signed and how; :mod:`.chain`
checks events against the directory and the transfer rules and folds them into a
:class:`~gateway.custody.chain.CustodyState`.
"""
