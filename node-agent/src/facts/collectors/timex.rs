//! `timex`: the kernel clock discipline (`adjtimex(2)`: offset, frequency, error estimates, PPS
//! counters, TAI offset, whether the clock is synchronised), as node_exporter 1.5 exports it.
//!
//! The call only reads (`modes` is 0). Where it is refused (`EPERM` in a restricted sandbox) the
//! collector has no data, as node_exporter; any other error fails it.

use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The fields of `struct timex` the collector reports, and the call's return value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timex {
    /// The clock state returned by `adjtimex` (`TIME_ERROR` = 5: not synchronised).
    pub state: i32,
    /// Status bits (`STA_*`).
    pub status: i64,
    /// Time offset (µs, or ns with `STA_NANO`).
    pub offset: i64,
    /// Frequency offset, ppm with a 16-bit fraction.
    pub freq: i64,
    /// Maximum error, µs.
    pub maxerror: i64,
    /// Estimated error, µs.
    pub esterror: i64,
    /// PLL time constant.
    pub constant: i64,
    /// Microseconds between clock ticks.
    pub tick: i64,
    /// PPS frequency, ppm with a 16-bit fraction.
    pub ppsfreq: i64,
    /// PPS jitter (µs, or ns with `STA_NANO`).
    pub jitter: i64,
    /// PPS interval duration, seconds as a power of two.
    pub shift: i64,
    /// PPS stability, ppm with a 16-bit fraction.
    pub stabil: i64,
    /// PPS jitter limit exceeded.
    pub jitcnt: i64,
    /// PPS calibration intervals.
    pub calcnt: i64,
    /// PPS calibration errors.
    pub errcnt: i64,
    /// PPS stability limit exceeded.
    pub stbcnt: i64,
    /// TAI offset, seconds.
    pub tai: i64,
}

const TIME_ERROR: i32 = 5;
const STA_NANO: i64 = 0x2000;
/// ppm with a 16-bit fraction, to a ratio (adjtimex(2), NOTES).
const PPM16FRAC: f64 = 1_000_000.0 * 65536.0;

/// The collector.
pub struct TimexCollector;

/// Factory.
pub fn new(_: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(TimexCollector))
}

impl Collector for TimexCollector {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        match read() {
            Ok(timex) => {
                families(&timex, out);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(CollectError::NoData(format!("adjtimex refused: {e}")))
            }
            Err(e) => Err(CollectError::Failed(format!("adjtimex: {e}"))),
        }
    }
}

/// Reads the kernel's clock state without changing it.
#[allow(unsafe_code)]
fn read() -> std::io::Result<Timex> {
    // SAFETY: `timex` is a plain C struct for which all-zero bytes are a valid value; with
    // `modes` 0 the kernel only writes into the struct we own, which lives across the call.
    let (state, t) = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        (libc::adjtimex(&mut t), t)
    };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Timex {
        state,
        status: i64::from(t.status),
        offset: t.offset,
        freq: t.freq,
        maxerror: t.maxerror,
        esterror: t.esterror,
        constant: t.constant,
        tick: t.tick,
        ppsfreq: t.ppsfreq,
        jitter: t.jitter,
        shift: i64::from(t.shift),
        stabil: t.stabil,
        jitcnt: t.jitcnt,
        calcnt: t.calcnt,
        errcnt: t.errcnt,
        stbcnt: t.stbcnt,
        tai: i64::from(t.tai),
    })
}

