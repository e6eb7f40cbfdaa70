//! Schedules' `spec.schedule`, parsed as Velero's (robfig/cron `ParseStandard`): five cron
//! fields (minute hour day-of-month month day-of-week, UTC; when both day fields are
//! restricted either may match, as in Vixie cron), the descriptors `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`, and `@every <duration>` (`@every
//! 6h`, `@every 1h30m`).

use std::str::FromStr;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::{SignedDuration, Timestamp};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum CronSchedule {
    /// Fields or a descriptor.
    Cron(Box<Cron>),
    /// `@every`: a fixed interval after the previous run.
    Every(Duration),
}

/// Why a schedule cannot be parsed; the text is Velero's validation message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    #[error("Schedule must be a non-empty valid Cron expression")]
    Empty,
    #[error("invalid schedule: bad @every duration {interval:?}: {reason}")]
    Every { interval: String, reason: String },
    #[error(
        "invalid schedule: expected exactly 5 fields (minute hour day-of-month month day-of-week), found {fields}: {text:?}"
    )]
    Fields { fields: usize, text: String },
    #[error("invalid schedule: the {field} field holds {value}, outside {min}-{max}: {text:?}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
        text: String,
    },
    #[error(
        "invalid schedule: {text:?} is not a cron expression (minute hour day-of-month month day-of-week, such as \"0 3 * * *\", or @daily, @hourly, @every 6h)"
    )]
    Pattern { text: String },
}

/// The five fields and the numbers each takes (day-of-week 7 is Sunday, as 0).
const FIELDS: [(&str, u64, u64); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// The first number of a field outside its range, so the error names it rather than the
/// parser's words. Names (`JAN`, `MON`), `*`, `?` and `L`-style specials are left to the parser.
fn out_of_range(text: &str) -> Option<CronError> {
    for (field, (name, min, max)) in text.split_whitespace().zip(FIELDS) {
        for part in field.split(',') {
            let (range, step) = part.split_once('/').unwrap_or((part, ""));
            let numbers = range.split('-').chain((!step.is_empty()).then_some(step));
            for (i, number) in numbers.enumerate() {
                let Ok(value) = number.parse::<u64>() else {
                    continue;
                };
                // A step is a count, not a value of the field: only zero is out of range.
                let is_step = !step.is_empty() && i == range.split('-').count();
                let (lo, hi) = if is_step { (1, max.max(1)) } else { (min, max) };
                if value < lo || value > hi {
                    return Some(CronError::OutOfRange {
                        field: name,
                        value,
                        min: lo,
                        max: hi,
                        text: text.to_owned(),
                    });
                }
            }
        }
    }
    None
}

impl FromStr for CronSchedule {
    type Err = CronError;

    fn from_str(text: &str) -> Result<CronSchedule, CronError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CronError::Empty);
        }
        if let Some(interval) = text.strip_prefix("@every") {
            let interval = interval.trim();
            let every = crate::duration::parse(interval).map_err(|e| CronError::Every {
                interval: interval.to_owned(),
                reason: e.to_string(),
            })?;
            // robfig/cron rounds intervals up to a whole second.
            if every < Duration::from_secs(1) {
                return Ok(CronSchedule::Every(Duration::from_secs(1)));
            }
            return Ok(CronSchedule::Every(every));
        }
        let descriptor = text.starts_with('@');
        let fields = text.split_whitespace().count();
        if !descriptor && fields != 5 {
            return Err(CronError::Fields {
                fields,
                text: text.to_owned(),
            });
        }
        if !descriptor && let Some(e) = out_of_range(text) {
            return Err(e);
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(&text.replace("@midnight", "@daily"))
            .map_err(|_| CronError::Pattern {
                text: text.to_owned(),
            })?;
        Ok(CronSchedule::Cron(Box::new(cron)))
    }
}

impl CronSchedule {
    /// The first run strictly after `after` (UTC); `None` when the pattern never matches again.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match self {
            CronSchedule::Every(every) => {
                // Whole seconds, as robfig's `Every` schedule.
                let base = Timestamp::from_second(after.as_second()).ok()?;
                base.checked_add(SignedDuration::try_from(*every).ok()?)
                    .ok()
            }
            CronSchedule::Cron(cron) => {
                let zoned = after.to_zoned(jiff::tz::TimeZone::UTC);
                cron.find_next_occurrence(&zoned, false)
                    .ok()
                    .map(|z| z.timestamp())
            }
        }
    }

    /// When a schedule that last ran at `last` (never: `None`) is next due, and whether that is
    /// at or before `now`. A schedule that never ran is due at once; one whose runs were missed
    /// (the server was down) is due once, not once per missed run.
    pub fn due(&self, last: Option<Timestamp>, now: Timestamp) -> (bool, Option<Timestamp>) {
        match last {
            None => (true, Some(now)),
            Some(last) => match self.next_after(last) {
                Some(next) => (next <= now, Some(next)),
                None => (false, None),
            },
        }
    }
}

