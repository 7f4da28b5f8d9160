"""Domain errors: raised by pure code, translated to 4xx or dead letters at the edges."""


class DomainError(Exception):
    """Base class for every error the domain raises on purpose."""


class InvalidMoney(DomainError):
    """An amount or currency that cannot be money (float, negative, unknown ISO code)."""


class InvalidEvent(DomainError):
    """A decoded record that does not make a valid domain event."""


class NotFound(DomainError):
    """The thing named does not exist, or the caller may not know that it does (404)."""


class OfferNotFound(NotFound):
    def __init__(self, offer_id: str) -> None:
        super().__init__(f"no offer {offer_id}")
        self.offer_id = offer_id


class CreatorNotFound(NotFound):
    def __init__(self, creator_id: str) -> None:
        super().__init__(f"no creator {creator_id}")
        self.creator_id = creator_id


class Conflict(DomainError):
    """A command that does not fit the current state of what it names (409)."""

    # The answer's machine-readable ``error``; a subclass names a case clients act on.
    code: str = "conflict"


class OfferNotAcceptable(Conflict):
    def __init__(self, status: str) -> None:
        super().__init__(f"offer is {status}: only a valued offer with a term sheet can be accepted")


class OfferLapsed(Conflict):
    code = "offer_lapsed"

    def __init__(self, valid_until: object) -> None:
        super().__init__(f"the offer lapsed: it stood until {valid_until}")


class OfferClosed(Conflict):
    """Declining or withdrawing an offer that is no longer open (accepted, paid, closed)."""

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"offer is {status}: only an open offer (not yet accepted) can be {action}")


class OfferNotPayable(Conflict):
    def __init__(self, status: str) -> None:
        super().__init__(f"offer is {status}: only an accepted offer can be paid out")


class CreatorExists(Conflict):
    def __init__(self, creator_id: str) -> None:
        super().__init__(f"creator {creator_id} exists")


class RuleViolation(DomainError):
    """Well-formed input that a business rule refuses; names the field at fault (422)."""

    def __init__(self, message: str, field: str, problem: str) -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem


class RecipientNotOfCreator(RuleViolation):
    def __init__(self) -> None:
        super().__init__(
            "unknown recipient for this creator", "recipient_id", "is not a recipient of the offer's creator"
        )


class RecipientCurrencyMismatch(RuleViolation):
    def __init__(self, currency: str) -> None:
        super().__init__("recipient currency differs from the offer's", "recipient_id", f"recipient takes {currency}")


class UnknownCreator(RuleViolation):
    def __init__(self) -> None:
        super().__init__("the creator is not known", "creator_id", "is not a known creator (POST /creators first)")


class ForeignCreator(RuleViolation):
    def __init__(self) -> None:
        super().__init__("a creator acts for itself only", "creator_id", "a creator may only ask for offers of its own")


class PayoutNotFound(NotFound):
    def __init__(self, payout_id: str) -> None:
        super().__init__(f"no payout {payout_id}")
        self.payout_id = payout_id


class PayoutNotRetryable(Conflict):
    """Only a deal whose every payout failed may be paid again (never two live payouts)."""

    code = "payout_not_retryable"


class PayoutNotCancellable(Conflict):
    """Only a payout whose outcome is unknown (parked, unknown, mid-call) may be cancelled."""

    code = "payout_not_cancellable"
