"""Tongban's one error tree.

Every error the gateway raises on purpose is a :class:`GatewayError`. Each class carries

* ``code`` — a stable, machine-readable name (used in logs, metrics, row-level rejections and,
  later, gRPC status details);
* ``public_message`` — a sentence that is safe to show anyone: it never contains personal data;
* ``exit_code`` — what the CLI returns when this error reaches its top level.

A ``detail`` string may be attached when raising. Details are shown to operators, so they must not
contain personal data either: name the field, the row number or the division code, never the value
of an ID number, a name or a birth date. Boundaries (CLI, gRPC, adapter rows) map errors exactly once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class GatewayError(Exception):
    """Root of every deliberate Tongban error."""

    code: ClassVar[str] = "gateway_error"
    public_message: ClassVar[str] = "the gateway refused the request"
    exit_code: ClassVar[int] = 1

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.detail:
            return f"{self.public_message}: {self.detail}"
        return self.public_message


# --- Bad input: records, identifiers, division codes -------------------------------------------


class InputError(GatewayError):
    """Input that breaks a domain rule. Nothing was changed."""

    code = "invalid_input"
    public_message = "the input breaks a domain rule"
    exit_code = 65  # EX_DATAERR


class IdProblem(StrEnum):
    """Why a resident ID number (公民身份号码, GB 11643) is invalid. Values are stable codes."""

    EMPTY = "empty"
    LENGTH = "wrong_length"
    CHARACTER = "bad_character"
    CHECK_CHARACTER = "bad_check_character"
    BIRTH_DATE = "bad_birth_date"
    BIRTH_IN_FUTURE = "birth_date_in_future"
    UNKNOWN_PREFIX = "unknown_division_prefix"


_ID_PROBLEM_TEXT: dict[IdProblem, str] = {
    IdProblem.EMPTY: "the ID number is empty",
    IdProblem.LENGTH: "the ID number must have 18 characters",
    IdProblem.CHARACTER: "the ID number may hold only digits, with X allowed as the last character",
    IdProblem.CHECK_CHARACTER: "the ID number's check character (ISO 7064 MOD 11-2) does not match",
    IdProblem.BIRTH_DATE: "the ID number's digits 7-14 are not a real date",
    IdProblem.BIRTH_IN_FUTURE: "the ID number's birth date is in the future",
    IdProblem.UNKNOWN_PREFIX: "the ID number's first six digits are not a division code that ever existed",
}


class InvalidIdNumber(InputError):
    """A resident ID number that fails GB 11643. ``reason`` says exactly which rule."""

    code = "invalid_id_number"
    public_message = "invalid resident ID number"

    def __init__(self, reason: IdProblem) -> None:
        self.reason = reason
        super().__init__(_ID_PROBLEM_TEXT[reason])


class InvalidDivisionCode(InputError):
    """Not six digits, or not a code in the division table at all."""

    code = "invalid_division_code"
    public_message = "invalid administrative division code"


class RetiredDivision(InputError):
    """A code that existed but is no longer current; routing must follow its successors."""

    code = "retired_division"
    public_message = "the administrative division code is no longer in force"

    def __init__(self, division: str, successors: tuple[str, ...]) -> None:
        self.division = division
        self.successors = successors
        known = ", ".join(successors) if successors else "successor unknown"
        super().__init__(f"{division} (successors: {known})")


class SuccessorUnknown(InputError):
    """A retired code whose successor history does not record; an operator must add the link."""

    code = "division_successor_unknown"
    public_message = "the division code was retired and its successor is not known"


class AmbiguousSuccessor(InputError):
    """A retired code with several current successors: the record itself must say which one."""

    code = "division_successor_ambiguous"
    public_message = "the retired division code has several successors; choose one"

    def __init__(self, division: str, candidates: tuple[str, ...]) -> None:
        self.division = division
        self.candidates = candidates
        super().__init__(f"{division} -> {', '.join(candidates)}")


class InvalidRecord(InputError):
    """A child record whose fields contradict each other or a domain rule."""

    code = "invalid_record"
    public_message = "the child record is not valid"


class NotARoster(InputError):
    """A file that is not a child roster at all: empty, binary, an old-format workbook, or a table
    without a name column and an ID-number or birth-date column. The message never quotes a cell
    or a header of the file (a headerless file's first row is a child)."""

    code = "not_a_roster"
    public_message = "the file is not a child roster"


class UnreadableRoster(InputError):
    """A roster that cannot be read to its end: bytes that are not valid in the file's encoding,
    a damaged workbook, a SQL source that fails. Nothing from it is stored."""

    code = "unreadable_roster"
    public_message = "the roster cannot be read"


# --- Configuration -------------------------------------------------------------------------------


class ConfigError(GatewayError):
    code = "config_error"
    public_message = "the node configuration is not valid"
    exit_code = 78  # EX_CONFIG


class MappingInvalid(ConfigError):
    """A roster mapping file (``tongban roster import --mapping``) that cannot be used: not TOML,
    an unknown key or canonical field, a value of the wrong type."""

    code = "mapping_invalid"
    public_message = "the roster mapping file is not valid"


class BenchmarksUnavailable(ConfigError):
    """``tongban bench`` found no ``bench/`` package: the benchmarks ship with the source checkout,
    not with the installed software."""

    code = "benchmarks_unavailable"
    public_message = "the benchmarks (bench/) are not in this installation; run from a source checkout"


class ReaderUnavailable(ConfigError):
    """No roster reader is installed for the requested format (entry point group ``tongban.readers``)."""

    code = "reader_unavailable"
    public_message = "no roster reader is installed for this format"


# --- Storage -------------------------------------------------------------------------------------


class StorageError(GatewayError):
    code = "storage_error"
    public_message = "the node database refused the operation"
    exit_code = 74  # EX_IOERR


class SchemaOutOfDate(StorageError):
    code = "schema_out_of_date"
    public_message = "the node database schema is not at the version this software expects"


class SchemaTooNew(SchemaOutOfDate):
    """The database is stamped with a migration this software does not package: a newer Tongban
    migrated it. Nothing is changed; run that version (a database is never migrated downwards)."""

    code = "schema_too_new"
    public_message = "the node database was migrated by a newer Tongban than this one; run that version"


class DuplicateRecord(StorageError):
    code = "duplicate_record"
    public_message = "a record with this identity already exists"


class RecordNotFound(StorageError):
    code = "record_not_found"
    public_message = "no such record"


# --- Cryptography at rest ------------------------------------------------------------------------


class CryptoError(GatewayError):
    code = "crypto_error"
    public_message = "a cryptographic check failed"
    exit_code = 77


class DataKeyMissing(CryptoError):
    code = "data_key_missing"
    public_message = "the data key needed to read a stored record is not in the node's keyring"


class DecryptionFailed(CryptoError):
    code = "decryption_failed"
    public_message = "a stored record failed its integrity check"


class RowTampered(CryptoError):
    code = "row_tampered"
    public_message = "a stored record's index columns disagree with its sealed content"


# --- Trust: roots, provinces, directory, node identity (SPEC §2) ---------------------------------


class TrustError(GatewayError):
    """A trust document, signature, certificate or peer failed verification. Nothing was accepted."""

    code = "trust_error"
    public_message = "trust verification failed"
    exit_code = 77


class MalformedDocument(TrustError):
    code = "malformed_document"
    public_message = "the trust document is malformed"


class UnknownAlgorithm(TrustError):
    code = "unknown_algorithm"
    public_message = "the signature or key names an algorithm this node does not accept"


class BadSignature(TrustError):
    code = "bad_signature"
    public_message = "a signature does not verify"


class ThresholdNotMet(TrustError):
    code = "threshold_not_met"
    public_message = "not enough valid signatures from the required keys"


class RootVersionNotNext(TrustError):
    code = "root_version_not_next"
    public_message = "a new root must have exactly the next version number"


class RollbackRefused(TrustError):
    code = "rollback_refused"
    public_message = "refusing a document older than the one already trusted"


class DocumentExpired(TrustError):
    code = "document_expired"
    public_message = "the trust document has expired"


class UnknownProvince(TrustError):
    code = "unknown_province"
    public_message = "no provincial operator in the root governs this prefix"


class OutsidePrefix(TrustError):
    code = "outside_prefix"
    public_message = "an entry names a division outside its signer's prefix"


class DigestMismatch(TrustError):
    code = "digest_mismatch"
    public_message = "a directory part does not match the digest the directory lists"


class DuplicateNode(TrustError):
    code = "duplicate_node"
    public_message = "a node id or key id appears more than once in the directory"


class CertificateInvalid(TrustError):
    code = "certificate_invalid"
    public_message = "a certificate is not valid for its purpose"


class UnknownNode(TrustError):
    code = "unknown_node"
    public_message = "the node is not in the directory"


class NodeNotActive(TrustError):
    code = "node_not_active"
    public_message = "the node is suspended or revoked"


class KeyNotValid(TrustError):
    code = "key_not_valid"
    public_message = "the key is not valid for this node at this time"


class PeerMismatch(TrustError):
    code = "peer_mismatch"
    public_message = "the authenticated peer is not the node it claims to be"


class PeerNotAuthenticated(TrustError):
    """A node-to-node call without a verified TLS peer (no client certificate, or a handler reached
    outside the authenticating interceptor)."""

    code = "peer_not_authenticated"
    public_message = "the caller is not an authenticated node"


class DirectoryUnavailable(TrustError):
    """No verified directory is held: none was ever accepted, or the last good one was refused."""

    code = "directory_unavailable"
    public_message = "no verified directory is available"


class DirectoryFetchFailed(TrustError):
    """The directory source could not be read (missing file, HTTP error, timeout, too large)."""

    code = "directory_fetch_failed"
    public_message = "the directory could not be fetched from its source"


class KeyFileError(TrustError):
    code = "key_file_error"
    public_message = "a key file cannot be read (wrong passphrase, wrong format or missing)"


class WrongKey(TrustError):
    """A key offered to sign something it may not sign (e.g. a province key on a root draft)."""

    code = "wrong_key"
    public_message = "the key is not one this document may be signed with"


# --- The operators' key tool (keys/) -------------------------------------------------------------


class OperatorStateError(ConfigError):
    """An operator's or node's key directory is not in the state a ``tongban keys`` command needs:
    a file it needs is missing, or one it would create already exists (nothing is overwritten)."""

    code = "operator_state"
    public_message = "the key directory is not in the state this command needs"


# --- Exchange: envelopes, purposes, delivery (SPEC §3, §4) ----------------------------------------


class ExchangeError(GatewayError):
    """An envelope was refused. Each check a receiver runs has its own class; nothing was stored."""

    code = "exchange_error"
    public_message = "the envelope was refused"
    exit_code = 65


class EnvelopeMalformed(ExchangeError):
    code = "envelope_malformed"
    public_message = "the envelope cannot be parsed"


class EnvelopeTooLarge(ExchangeError):
    code = "envelope_too_large"
    public_message = "the envelope exceeds the size limit"


class SenderMismatch(ExchangeError):
    code = "sender_mismatch"
    public_message = "the envelope's sender is not the authenticated peer"


class SenderNotActive(ExchangeError):
    code = "sender_not_active"
    public_message = "the sender is not an active node in the directory"


class EnvelopeSignatureInvalid(ExchangeError):
    code = "envelope_signature_invalid"
    public_message = "the envelope's signature does not verify with a valid key of the sender"


class WrongRecipient(ExchangeError):
    code = "wrong_recipient"
    public_message = "the envelope is addressed to another node"


class PurposeNotAllowed(ExchangeError):
    code = "purpose_not_allowed"
    public_message = "the purpose is unknown or not allowed between these nodes"


class OutsideTimeWindow(ExchangeError):
    code = "outside_time_window"
    public_message = "the envelope is expired, not yet valid, or valid for too long"


class ReplayedMessage(ExchangeError):
    code = "replayed_message"
    public_message = "a message with this id was already received with different content"


class ForbiddenField(ExchangeError):
    code = "forbidden_field"
    public_message = "the payload carries a field its purpose does not declare"


class PayloadInvalid(ExchangeError):
    code = "payload_invalid"
    public_message = "the payload is not a valid message of its declared type"


class SealProblem(StrEnum):
    """Why an end-to-end encrypted payload (``tongban.v1.SealedPayload``) was not opened."""

    UNKNOWN_SUITE = "unknown_suite"  # a suite this node does not accept
    OTHER_RECIPIENT_KEY = "other_recipient_key"  # sealed to another key (another node, or a rotated key)
    MALFORMED = "malformed"  # too short to hold an encapsulated key and a tag
    DECRYPTION_FAILED = "decryption_failed"  # tampered, or sealed for another context: indistinguishable by design


class SealedPayloadRefused(ExchangeError):
    """An end-to-end encrypted payload this node cannot or must not open; ``reason`` says which check."""

    code = "sealed_payload_refused"
    public_message = "the end-to-end encrypted payload cannot be opened by this node"

    def __init__(self, reason: SealProblem, detail: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class RelayNotAllowed(ExchangeError):
    """An envelope arrived through a relay this node does not accept: not in ``[exchange] relays``
    (an empty list accepts none), or not an active directory node."""

    code = "relay_not_allowed"
    public_message = "the envelope came through a relay this node does not accept"


class RelayItemInvalid(ExchangeError):
    """A relayed item's routing fields (sender, recipient, message id) do not match the envelope
    sealed inside it, or the item cannot hold an envelope at all."""

    code = "relay_item_invalid"
    public_message = "the relayed item does not match the envelope it carries"


class ReceiptInvalid(ExchangeError):
    """Raised at the sender: a receipt that does not prove delivery of the message it was sent for
    (malformed, not signed by a valid key of the receiver, or naming another message or content)."""

    code = "receipt_invalid"
    public_message = "the receipt does not prove delivery of this message"


class DeliveryFailed(ExchangeError):
    """A delivery attempt failed; ``permanent`` says whether retrying can help."""

    code = "delivery_failed"
    public_message = "the message could not be delivered"

    def __init__(self, detail: str | None = None, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(detail)


class AuditChainBroken(GatewayError):
    code = "audit_chain_broken"
    public_message = "the audit log has been altered"
    exit_code = 77


# --- Custody chains (SPEC §6) ----------------------------------------------------------------------
#
# Raised by gateway.custody when an event or a chain does not prove who holds a case. Details name a
# case id, node ids, event kinds and hashes only: custody events carry no personal data.


class CustodyError(GatewayError):
    """A custody event or chain was refused: it does not prove who holds the case."""

    code = "custody_error"
    public_message = "the custody chain is not valid"
    exit_code = 65


class CustodyEventMalformed(CustodyError, InputError):
    """An event whose bytes are not a custody event: framing, canonical JSON, fields or values.
    Also an :class:`InputError`, as every wire message that cannot become a domain value is."""

    code = "custody_event_malformed"
    public_message = "the custody event is malformed"


class CustodyBrokenLink(CustodyError):
    """An event that does not name the hash of the event before it (reordered, spliced, another case)."""

    code = "custody_broken_link"
    public_message = "a custody event does not follow the event before it"


class CustodySignatureInvalid(CustodyError):
    """An event whose signature does not verify with the key it names."""

    code = "custody_bad_signature"
    public_message = "a custody event's signature does not verify"


class CustodyUnknownSigner(CustodyError):
    """The signer (node or provincial operator) or its key is not in the directory."""

    code = "custody_unknown_signer"
    public_message = "a custody event is signed by a node or key the directory does not list"


class CustodySignerNotActive(CustodyError):
    """A new event from a suspended or revoked node (history already held is judged by the chain rules)."""

    code = "custody_signer_not_active"
    public_message = "a custody event comes from a node that is suspended or revoked"


class CustodyKeyNotValid(CustodyError):
    """The key was not valid when the event says it was signed, or its rotation overlap has ended."""

    code = "custody_key_not_valid"
    public_message = "a custody event is signed with a key not valid for its time"


class CustodyIllegalTransition(CustodyError):
    """An event the custody rules do not allow in the state its predecessor leaves the case in."""

    code = "custody_illegal_transition"
    public_message = "the custody event is not allowed in the case's current state"


class NotInvolved(CustodyError):
    """The asker is not named in the case's chain (or this node holds no chain for the case)."""

    code = "custody_not_involved"
    public_message = "only the nodes involved in a case and their provincial operators may ask who holds it"
    exit_code = 77


class UnknownCase(CustodyError):
    """This node holds no custody chain for the case."""

    code = "custody_unknown_case"
    public_message = "this node holds no custody chain for the case"


class NotPermitted(CustodyIllegalTransition):
    """This node may not take the action now (not the holder, no offer for it, …)."""

    code = "custody_not_permitted"
    public_message = "this node may not take that custody action on the case now"


class OverrideRefused(CustodyIllegalTransition):
    """An operator override that the custody rules would refuse: the lost node is not revoked in
    the directory, is outside the operator's province, the key is no operator key, …"""

    code = "custody_override_refused"
    public_message = "the custody override is refused (see the reason)"


class CustodyForeignSigner(CustodyIllegalTransition):
    """A validly signed event by someone other than the actor the rule names (accept by a node the
    offer is not for, offer or close by a non-holder, override by an operator of another province)."""

    code = "custody_foreign_signer"
    public_message = "the custody event is signed by someone the rules do not allow to make it"


class CustodyTruncatedChain(CustodyError):
    """A chain that does not start at its genesis, or does not reach the head the verifier knows."""

    code = "custody_truncated_chain"
    public_message = "the custody chain is incomplete"


class CustodyForkedChain(CustodyError):
    """Two events by different signers on one predecessor where a single chain was expected."""

    code = "custody_forked_chain"
    public_message = "the custody chain forks"


class CustodyEquivocation(CustodyError):
    """One signer signed two different events on the same predecessor; ``proof`` holds both."""

    code = "custody_equivocation"
    public_message = "a signer signed two conflicting custody events"

    def __init__(self, detail: str | None = None, *, proof: object = None) -> None:
        self.proof = proof
        super().__init__(detail)


# --- Cases: types, lifecycle, statutory clocks (SPEC §6) ----------------------------------------


class CaseError(GatewayError):
    """A case operation was refused. Nothing was changed."""

    code = "case_error"
    public_message = "the case operation was refused"
    exit_code = 65


class InvalidCase(CaseError):
    """A case, application or action whose fields break a rule of the case types."""

    code = "invalid_case"
    public_message = "the case or application is not valid"


class IllegalTransition(CaseError):
    """The lifecycle table does not let this role take this action in the case's current state."""

    code = "illegal_transition"
    public_message = "this action is not allowed for this role in the case's current state"


class MaterialAlreadyRequested(IllegalTransition):
    """A second request for material on one case: the request is made once, in full (一次性告知)."""

    code = "material_already_requested"
    public_message = "material was already requested once for this case (一次性告知)"


class UnknownReasonCode(CaseError):
    """A decision or return citing a reason code the table lacks, or one not allowed for it."""

    code = "unknown_reason_code"
    public_message = "the reason code is unknown or not allowed for this decision"


class EventOutOfOrder(CaseError):
    """An action dated before the case's last event, or with a time that has no time zone."""

    code = "event_out_of_order"
    public_message = "the action's time is before the case's last event or has no time zone"


class CalendarNotCovered(CaseError):
    """A statutory clock needs a day in a year the holiday calendar has no table for."""

    code = "calendar_not_covered"
    public_message = "the working-day calendar does not cover this date; add that year's holiday table"
    exit_code = 78  # EX_CONFIG: the calendar data must be extended


class CaseNotFound(CaseError):
    """No case with this id on this node."""

    code = "case_not_found"
    public_message = "no such case on this node"


class NotEligible(CaseError):
    """An approval refused because the application does not qualify; ``detail`` lists reason codes."""

    code = "not_eligible"
    public_message = "the application does not qualify: decide 'not approved' with one of the reason codes"


class AttachmentRefused(CaseError):
    """An attachment whose chunks or bytes do not match its reference (size, chunk count, SHA-256)."""

    code = "attachment_refused"
    public_message = "an attachment does not match its reference and was refused"


class CaseMessageRefused(CaseError):
    """A case message from a peer that this node cannot apply: wrong nodes, unknown inner type,
    an event the other side may not take."""

    code = "case_message_refused"
    public_message = "a case message from a peer was refused"


# --- County API: callers of a node's county-facing service (SPEC §7) ----------------------------


class CountyAuthError(GatewayError):
    """A county API caller was refused. The message never echoes a token (or any part of one)."""

    code = "county_auth_error"
    public_message = "the county API refused the caller"
    exit_code = 77


class TokenMissing(CountyAuthError):
    code = "token_missing"
    public_message = "the call carries no API token (authorization: Bearer <token>)"


class TokenInvalid(CountyAuthError):
    """Malformed, unknown or revoked: one code for all three, so a caller learns nothing about which."""

    code = "token_invalid"
    public_message = "the API token is not valid on this node"


class CallDenied(CountyAuthError):
    code = "call_denied"
    public_message = "the caller's role may not make this call"


class ClientCertificateInvalid(CountyAuthError):
    """A county client certificate the node did not issue, does not know, or has revoked: one code
    for all, like :class:`TokenInvalid`."""

    code = "client_certificate_invalid"
    public_message = "the client certificate is not valid on this node"


class OutsideScope(InputError):
    """A roster row outside the caller's division scope (neither its registration nor its residence
    division is the county the token or certificate is scoped to)."""

    code = "outside_scope"
    public_message = "the row is outside the caller's division scope"


class CasesUnavailable(CaseError):
    """The node cannot act on cases: it is not enrolled, or lacks its signing or encryption key."""

    code = "cases_unavailable"
    public_message = "this node cannot act on cases (not enrolled, or without its signing or encryption key)"


class PermissionTableInvalid(ConfigError):
    """The county permission table (``gateway/data/county_permissions.toml``) is incomplete or names
    an unknown call or role: the table fails closed, it never falls back to a default."""

    code = "permission_table_invalid"
    public_message = "the county permission table is not valid"


# --- The web inbox (gateway.web) -------------------------------------------------------------------


class WebError(GatewayError):
    """A web inbox request was refused. Messages never echo a password, code, session id or any
    personal data; the pages show their own Chinese text for each code."""

    code = "web_error"
    public_message = "the web inbox refused the request"
    exit_code = 77


class SignInRefused(WebError):
    """Unknown user, wrong password or code, used or expired code, disabled account: one code for
    all, so a visitor learns nothing about which."""

    code = "signin_refused"
    public_message = "the user name or the password / sign-in code is wrong"


class SignInThrottled(WebError):
    code = "signin_throttled"
    public_message = "too many failed sign-ins: try again later"


class SessionInvalid(WebError):
    code = "session_invalid"
    public_message = "not signed in, or the session has ended"


class CsrfRefused(WebError):
    code = "csrf_refused"
    public_message = "the form was not sent by this inbox page (missing or wrong CSRF token)"


# --- Backup and restore (gateway.backup) -----------------------------------------------------------


class BackupInvalid(InputError):
    """A backup that is incomplete or damaged: no manifest (it never finished), a file missing, a
    size or SHA-256 that does not match the manifest. Checked before anything is restored."""

    code = "backup_invalid"
    public_message = "the backup is incomplete or damaged; nothing was restored"


class RestoreRefused(ConfigError):
    """A restore that would overwrite something — the target directory already holds a node or one
    of its files, the target database is not empty — or a target database of another kind."""

    code = "restore_refused"
    public_message = "refusing to restore over an existing node or into a non-empty database"


class BackupToolUnusable(ConfigError):
    """``pg_dump`` or ``pg_restore`` is missing, or older than the server or the dump it must read."""

    code = "backup_tool_unusable"
    public_message = "the PostgreSQL client tool a backup or restore needs is missing or too old"
