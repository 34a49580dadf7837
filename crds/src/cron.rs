//! Cron expressions: the one parser of the project (the `croner` crate), used where a
//! DriftScan's `spec.schedule` is validated and computed (`driftless validate`, the operator)
//! and where a cron task's schedule is checked before it is written to `/etc/cron.d` (the
//! agent), so a schedule valid in one place is valid in all.
//!
//! Accepted: five fields (minute hour day-of-month month day-of-week) with `*`, ranges, lists,
//! steps and month and day names, or a macro: `@yearly`, `@annually`, `@monthly`, `@weekly`,
//! `@daily`, `@midnight`, `@hourly`. `@reboot` is a cron daemon's event, not a time: only a
//! cron task ([`check_cron_d`]) may use it.

pub use croner::Cron;

/// The macros [`parse`] accepts.
pub const MACROS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Parses a schedule: five fields or one of [`MACROS`]. The error says what was expected.
pub fn parse(schedule: &str) -> Result<Cron, String> {
    let schedule = schedule.trim();
    if schedule.starts_with('@') {
        let known = MACROS.iter().find(|m| m.eq_ignore_ascii_case(schedule));
        return match known {
            // croner has no @midnight: it is @daily.
            Some(&"@midnight") => parse("@daily"),
            Some(m) => Cron::new(m)
                .parse()
                .map_err(|e| format!("{schedule:?}: {e}")),
            None => Err(format!(
                "{schedule:?} is not a cron macro; expected one of {}",
                MACROS.join(", ")
            )),
        };
    }
    let fields = schedule.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "{schedule:?} has {fields} fields; expected five (minute hour day-of-month month day-of-week)"
        ));
    }
    Cron::new(schedule)
        .parse()
        .map_err(|e| format!("{schedule:?} is not a valid cron expression: {e}"))
}

/// Checks the schedule of a line of `/etc/cron.d`: what [`parse`] accepts, or `@reboot`.
pub fn check_cron_d(schedule: &str) -> Result<(), String> {
    if schedule.trim().eq_ignore_ascii_case("@reboot") {
        return Ok(());
    }
    parse(schedule).map(|_| ()).map_err(|e| {
        if schedule.trim().starts_with('@') {
            format!("{e}, @reboot")
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar_for_schedules_and_cron_tasks() {
        for ok in [
            "*/15 * * * *",
            "0 3 * * mon-fri",
            "0 0 1,15 * *",
            "5 4 * jan sun",
            "0 22 * * 1-5",
            "0 0 * * 7",
            "@daily",
            "@midnight",
            "@Weekly",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
            assert_eq!(check_cron_d(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            parse("* * * *").unwrap_err(),
            "\"* * * *\" has 4 fields; expected five (minute hour day-of-month month day-of-week)"
        );
        assert_eq!(
            parse("0 * * * * *").unwrap_err(),
            "\"0 * * * * *\" has 6 fields; expected five (minute hour day-of-month month day-of-week)"
        );
        for bad in [
            "61 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "*/0 * * * *",
            "x * * * *",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("{bad:?} is not a valid cron expression")),
                "{err}"
            );
            assert!(check_cron_d(bad).is_err(), "{bad}");
        }
        assert!(parse("@often")
            .unwrap_err()
            .contains("expected one of @yearly"));
        // @reboot: a cron task's event, never a DriftScan schedule.
        assert_eq!(check_cron_d("@reboot"), Ok(()));
        assert!(parse("@reboot").is_err());
        assert!(check_cron_d("@often")
            .unwrap_err()
            .ends_with("@hourly, @reboot"));
    }

    #[test]
    fn midnight_is_daily() {
        use chrono::{TimeZone as _, Utc};
        let after = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        let next = |s: &str| {
            parse(s)
                .unwrap()
                .find_next_occurrence(&after, false)
                .unwrap()
        };
        assert_eq!(next("@midnight"), next("@daily"));
        assert_eq!(
            next("@midnight"),
            Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
        );
    }
}
