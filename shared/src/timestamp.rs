//! RFC 3339 UTC timestamps with a `Z` suffix at PostgreSQL's precision (microseconds).

use serde::Serializer;
use time::{
    OffsetDateTime, PrimitiveDateTime, UtcOffset, format_description::FormatItem,
    macros::format_description,
};

const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

pub fn format(at: OffsetDateTime) -> String {
    let mut buffer = [0u8; LENGTH];
    match write(at, &mut buffer) {
        Some(text) => text.to_owned(),
        None => slow_format(at),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`
const LENGTH: usize = 27;

/// Every response carries two timestamps per task, so they are written digit by digit (the
/// general formatter took a tenth of a list request's CPU); years outside 0..=9999, which no
/// stored timestamp has, go through [`slow_format`].
fn write(at: OffsetDateTime, buffer: &mut [u8; LENGTH]) -> Option<&str> {
    let at = at.to_offset(UtcOffset::UTC);
    let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
    let mut put = |position: usize, value: u32, digits: u32| {
        for i in 0..digits {
            let digit = value / 10u32.pow(digits - 1 - i) % 10;
            buffer[position + i as usize] = b'0' + digit as u8;
        }
    };
    put(0, year, 4);
    put(5, u32::from(u8::from(at.month())), 2);
    put(8, u32::from(at.day()), 2);
    put(11, u32::from(at.hour()), 2);
    put(14, u32::from(at.minute()), 2);
    put(17, u32::from(at.second()), 2);
    put(20, at.microsecond(), 6);
    for (position, byte) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        buffer[position] = byte;
    }
    std::str::from_utf8(buffer).ok()
}

fn slow_format(at: OffsetDateTime) -> String {
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
    let mut buffer = [0u8; LENGTH];
    match write(*at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => serializer.serialize_str(&slow_format(*at)),
    }
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
    fn the_fast_path_agrees_with_the_general_formatter() {
        let mut at = datetime!(0000-01-01 00:00:00 UTC);
        // Every month and day of a leap and a normal year, odd times, the edges of the range.
        let step = time::Duration::seconds(86_399) + time::Duration::microseconds(987_654);
        while at.year() < 2 {
            assert_eq!(super::format(at), super::slow_format(at));
            at += step;
        }
        for at in [
            datetime!(9999-12-31 23:59:59.999999 UTC),
            datetime!(1970-01-01 00:00:00 UTC),
            datetime!(2026-11-28 12:00:00.000001 -05:00),
            datetime!(-0001-12-31 23:59:59 UTC),
        ] {
            assert_eq!(super::format(at), super::slow_format(at));
        }
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
