//! RFC 3339 UTC timestamps with a `Z` suffix at PostgreSQL's precision (microseconds).

use serde::Serializer;
use time::{
    OffsetDateTime, PrimitiveDateTime, UtcOffset, format_description::FormatItem,
    macros::format_description,
};

const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

pub fn format(at: OffsetDateTime) -> String {
    // Formatting a UTC date with this description cannot fail for years 0..=9999.
    at.to_offset(UtcOffset::UTC)
        .format(RFC3339_MICROS)
        .unwrap_or_default()
}

/// The inverse of [`format`], for exactly the text it produces (anything else is `None`), so a
/// client's copy of a timestamp can be compared with the stored one. Years before 1 are `None`:
/// no stored timestamp has one, and PostgreSQL rejects those before 4713 BC.
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    let at = PrimitiveDateTime::parse(text, RFC3339_MICROS)
        .ok()?
        .assume_utc();
    (at.year() >= 1 && format(at) == text).then_some(at)
}

pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*at))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn formats_utc_with_microseconds_and_z() {
        let at = datetime!(2026-11-27 19:21:22.639 +01:00);
        assert_eq!(super::format(at), "2026-11-27T18:21:22.639000Z");
    }

    #[test]
    fn parses_exactly_what_it_formats() {
        let at = datetime!(2026-11-27 18:21:22.639001 UTC);
        assert_eq!(super::parse(&super::format(at)), Some(at));
        for other in [
            "2026-11-27T18:21:22.639Z",
            "2026-11-27T18:21:22.639001+00:00",
            "2026-11-27 18:21:22.639001Z",
            "-9999-01-01T00:00:00.000000Z",
            "0000-01-01T00:00:00.000000Z",
            "",
        ] {
            assert_eq!(super::parse(other), None, "{other}");
        }
    }
}
