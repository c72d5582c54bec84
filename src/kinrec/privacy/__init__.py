"""Privacy at ingest: keyed pseudonyms for user ids (:mod:`kinrec.privacy.pseudonym`) and
coarsened or dropped quasi-identifiers with a k-anonymity report
(:mod:`kinrec.privacy.quasi`). Privacy in training: user-level differential privacy for
models solved from sufficient statistics (:mod:`kinrec.privacy.dp`, imported where used, not
here: it builds on the models). docs/privacy.md says what they protect and what they do not."""

from kinrec.privacy.pseudonym import (
    KEY_ENV,
    PseudonymError,
    Pseudonymiser,
    load_pseudonymiser,
    pseudonymise_dataset,
    serving_pseudonymiser,
    store_is_pseudonymised,
)
from kinrec.privacy.quasi import (
    AnonymityReport,
    CoarsenRule,
    k_anonymity,
    parse_rule,
    protect_user_attributes,
)

__all__ = [
    "KEY_ENV",
    "AnonymityReport",
    "CoarsenRule",
    "PseudonymError",
    "Pseudonymiser",
    "k_anonymity",
    "load_pseudonymiser",
    "parse_rule",
    "protect_user_attributes",
    "pseudonymise_dataset",
    "serving_pseudonymiser",
    "store_is_pseudonymised",
]
