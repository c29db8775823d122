//! Celery timestamps (`eta`, `expires`, `date_done`): ISO-8601 in, Python `isoformat()` out.
//!
//! Celery writes `eta`/`expires` in the app timezone (MediaCMS: Europe/London, so `+01:00` in
//! summer) and a naive `eta=` argument goes out without any offset; the Python worker then reads
//! it in the app timezone (celery-wire §2.2). We do the same.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::London;

use super::message::DecodeError;

/// The timezone a naive timestamp is in (MediaCMS's `CELERY_TIMEZONE`).
pub const APP_TIMEZONE: chrono_tz::Tz = London;

/// Parse an `eta`/`expires` value: RFC 3339 / ISO-8601 with any offset (`Z`, `+01:00`), or a
/// naive date-time taken as Europe/London. The field name in errors is `eta`; callers that parse
/// another field use [`parse_celery_time_field`].
pub fn parse_celery_time(s: &str) -> Result<DateTime<Utc>, DecodeError> {
    parse_celery_time_field("eta", s)
}

/// [`parse_celery_time`] naming the header the value came from in the error.
pub fn parse_celery_time_field(field: &'static str, s: &str) -> Result<DateTime<Utc>, DecodeError> {
    let bad = || DecodeError::Time {
        field,
        value: s.chars().take(64).collect(),
    };
    let trimmed = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(t.with_timezone(&Utc));
    }
    // Python's isoformat also allows a space separator and offsets without seconds precision.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(t) = DateTime::parse_from_str(trimmed, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    let naive = parse_naive(trimmed).ok_or_else(bad)?;
    london_to_utc(naive).ok_or_else(bad)
}

fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// Localise a naive London wall-clock time. In the autumn overlap Python's `localize` (fold=0)
/// picks the earlier (BST) instant; in the spring gap it keeps the wall time with the pre-gap
/// offset, i.e. one hour later in UTC than the nominal BST reading.
fn london_to_utc(naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    match APP_TIMEZONE.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            let shifted = naive.checked_add_signed(chrono::Duration::hours(1))?;
            APP_TIMEZONE
                .from_local_datetime(&shifted)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        }
    }
}

/// Python's `datetime.isoformat()` of an aware UTC value: `2026-11-27T02:47:29.312565+00:00`,
/// microseconds only when non-zero (sub-microsecond precision is dropped, as Python has none).
pub fn format_celery_time(t: DateTime<Utc>) -> String {
    let micros = t.timestamp_subsec_micros();
    if micros == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        format!("{}.{micros:06}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn offsets_are_honoured() {
        assert_eq!(
            parse_celery_time("2026-07-01T13:00:10+01:00").unwrap(),
            utc("2026-07-01T12:00:10Z")
        );
        assert_eq!(
            parse_celery_time("2026-11-27T02:47:29.312565+00:00").unwrap(),
            utc("2026-11-27T02:47:29.312565Z")
        );
        assert_eq!(
            parse_celery_time("2026-11-27T08:17:29.5+05:30").unwrap(),
            utc("2026-11-27T02:47:29.5Z")
        );
    }

    #[test]
    fn naive_is_london() {
        // Summer: BST (+01:00); winter: GMT.
        assert_eq!(
            parse_celery_time("2026-07-01T12:00:00").unwrap(),
            utc("2026-07-01T11:00:00Z")
        );
        assert_eq!(
            parse_celery_time("2026-12-01T12:00:00.25").unwrap(),
            utc("2026-12-01T12:00:00.25Z")
        );
        // Autumn overlap: the earlier (BST) reading.
        assert_eq!(
            parse_celery_time("2026-10-25T01:30:00").unwrap(),
            utc("2026-10-25T00:30:00Z")
        );
        // Spring gap is accepted, not an error.
        assert!(parse_celery_time("2026-03-29T01:30:00").is_ok());
    }

    #[test]
    fn garbage_is_a_time_error() {
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00",
            "2026-07-01T25:00:00+00:00",
        ] {
            assert!(matches!(
                parse_celery_time(bad),
                Err(DecodeError::Time { field: "eta", .. })
            ));
        }
    }

    #[test]
    fn format_matches_python_isoformat() {
        assert_eq!(
            format_celery_time(utc("2026-11-27T02:47:29.312565Z")),
            "2026-11-27T02:47:29.312565+00:00"
        );
        assert_eq!(
            format_celery_time(utc("2026-11-27T02:47:29Z")),
            "2026-11-27T02:47:29+00:00"
        );
        assert_eq!(
            format_celery_time(utc("2026-11-27T02:47:29.000001999Z")),
            "2026-11-27T02:47:29.000001+00:00"
        );
    }
}