/// The name of the backup a schedule starts at `time`: `<schedule>-<YYYYMMDDhhmmss>` (UTC).
pub fn backup_name(schedule: &str, time: Timestamp) -> String {
    format!("{schedule}-{}", time.strftime("%Y%m%d%H%M%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        let s: CronSchedule = schedule.parse().unwrap();
        s.next_after(t(after)).unwrap().to_string()
    }

    #[test]
    fn five_fields_and_descriptors_run_when_cron_would() {
        assert_eq!(
            next("0 */6 * * *", "2026-11-22T10:15:00Z"),
            "2026-11-22T12:00:00Z"
        );
        assert_eq!(
            next("30 1 * * 0", "2026-11-22T10:15:00Z"),
            "2026-11-29T01:30:00Z"
        );
        assert_eq!(
            next("@daily", "2026-11-22T10:15:00Z"),
            "2026-11-23T00:00:00Z"
        );
        assert_eq!(
            next("@midnight", "2026-11-22T10:15:00Z"),
            "2026-11-23T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-11-22T10:15:00Z"),
            "2026-11-22T11:00:00Z"
        );
        // Both day fields restricted: either matches (the 1st is a Tuesday in Dec 2026; the
        // next Monday, Nov 23, comes first).
        assert_eq!(
            next("0 0 1 * 1", "2026-11-22T10:15:00Z"),
            "2026-11-23T00:00:00Z"
        );
        // Exactly on a tick: the next one, not the same.
        assert_eq!(
            next("0 * * * *", "2026-11-22T10:00:00Z"),
            "2026-11-22T11:00:00Z"
        );
    }

    #[test]
    fn every_counts_from_the_last_run() {
        assert_eq!(
            next("@every 6h", "2026-11-22T10:15:30.5Z"),
            "2026-11-22T16:15:30Z"
        );
        assert_eq!(
            next("@every 1h30m", "2026-11-22T10:00:00Z"),
            "2026-11-22T11:30:00Z"
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (bad, says) in [
            ("", "non-empty"),
            ("* * * *", "exactly 5 fields"),
            ("0 0 * * * *", "exactly 5 fields"),
            ("61 * * * *", "the minute field holds 61, outside 0-59"),
            ("0 24 * * *", "the hour field holds 24, outside 0-23"),
            ("0 0 0 * *", "the day-of-month field holds 0, outside 1-31"),
            ("0 0 1 1-13 *", "the month field holds 13, outside 1-12"),
            ("0 0 * * 8", "the day-of-week field holds 8, outside 0-7"),
            ("*/0 * * * *", "the minute field holds 0, outside 1-59"),
            ("@every soon", "bad @every duration"),
            ("@fortnightly", "is not a cron expression"),
            ("0 0 * * MONDAY-ish", "is not a cron expression"),
        ] {
            let err = bad.parse::<CronSchedule>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
            // Our words only: nothing of the cron library's own messages.
            for library in ["Component error", "Number out of bounds", "Invalid pattern"] {
                assert!(!err.contains(library), "{bad:?}: {err}");
            }
        }
        for good in [
            "*/15 * * * *",
            "0 3 * * 0",
            "0 3 * * 7",
            "0 0 1 JAN,JUL MON-FRI",
            "5 4 1-31/2 * *",
        ] {
            good.parse::<CronSchedule>()
                .unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn missed_runs_are_due_once_and_a_new_schedule_at_once() {
        let s: CronSchedule = "0 * * * *".parse().unwrap();
        let now = t("2026-11-22T10:15:00Z");
        assert_eq!(s.due(None, now), (true, Some(now)));
        // Last ran 5 hours ago: due now (one backup), next tick computed from the last run.
        let (due, next) = s.due(Some(t("2026-11-22T05:00:00Z")), now);
        assert!(due);
        assert_eq!(next, Some(t("2026-11-22T06:00:00Z")));
        let (due, next) = s.due(Some(t("2026-11-22T10:00:00Z")), now);
        assert!(!due);
        assert_eq!(next, Some(t("2026-11-22T11:00:00Z")));
    }

    #[test]
    fn backups_are_named_after_the_schedule_and_utc_time() {
        assert_eq!(
            backup_name("nightly", t("2026-11-22T03:04:05.9Z")),
            "nightly-20261122030405"
        );
    }
}
