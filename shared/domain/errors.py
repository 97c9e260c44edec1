"""Domain errors: a stable machine `code` and a human `detail`, never an HTTP status.

The HTTP edge (`shared.http.problems`) maps codes to statuses; consumers and the CLI
report the same codes. Must not import any I/O framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    """What is wrong with one field of a request (`field` is a dotted path)."""

    field: str
    message: str


class DomainError(Exception):
    """A business refusal. Subclasses fix `code`; `detail` explains this instance.

    `errors` names the request fields at fault, when the refusal is about some.
    """

    code: ClassVar[str] = "domain_error"

    def __init__(self, detail: str, *, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class InvalidRequest(DomainError):
    """A request a use case cannot act on (a missing or contradictory field)."""

    code = "validation_error"


class UnknownEventType(DomainError):
    code = "unknown_event_type"


class UnknownSchema(DomainError):
    """A `dataschema` that names no published version of the event's type."""

    code = "unknown_schema"


class UnsupportedEventType(DomainError):
    """A known event type that this service does not take posts of."""

    code = "unsupported_event_type"


class TransitionNotAllowed(DomainError):
    code = "transition_not_allowed"


class PriceExceedsApprovedQuote(DomainError):
    code = "price_exceeds_approved_quote"


class EventTimeBeforePrevious(DomainError):
    code = "event_time_before_previous"


class EventTimeInFuture(DomainError):
    code = "event_time_in_future"


class EventTimeTooOld(DomainError):
    """`time` is further behind the server's clock than the offline-sync grace."""

    code = "event_time_too_old"


class OrderEventLimitReached(DomainError):
    """The order holds the most events one order may hold."""

    code = "order_event_limit_reached"


class UnknownContactRef(DomainError):
    """`contact_ref` is not a contact the vault holds for the order's customer."""

    code = "unknown_contact_ref"


class UnreadableEvent(DomainError):
    """The envelope as it would be stored fails the model its consumers read with."""

    code = "unreadable_event"


class NotOrderParticipant(DomainError):
    """The actor is not this order's customer or assigned technician.

    Mapped to 404 at the edge so that other people's orders are not revealed.
    """

    code = "order_not_found"


class ActorNotAllowed(DomainError):
    """The actor's role may not post this event type at all (403)."""

    code = "actor_not_allowed"


class Forbidden(DomainError):
    """The caller may not read what they asked for (another customer's listing)."""

    code = "forbidden"


class OrderNotFound(DomainError):
    code = "order_not_found"


class VersionConflict(DomainError):
    """Another write won the race, or `expected_version` is stale."""

    code = "version_conflict"

    def __init__(self, detail: str, *, current_version: int) -> None:
        super().__init__(detail)
        self.current_version = current_version


class DuplicateEventConflict(DomainError):
    """The event id was already stored with different content."""

    code = "duplicate_event_conflict"


class QuoteNotCurrent(DomainError):
    """A quote decision names a `priced` event that is not the quote awaiting one."""

    code = "quote_not_current"


class CurrencyMismatch(DomainError):
    """A completion is charged in another currency than the approved quote."""

    code = "currency_mismatch"


class TechnicianDeclinedOrder(DomainError):
    """The order would be assigned to a technician who already declined it."""

    code = "technician_declined_order"


class WarrantyWindowExpired(DomainError):
    """A reopen comes later than the warranty window after the final completion."""

    code = "warranty_window_expired"


class AlreadyRated(DomainError):
    """An order is rated once."""

    code = "already_rated"


class DuplicateComplaint(DomainError):
    """A complaint id was already filed on this order."""

    code = "duplicate_complaint"


class ComplaintNotOpen(DomainError):
    """A resolution names a complaint that was never filed or is already resolved."""

    code = "complaint_not_open"
