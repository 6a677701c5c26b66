//! Periodic schedules: Nomad's cron dialect (its `cronexpr`: five fields,
//! six with a trailing year, seven with leading seconds and a trailing
//! year, or an `@hourly`-style alias) read with `croner`, in the job's
//! IANA time zone. Shared by validation and the server's launcher.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

use super::PeriodicConfig;

/// Why a `periodic` block cannot be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Neither `cron` nor `crons` is set.
    #[error("periodic: a cron expression is required (cron or crons)")]
    Empty,
    /// An expression does not parse.
    #[error("periodic: invalid cron expression {spec:?}: {reason}")]
    Cron {
        /// The expression as written.
        spec: String,
        /// The parser's complaint.
        reason: String,
    },
    /// `time_zone` is not a known zone.
    #[error("periodic: unknown time_zone {0:?} (use an IANA name such as \"Europe/Berlin\", or \"UTC\")")]
    TimeZone(String),
}

/// The launch times of a periodic job.
#[derive(Debug, Clone)]
pub struct Schedule {
    crons: Vec<croner::Cron>,
    zone: chrono_tz::Tz,
}

/// An expression in croner's layout: cronexpr's six fields end with a
/// year, croner's begin with seconds, so a zero second goes first.
fn croner_layout(spec: &str) -> String {
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() == 6 {
        format!("0 {}", fields.join(" "))
    } else {
        fields.join(" ")
    }
}

impl Schedule {
    /// Reads a `periodic` block.
    pub fn parse(config: &PeriodicConfig) -> Result<Schedule, ScheduleError> {
        let specs: Vec<&str> = config.expressions().into_iter().filter(|s| !s.trim().is_empty()).collect();
        if specs.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Optional).build();
        let crons = specs
            .iter()
            .map(|spec| {
                parser
                    .parse(&croner_layout(spec))
                    .map_err(|e| ScheduleError::Cron { spec: spec.to_string(), reason: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let zone_name = if config.time_zone.is_empty() { "UTC" } else { config.time_zone.as_str() };
        let zone = zone_name.parse().map_err(|_| ScheduleError::TimeZone(zone_name.to_string()))?;
        Ok(Schedule { crons, zone })
    }

    /// The first launch strictly after `t`, if there is one.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.zone);
        self.crons
            .iter()
            .filter_map(|c| c.find_next_occurrence(&local, false).ok())
            .map(|d| d.with_timezone(&Utc))
            .min()
    }

    /// The last launch in `(after, until]`, skipping any earlier ones (what a
    /// server that was down runs once when it is back).
    pub fn last_due(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = until.with_timezone(&self.zone);
        self.crons
            .iter()
            .filter_map(|c| c.find_previous_occurrence(&local, true).ok())
            .map(|d| d.with_timezone(&Utc))
            .filter(|d| *d > after)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(spec: &str, zone: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(&PeriodicConfig { spec: spec.into(), time_zone: zone.into(), ..Default::default() })
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reads_nomads_five_six_and_seven_field_forms_and_aliases() {
        let start = at("2026-12-02T10:00:30Z");
        assert_eq!(schedule("*/15 * * * *", "UTC").unwrap().next_after(start), Some(at("2026-12-02T10:15:00Z")));
        // Six fields: the last is a year.
        assert_eq!(schedule("0 12 * * * 2027", "").unwrap().next_after(start), Some(at("2027-01-01T12:00:00Z")));
        // Seven fields: seconds first, year last.
        assert_eq!(schedule("*/2 * * * * * *", "UTC").unwrap().next_after(start), Some(at("2026-12-02T10:00:32Z")));
        assert_eq!(schedule("@hourly", "UTC").unwrap().next_after(start), Some(at("2026-12-02T11:00:00Z")));
        // Sunday is 0, as in cronexpr.
        assert_eq!(schedule("0 9 * * 0", "UTC").unwrap().next_after(start), Some(at("2026-12-06T09:00:00Z")));
    }

    #[test]
    fn time_zones_move_launches_and_bad_input_is_named() {
        let start = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        let berlin = schedule("0 3 * * *", "Europe/Berlin").unwrap();
        assert_eq!(berlin.next_after(start), Some(at("2026-12-02T02:00:00Z")));
        let err = schedule("0 3 * * *", "Mars/Olympus").unwrap_err().to_string();
        assert!(err.contains("unknown time_zone \"Mars/Olympus\""), "{err}");
        let err = schedule("61 * * * *", "UTC").unwrap_err().to_string();
        assert!(err.contains("invalid cron expression \"61 * * * *\""), "{err}");
        assert_eq!(schedule("", "UTC").unwrap_err(), ScheduleError::Empty);
    }

    #[test]
    fn the_earliest_of_several_expressions_wins_and_missed_launches_collapse() {
        let both = Schedule::parse(&PeriodicConfig {
            specs: vec!["0 6 * * *".into(), "30 5 * * *".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(both.next_after(at("2026-12-02T00:00:00Z")), Some(at("2026-12-02T05:30:00Z")));
        let every_two = schedule("*/2 * * * * * *", "UTC").unwrap();
        let last = every_two.last_due(at("2026-12-02T10:00:00Z"), at("2026-12-02T10:00:09Z"));
        assert_eq!(last, Some(at("2026-12-02T10:00:08Z")), "one launch for the five missed");
        assert_eq!(every_two.last_due(at("2026-12-02T10:00:00Z"), at("2026-12-02T10:00:01Z")), None);
    }
}
