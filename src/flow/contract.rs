//! The names scripts and the host agree on: working parameters and properties the host reads.
//! A script that uses one of these names gets the host's meaning.

/// Working parameter: the masked number a code went to; pages show it.
pub const SENT_TO: &str = "sent_to";

/// Working parameter: "yes" asks the page to offer the method `getAlternativeAuthenticationMethod`
/// names (WSO2's redirectToMultiOptionPageOnFailure).
pub const OFFER_ALTERNATIVES: &str = "offer_alternatives";

/// Script property (WSO2's ResendEnable): "false" turns the "Send a new code" button off.
pub const RESEND_ENABLE: &str = "ResendEnable";