/// The `node_timex_*` families of one reading.
pub fn families(t: &Timex, out: &mut Vec<Family>) {
    let divisor = if t.status & STA_NANO != 0 { 1e9 } else { 1e6 };
    let sync = if t.state == TIME_ERROR { 0.0 } else { 1.0 };
    let rows: [(&str, &str, Kind, f64); 17] = [
        (
            "sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            Kind::Gauge,
            sync,
        ),
        (
            "offset_seconds",
            "Time offset in between local system and reference clock.",
            Kind::Gauge,
            t.offset as f64 / divisor,
        ),
        (
            "frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            Kind::Gauge,
            1.0 + t.freq as f64 / PPM16FRAC,
        ),
        (
            "maxerror_seconds",
            "Maximum error in seconds.",
            Kind::Gauge,
            t.maxerror as f64 / 1e6,
        ),
        (
            "estimated_error_seconds",
            "Estimated error in seconds.",
            Kind::Gauge,
            t.esterror as f64 / 1e6,
        ),
        (
            "status",
            "Value of the status array bits.",
            Kind::Gauge,
            t.status as f64,
        ),
        (
            "loop_time_constant",
            "Phase-locked loop time constant.",
            Kind::Gauge,
            t.constant as f64,
        ),
        (
            "tick_seconds",
            "Seconds between clock ticks.",
            Kind::Gauge,
            t.tick as f64 / 1e6,
        ),
        (
            "pps_frequency_hertz",
            "Pulse per second frequency.",
            Kind::Gauge,
            t.ppsfreq as f64 / PPM16FRAC,
        ),
        (
            "pps_jitter_seconds",
            "Pulse per second jitter.",
            Kind::Gauge,
            t.jitter as f64 / divisor,
        ),
        (
            "pps_shift_seconds",
            "Pulse per second interval duration.",
            Kind::Gauge,
            t.shift as f64,
        ),
        (
            "pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            Kind::Gauge,
            t.stabil as f64 / PPM16FRAC,
        ),
        (
            "pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            Kind::Counter,
            t.jitcnt as f64,
        ),
        (
            "pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            Kind::Counter,
            t.calcnt as f64,
        ),
        (
            "pps_error_total",
            "Pulse per second count of calibration errors.",
            Kind::Counter,
            t.errcnt as f64,
        ),
        (
            "pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            Kind::Counter,
            t.stbcnt as f64,
        ),
        (
            "tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            Kind::Gauge,
            t.tai as f64,
        ),
    ];
    for (name, help, kind, value) in rows {
        out.push(Family::single(
            format!("node_timex_{name}"),
            help,
            kind,
            value,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &Timex) -> String {
        let mut families_out = Vec::new();
        families(t, &mut families_out);
        let mut out = String::new();
        crate::metrics::encode_families(&families_out, &mut out);
        out
    }

    /// A clock disciplined by an NTP daemon (nanosecond resolution, PPS counters), and this
    /// host's unsynchronised clock as node_exporter 1.5 reported it.
    #[test]
    fn conversions_match_node_exporter() {
        let synced = Timex {
            state: 0,
            status: 0x2001, // STA_PLL | STA_NANO
            offset: -1_250_000,
            freq: -1_234_567,
            maxerror: 48_000,
            esterror: 1_500,
            constant: 7,
            tick: 10_000,
            ppsfreq: 65_536,
            jitter: 2_000,
            shift: 2,
            stabil: 131_072,
            jitcnt: 3,
            calcnt: 40,
            errcnt: 1,
            stbcnt: 2,
            tai: 37,
        };
        let out = text(&synced);
        for line in [
            "node_timex_sync_status 1",
            "node_timex_offset_seconds -0.00125",
            "node_timex_frequency_adjustment_ratio 0.9999811620025635",
            "node_timex_maxerror_seconds 0.048",
            "node_timex_estimated_error_seconds 0.0015",
            "node_timex_status 8193",
            "node_timex_loop_time_constant 7",
            "node_timex_tick_seconds 0.01",
            "node_timex_pps_frequency_hertz 0.000001",
            "node_timex_pps_jitter_seconds 0.000002",
            "node_timex_pps_shift_seconds 2",
            "node_timex_pps_stability_hertz 0.000002",
            "node_timex_pps_jitter_total 3",
            "node_timex_pps_calibration_total 40",
            "node_timex_pps_error_total 1",
            "node_timex_pps_stability_exceeded_total 2",
            "node_timex_tai_offset_seconds 37",
        ] {
            assert!(out.contains(&format!("{line}\n")), "{line}:\n{out}");
        }
        assert!(out.contains("# TYPE node_timex_pps_error_total counter\n"));
        // Microsecond resolution and TIME_ERROR (this host, recorded from node_exporter 1.5).
        let unsynced = Timex {
            state: TIME_ERROR,
            status: 64,
            maxerror: 16_000_000,
            esterror: 16_000_000,
            constant: 2,
            tick: 10_000,
            offset: 1_250,
            ..Default::default()
        };
        let out = text(&unsynced);
        for line in [
            "node_timex_sync_status 0",
            "node_timex_offset_seconds 0.00125",
            "node_timex_maxerror_seconds 16",
            "node_timex_frequency_adjustment_ratio 1",
            "node_timex_status 64",
        ] {
            assert!(out.contains(&format!("{line}\n")), "{line}:\n{out}");
        }
    }

    #[test]
    fn reads_this_hosts_clock() {
        let t = read().expect("adjtimex with modes 0 is allowed to every process");
        // The tick is 1/USER_HZ seconds whatever the kernel's HZ.
        assert_eq!(t.tick, 10_000);
        let mut out = Vec::new();
        TimexCollector.update(&mut out).unwrap();
        assert_eq!(out.len(), 17);
    }
}
