//! The one parser of durations, on the command line (`--ttl`, `--timeout`, `--lock-wait`, the
//! server's periods, …) and in the objects the server reads (a Backup's `ttl`, a location's
//! `validationFrequency`, a schedule's `@every`), with the syntax of Go's `time.ParseDuration`,
//! which Velero uses for both: a sequence of decimal numbers, each with an optional fraction and a unit
//! (`720h`, `1h30m`, `1.5h`, `90s`, `300ms`), or a bare `0`.
//!
//! Units: `ns`, `us` (also `µs` and `μs`), `ms`, `s`, `m`, `h`. There is no day: Velero writes
//! three days as `72h`. The longest duration is Go's, `2562047h47m16.854775807s`
//! (`i64::MAX` nanoseconds), so everything taken here is something Velero would take too, and
//! nothing wraps around or panics on the way.
//!
//! What differs from Go, on purpose: a negative duration (`-5s`) is refused, since no flag has a
//! use for one; and a fraction finer than a nanosecond is truncated with exact integer
//! arithmetic where Go goes through a float (the two agree to the nanosecond but for rare
//! roundings, e.g. `0.3333333333333333333h`).
//!
//! Writing durations back as Go writes them is [`go_duration`].

use std::time::Duration;

/// What the error messages offer instead of a text that is not a duration.
const ACCEPTED: &str =
    "write numbers with units, e.g. 30s, 1h30m, 1.5h or 720h (units: ns, us, µs, ms, s, m, h)";

/// Nanoseconds per unit, as Go's `time` package names them.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 MICRO SIGN
    ("μs", 1_000), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// The longest duration, Go's: `i64::MAX` nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Fraction digits kept: 18 digits make a part below a nanosecond even for hours
/// (3.6e12 ns × 1e-18), and keep `fraction × unit` well inside a `u128`.
const MAX_FRACTION_DIGITS: u32 = 18;

/// Why a text is not a duration; each message names the text and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("an empty value is not a duration; {ACCEPTED}")]
    Empty,
    #[error("`{text}` is not a duration; {ACCEPTED}")]
    Invalid { text: String },
    #[error("`{text}` is not a duration: a number has no unit; {ACCEPTED}")]
    MissingUnit { text: String },
    #[error(
        "`{text}` is not a duration: `{unit}` is not a unit; the units are ns, us, µs, ms, s, m and h (three days are 72h)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("`{text}` is not a duration here: it is negative; give zero or more, e.g. 0 or 30s")]
    Negative { text: String },
    #[error(
        "`{text}` is not a duration: it is longer than the longest one, 2562047h47m16.854775807s (about 292 years)"
    )]
    Overflow { text: String },
    #[error("`{text}` is zero, and this needs a duration longer than that, e.g. 30s or 1m")]
    Zero { text: String },
}

/// Parses `text` (Go's syntax, see the module doc).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_with_bare_unit(text, None)
}

/// Parses `text` as [`parse`] does, refusing zero: for timeouts and poll intervals, where zero
/// would mean "never wait" or "spin".
pub fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    match parse(text)? {
        d if d.is_zero() => Err(DurationError::Zero {
            text: text.to_string(),
        }),
        d => Ok(d),
    }
}

/// Parses `text` as [`parse`] does, and also a bare whole number as seconds (`30`): for the
/// flags that took seconds before they took Go durations, so their scripts keep working.
pub fn parse_or_seconds(text: &str) -> Result<Duration, DurationError> {
    parse_with_bare_unit(text, Some(1_000_000_000))
}

