//! Kubernetes timestamps and `chrono`: the API types hold `jiff` timestamps, Driftless computes
//! with `chrono` (cron schedules, time zones). These convert at the boundary, to the
//! nanosecond; an instant outside either range becomes the nearest one that fits.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

fn timestamp(at: DateTime<Utc>) -> Timestamp {
    let nanos =
        i128::from(at.timestamp()) * 1_000_000_000 + i128::from(at.timestamp_subsec_nanos());
    Timestamp::from_nanosecond(nanos).unwrap_or(if nanos < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

fn chrono(at: Timestamp) -> DateTime<Utc> {
    let nanos = at.as_nanosecond();
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
    let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    DateTime::from_timestamp(seconds, subsec).unwrap_or(if nanos < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// A `metav1.Time` for an instant.
pub fn time(at: DateTime<Utc>) -> Time {
    Time(timestamp(at))
}

/// A `metav1.MicroTime` for an instant.
pub fn micro_time(at: DateTime<Utc>) -> MicroTime {
    MicroTime(timestamp(at))
}

/// The instant of a `metav1.Time`.
pub fn of_time(t: &Time) -> DateTime<Utc> {
    chrono(t.0)
}

/// The instant of a `metav1.MicroTime`.
pub fn of_micro_time(t: &MicroTime) -> DateTime<Utc> {
    chrono(t.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_nanosecond() {
        for at in [
            DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap(),
            DateTime::from_timestamp(-86_400, 5).unwrap(),
            DateTime::from_timestamp(0, 0).unwrap(),
        ] {
            assert_eq!(of_time(&time(at)), at);
            assert_eq!(of_micro_time(&micro_time(at)), at);
        }
        let t = time(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!("2023-11-14T22:13:20Z")
        );
    }
}
