//! Phone numbers and subjects: the one [`Phone`] type (E.164, parsed with libphonenumber's
//! metadata, never guessed), masking for pages and logs, and phone-number subjects (`tel:+E164`)
//! that sign in without a directory entry. The only module that knows the `phonenumber` crate.

use std::fmt;

/// A phone number in E.164 form (`+447700900123`), as parsed by [`Phone::parse`], with its
/// region and the kind of line it is (by libphonenumber's metadata).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String, LineKind, Option<String>);

/// What a number is, as far as sending it a text message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineKind {
    /// A mobile number.
    Mobile,
    /// Fixed line or mobile: the region's numbering cannot tell (the USA, Canada).
    FixedLineOrMobile,
    /// Only "possible" (right length, not a valid number of its region): test and drama ranges
    /// such as +44 7700 900xxx.
    TestRange,
    /// Anything else (fixed line, premium rate, toll free, personal, VoIP, pager...).
    Other(&'static str),
}

impl LineKind {
    /// Whether a text message can reach such a number.
    pub fn receives_sms(self) -> bool {
        matches!(self, LineKind::Mobile | LineKind::FixedLineOrMobile)
    }
}

/// The region a number belongs to: among the regions of its country code (+44 is GB, GG, JE
/// and IM; +1 is 25 NANP countries), the one whose numbering plan has it; else the code's main
/// region.
fn region_of(number: &phonenumber::PhoneNumber) -> Option<String> {
    let regions = phonenumber::metadata::DATABASE.by_code(&number.country().code())?;
    let national = number.national().value().to_string();
    let has = |meta: &phonenumber::metadata::Metadata| {
        let kinds = meta.descriptors();
        kinds.general().is_match(&national)
            && [
                kinds.mobile(),
                kinds.fixed_line(),
                kinds.toll_free(),
                kinds.premium_rate(),
                kinds.shared_cost(),
                kinds.personal_number(),
                kinds.voip(),
                kinds.pager(),
                kinds.uan(),
                kinds.voicemail(),
            ]
            .into_iter()
            .flatten()
            .any(|kind| kind.is_match(&national))
    };
    regions
        .iter()
        .find(|meta| has(meta))
        .or_else(|| regions.iter().find(|meta| meta.is_main_country_for_code()))
        .or_else(|| regions.first())
        .map(|meta| meta.id().to_owned())
}

fn line_kind(number: &phonenumber::PhoneNumber) -> LineKind {
    use phonenumber::Type;
    if !phonenumber::is_valid(number) {
        return LineKind::TestRange;
    }
    match number.number_type(&phonenumber::metadata::DATABASE) {
        Type::Mobile => LineKind::Mobile,
        Type::FixedLineOrMobile => LineKind::FixedLineOrMobile,
        Type::FixedLine => LineKind::Other("a fixed line"),
        Type::TollFree => LineKind::Other("a toll-free number"),
        Type::PremiumRate => LineKind::Other("a premium-rate number"),
        Type::SharedCost => LineKind::Other("a shared-cost number"),
        Type::PersonalNumber => LineKind::Other("a personal number"),
        Type::Voip => LineKind::Other("a VoIP number"),
        Type::Pager => LineKind::Other("a pager"),
        Type::Uan => LineKind::Other("a company number"),
        Type::Voicemail => LineKind::Other("a voicemail number"),
        _ => LineKind::Other("a number of unknown type"),
    }
}

/// An ISO 3166 region for numbers written without a country code (`[sms] default_region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(phonenumber::country::Id);

impl Region {
    pub fn parse(code: &str) -> Option<Region> {
        code.parse::<phonenumber::country::Id>().ok().map(Region)
    }
}