fn parse_with_bare_unit(text: &str, bare_unit: Option<u128>) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid {
        text: text.to_string(),
    };
    let mut rest = match text.as_bytes().first() {
        None => return Err(DurationError::Empty),
        Some(b'-') => {
            return Err(DurationError::Negative {
                text: text.to_string(),
            });
        }
        Some(b'+') => &text[1..],
        Some(_) => text,
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    if let Some(unit) = bare_unit
        && rest.bytes().all(|b| b.is_ascii_digit())
    {
        let n: u128 = rest.parse().map_err(|_| DurationError::Overflow {
            text: text.to_string(),
        })?;
        return to_duration(n.checked_mul(unit), text);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // [0-9]*
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        // (\.[0-9]*)?
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        // The unit: everything up to the next number.
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                text: text.to_string(),
            });
        }
        let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            });
        };
        let overflow = || DurationError::Overflow {
            text: text.to_string(),
        };
        // A whole part longer than 39 digits does not fit a u128, and is an overflow anyway.
        let whole: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| overflow())?
        };
        let kept = &frac_digits[..frac_digits.len().min(MAX_FRACTION_DIGITS as usize)];
        let fraction_nanos = if kept.is_empty() {
            0
        } else {
            let numerator: u128 = kept.parse().map_err(|_| invalid())?;
            // Cannot overflow: numerator < 10^18 and nanos_per_unit < 2^42.
            numerator * nanos_per_unit / 10u128.pow(kept.len() as u32)
        };
        total = whole
            .checked_mul(nanos_per_unit)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(total))
            .filter(|&n| n <= MAX_NANOS)
            .ok_or_else(overflow)?;
        rest = after;
    }
    to_duration(Some(total), text)
}

/// The duration of `nanos`, or the overflow error for `text` when it is past Go's longest.
fn to_duration(nanos: Option<u128>, text: &str) -> Result<Duration, DurationError> {
    match nanos.filter(|&n| n <= MAX_NANOS) {
        Some(n) => {
            let secs = u64::try_from(n / 1_000_000_000).expect("at most i64::MAX / 1e9");
            let sub = u32::try_from(n % 1_000_000_000).expect("below 1e9");
            Ok(Duration::new(secs, sub))
        }
        None => Err(DurationError::Overflow {
            text: text.to_string(),
        }),
    }
}

/// A duration as Go's `time.Duration` writes it, the form Kubernetes stores (`72h0m0s`,
/// `1h30m0s`, `5m0s`, `30s`, `1.5s`, `250ms`, `0s`).
pub fn go_duration(d: Duration) -> String {
    /// `n / unit` with the remainder as decimals, trailing zeros dropped (`1500, 1000` → `1.5`).
    fn decimal(n: u128, unit: u128) -> String {
        let (whole, rest) = (n / unit, n % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let fraction = format!("{rest:0digits$}");
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    }
    let nanos = d.as_nanos();
    match nanos {
        0 => "0s".into(),
        1..1_000 => format!("{nanos}ns"),
        1_000..1_000_000 => format!("{}µs", decimal(nanos, 1_000)),
        1_000_000..1_000_000_000 => format!("{}ms", decimal(nanos, 1_000_000)),
        _ => {
            let secs = d.as_secs();
            let (hours, minutes) = (secs / 3600, secs % 3600 / 60);
            let seconds = decimal(
                u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()),
                1_000_000_000,
            );
            match (hours, minutes) {
                (0, 0) => format!("{seconds}s"),
                (0, m) => format!("{m}m{seconds}s"),
                (h, m) => format!("{h}h{m}m{seconds}s"),
            }
        }
    }
}