impl Phone {
    /// Parses a number as written in a user attribute or a form. The error says why it is
    /// refused, in words fit for a log line.
    pub fn parse(raw: &str, default_region: Option<Region>) -> Result<Phone, &'static str> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("empty");
        }
        // How people write a country code and a trunk zero: "(+44) 7700..." and "+44 (0)7700...".
        let cleaned = raw.replacen("(+", "+", 1);
        let cleaned = match cleaned.strip_prefix('+') {
            Some(rest) if cleaned.contains("(0)") => format!("+{}", rest.replacen("(0)", "", 1)),
            _ => cleaned,
        };
        let raw = cleaned.trim();
        // Only what people write in one phone number: digits, a leading +, spaces, dots, dashes
        // and brackets. No "tel:" URIs, no lists, no letters, no extensions.
        if !raw
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'))
        {
            return Err("unexpected characters (one number, digits only)");
        }
        if raw.matches('+').count() > 1 || (raw.contains('+') && !raw.starts_with('+')) {
            return Err("a + only at the start");
        }
        let region = match (raw.starts_with('+'), default_region) {
            (true, _) => None,
            (false, Some(region)) => Some(region.0),
            (false, None) => return Err("no country code and no [sms] default_region"),
        };
        let number = phonenumber::parse(region, raw).map_err(|_| "cannot be parsed")?;
        if number.extension().is_some() {
            return Err("extensions cannot receive text messages");
        }
        if !phonenumber::is_valid(&number) && !has_possible_length(&number) {
            return Err("not a number of its country (wrong length)");
        }
        let kind = line_kind(&number);
        let region = region_of(&number);
        Ok(Phone(
            number.format().mode(phonenumber::Mode::E164).to_string(),
            kind,
            region,
        ))
    }

    /// A number already in E.164 form (stored by this server): taken as it is.
    pub fn from_e164_unchecked(e164: impl Into<String>) -> Phone {
        Phone(e164.into(), LineKind::TestRange, None)
    }

    /// What kind of line this is.
    pub fn kind(&self) -> LineKind {
        self.1
    }

    /// Its ISO 3166 region ("GB", "US", "JM"), when the metadata names one.
    pub fn region(&self) -> Option<&str> {
        self.2.as_deref()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Whether the number starts with one of `prefixes` ("+44", "+1").
    pub fn has_prefix_in(&self, prefixes: &[String]) -> bool {
        prefixes.iter().any(|p| self.0.starts_with(p.as_str()))
    }

    /// Masked, keeping the country code and the last `visible` digits.
    pub fn masked(&self, visible: usize) -> String {
        mask_phone_showing(&self.0, visible)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// libphonenumber's "possible number": the national number has a length used in its country.
/// Accepted besides fully valid numbers so that ranges reserved for testing and drama
/// (+44 7700 900xxx, the demo's) work; the country code must still exist.
fn has_possible_length(number: &phonenumber::PhoneNumber) -> bool {
    let national = number.national();
    let digits = national.value().to_string().len() + usize::from(national.zeros());
    let code = number.country().code();
    let Some(regions) = phonenumber::metadata::DATABASE.by_code(&code) else {
        return false;
    };
    regions.iter().any(|metadata| {
        let kinds = metadata.descriptors();
        [Some(kinds.general()), kinds.mobile(), kinds.fixed_line()]
            .into_iter()
            .flatten()
            .any(|kind| {
                kind.possible_length()
                    .iter()
                    .any(|&len| usize::from(len) == digits)
            })
    })
}

/// Subjects that are a verified phone number rather than a directory user start with this
/// (phone-number sign-in, WSO2's SendOTPDirectlyToMobile); directory names may not.
pub const PHONE_SUBJECT_PREFIX: &str = "tel:";

/// Whether `user` is a phone-number subject rather than a directory user.
pub fn is_phone_subject(user: &str) -> bool {
    user.starts_with(PHONE_SUBJECT_PREFIX)
}

/// A subject as log lines show it: a phone-number subject is masked like any number.
pub fn subject_for_log(user: &str) -> String {
    match user.strip_prefix(PHONE_SUBJECT_PREFIX) {
        Some(number) => format!("{PHONE_SUBJECT_PREFIX}{}", mask_phone(number)),
        None => user.to_owned(),
    }
}

/// Masks a phone number for logs and pages: the country code and the last four digits stay.
///
/// ```
/// assert_eq!(gatehouse::base::phone::mask_phone("+447700900123"), "+44******0123");
/// assert_eq!(gatehouse::base::phone::mask_phone("+15551234567"), "+1******4567");
/// ```
pub fn mask_phone(number: &str) -> String {
    mask_phone_showing(number, 4)
}

/// Masks a phone number keeping the country code and the last `visible` digits (`[sms]
/// visible_digits`, at most 4).
///
/// ```
/// assert_eq!(gatehouse::base::phone::mask_phone_showing("+447700900123", 2), "+44********23");
/// assert_eq!(gatehouse::base::phone::mask_phone_showing("+447700900123", 0), "+44**********");
/// ```
pub fn mask_phone_showing(number: &str, visible: usize) -> String {
    let visible = visible.min(4);
    let chars: Vec<char> = number.chars().collect();
    let keep_head = match number.strip_prefix('+') {
        Some(rest) => 1 + country_code_len(rest),
        None => 0,
    };
    // Too short to show the tail and still hide at least three digits: hide everything.
    if chars.len() < keep_head + visible + 3 {
        return "*".repeat(chars.len());
    }
    let tail = chars.len() - visible;
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < keep_head || i >= tail { *c } else { '*' })
        .collect()
}

/// Length of the E.164 country calling code at the start of `digits` (ITU-T E.164 zones).
fn country_code_len(digits: &str) -> usize {
    let d: Vec<u8> = digits
        .bytes()
        .take(2)
        .map(|b| b.wrapping_sub(b'0'))
        .collect();
    match d.as_slice() {
        [1, ..] | [7, ..] => 1,
        [2, 0] | [2, 7] => 2,
        [3, 0..=4] | [3, 6] | [3, 9] => 2,
        [4, 0] | [4, 1] | [4, 3..=9] => 2,
        [5, 1..=8] => 2,
        [6, 0..=6] => 2,
        [8, 1] | [8, 2] | [8, 4] | [8, 6] => 2,
        [9, 0..=5] | [9, 8] => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_kinds_of_line() {
        let mobile = Phone::parse("+447400123456", None).unwrap();
        assert_eq!(
            (mobile.region(), mobile.kind()),
            (Some("GB"), LineKind::Mobile)
        );
        let premium = Phone::parse("+449098790123", None).unwrap();
        assert!(!premium.kind().receives_sms(), "{premium:?}");
        let jamaica = Phone::parse("+18765550123", None).unwrap();
        assert_eq!(jamaica.region(), Some("JM"));
        let drama = Phone::parse("+447700900123", None).unwrap();
        assert_eq!(drama.kind(), LineKind::TestRange);
        for written in [
            "+44 (0)7400 123456",
            "(+44)7400123456",
            "(+44) 7400 123 456",
        ] {
            assert_eq!(
                Phone::parse(written, None).unwrap().as_str(),
                "+447400123456",
                "{written}"
            );
        }
    }

    #[test]
    fn phone_masking_keeps_country_and_last_four() {
        assert_eq!(mask_phone("+447700900123"), "+44******0123");
        assert_eq!(mask_phone("+15551234567"), "+1******4567");
        assert_eq!(mask_phone("+353861234567"), "+353*****4567");
        assert_eq!(mask_phone("07700900123"), "*******0123");
        assert_eq!(mask_phone("12345"), "*****");
    }
}