/// A duration field of an object (`1m0s`, `720h`, `90s`; `0` is zero), surrounding blanks
/// allowed; `None` when it is not one (the caller says what it does instead).
pub fn parse_duration(text: &str) -> Option<Duration> {
    parse(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: u64 = 1;
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;

    fn nanos(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    #[test]
    fn go_s_examples_parse_to_go_s_values() {
        // The cases of Go's `time.TestParseDuration` but the negative ones and
        // `0.3333333333333333333h` (a float rounding of Go's; see the module doc).
        for (text, want) in [
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("+5s", 5 * S),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            (
                "1h2m3s4ms5us6ns",
                H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52763797000 * NS),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX as u64),
            ("9223372036854775.807us", i64::MAX as u64),
            ("9223372036854.775807ms", i64::MAX as u64),
            ("0.100000000000000000000h", 6 * M),
        ] {
            assert_eq!(parse(text), Ok(nanos(want)), "{text}");
        }
    }

    #[test]
    fn velero_s_ttls_parse() {
        for (text, want) in [
            ("720h", 720 * H),
            ("720h0m0s", 720 * H),
            ("1h30m", 90 * M),
            ("1.5h", 90 * M),
            ("90s", 90 * S),
            ("2562047h47m16.854775807s", i64::MAX as u64),
        ] {
            assert_eq!(parse(text), Ok(nanos(want)), "{text}");
        }
    }

    #[test]
    fn each_unit_has_its_length() {
        for (unit, want) in [
            ("ns", NS),
            ("us", US),
            ("µs", US),
            ("μs", US),
            ("ms", MS),
            ("s", S),
            ("m", M),
            ("h", H),
        ] {
            assert_eq!(parse(&format!("2{unit}")), Ok(nanos(2 * want)), "{unit}");
        }
    }

    #[test]
    fn overflow_is_refused_not_wrapped() {
        for text in [
            "9999999999999999999h",
            "106751991167h",
            "2562048h",
            "2562047h47m16.854775808s",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "99999999999999999999999999999999999999999999h",
        ] {
            assert_eq!(
                parse(text),
                Err(DurationError::Overflow { text: text.into() }),
                "{text}"
            );
        }
        let err = parse("106751991167h").unwrap_err().to_string();
        assert!(
            err.contains("`106751991167h`") && err.contains("longest"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_refused_naming_the_text_and_the_syntax() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        for text in [
            "-", "+", ".", ".s", "+.s", "s", "soon", "h1", " 5s", "5s ", "1h 30m",
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                matches!(
                    err,
                    DurationError::Invalid { .. }
                        | DurationError::UnknownUnit { .. }
                        | DurationError::Negative { .. }
                ),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("`{text}`")), "{err}");
        }
        let err = parse("soon").unwrap_err().to_string();
        assert!(err.starts_with("`soon` is not a duration"), "{err}");
        assert!(
            err.contains("1h30m") && err.contains("ms, s, m, h"),
            "{err}"
        );
    }

    #[test]
    fn a_number_needs_a_unit_and_a_known_one() {
        assert_eq!(
            parse("3"),
            Err(DurationError::MissingUnit { text: "3".into() })
        );
        assert_eq!(
            parse("1h30"),
            Err(DurationError::MissingUnit {
                text: "1h30".into()
            })
        );
        assert_eq!(
            parse("3d"),
            Err(DurationError::UnknownUnit {
                text: "3d".into(),
                unit: "d".into()
            })
        );
        let err = parse("3d").unwrap_err().to_string();
        assert!(
            err.contains("`d` is not a unit") && err.contains("72h"),
            "{err}"
        );
    }

    #[test]
    fn negative_durations_are_refused() {
        for text in ["-5s", "-1.5h", "-0"] {
            assert_eq!(
                parse(text),
                Err(DurationError::Negative { text: text.into() }),
                "{text}"
            );
        }
    }

    #[test]
    fn zero_is_refused_where_a_wait_is_needed() {
        assert_eq!(
            parse_positive("0s"),
            Err(DurationError::Zero { text: "0s".into() })
        );
        assert_eq!(
            parse_positive("0"),
            Err(DurationError::Zero { text: "0".into() })
        );
        assert_eq!(parse_positive("1ns"), Ok(nanos(1)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bare_seconds_only_where_asked_for() {
        assert_eq!(parse_or_seconds("30"), Ok(nanos(30 * S)));
        assert_eq!(parse_or_seconds("5m"), Ok(nanos(5 * M)));
        assert_eq!(parse_or_seconds("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_or_seconds("9999999999999999999"),
            Err(DurationError::Overflow {
                text: "9999999999999999999".into()
            })
        );
        assert!(matches!(
            parse_or_seconds("99999999999999999999999999999999999999999999"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(parse("30").is_err());
    }

    #[test]
    fn durations_are_written_as_go_writes_them() {
        let d = |s: u64| Duration::from_secs(s);
        assert_eq!(go_duration(d(72 * 3600)), "72h0m0s");
        assert_eq!(go_duration(d(5400)), "1h30m0s");
        assert_eq!(go_duration(d(300)), "5m0s");
        assert_eq!(go_duration(d(30)), "30s");
        assert_eq!(go_duration(d(0)), "0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(7)), "7ns");
    }

    #[test]
    fn duration_fields_of_objects_parse() {
        assert_eq!(parse_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_duration("720h0m0s"),
            Some(Duration::from_secs(720 * 3600))
        );
        assert_eq!(parse_duration(" 90s "), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("3d"), None);
    }

    #[test]
    fn what_is_written_reads_back() {
        for secs in [0, 1, 59, 60, 3599, 3600, 5400, 720 * 3600] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&go_duration(d)), Ok(d), "{secs}s");
        }
        let d = Duration::from_millis(1500);
        assert_eq!(parse(&go_duration(d)), Ok(d));
    }
}
