//! Multiline joining: a start pattern (a matching line begins a new event) or a continuation
//! pattern (a matching line belongs to the previous event), bounded by lines and bytes, with a
//! timeout after which a pending event is emitted.

use std::time::{Duration, Instant};

use driftless_crds::log_pipeline::Multiline;
use regex::Regex;

use crate::logs::LogError;

/// A logical record: one line, or several joined, with CRI metadata when any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The text (lines joined with `\n`).
    pub text: String,
    /// File offset of its first byte.
    pub start: u64,
    /// CRI timestamp.
    pub time: Option<String>,
    /// CRI stream.
    pub stream: Option<String>,
    /// Why the record is not what was written (cut, not CRI).
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
enum Mode {
    Start(Regex),
    Continuation(Regex),
}

/// Compiled multiline settings.
#[derive(Clone, Debug)]
pub struct MultilineConfig {
    mode: Mode,
    max_lines: u32,
    max_bytes: usize,
    timeout: Duration,
}

impl MultilineConfig {
    /// Compiles the settings of a source.
    pub fn new(source: &str, m: &Multiline) -> Result<Self, LogError> {
        let compile = |p: &str| {
            Regex::new(p).map_err(|e| {
                LogError::Config(format!("source {source}: multiline pattern {p:?}: {e}"))
            })
        };
        let mode = match (&m.start_pattern, &m.continuation_pattern) {
            (Some(p), None) => Mode::Start(compile(p)?),
            (None, Some(p)) => Mode::Continuation(compile(p)?),
            _ => {
                return Err(LogError::Config(format!(
                    "source {source}: multiline needs exactly one of startPattern and continuationPattern"
                )))
            }
        };
        Ok(Self {
            mode,
            max_lines: m.max_lines.max(1),
            max_bytes: (m.max_bytes as usize).max(1),
            timeout: m.timeout.get(),
        })
    }
}

/// Joins the records of one file.
#[derive(Debug)]
pub struct Joiner {
    config: MultilineConfig,
    pending: Option<(Record, u32, Instant)>,
}

impl Joiner {
    /// A joiner with nothing pending.
    pub fn new(config: MultilineConfig) -> Self {
        Self {
            config,
            pending: None,
        }
    }

    /// Offset of the first byte of the pending event.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.as_ref().map(|(r, _, _)| r.start)
    }

    /// Feeds one record; finished events go to `out`.
    pub fn push(&mut self, record: Record, now: Instant, out: &mut Vec<Record>) {
        let starts_new = match &self.config.mode {
            Mode::Start(re) => re.is_match(&record.text),
            Mode::Continuation(re) => !re.is_match(&record.text),
        };
        match self.pending.as_mut() {
            Some((pending, lines, last)) if !starts_new => {
                let room = self.config.max_bytes.saturating_sub(pending.text.len() + 1);
                pending.text.push('\n');
                if record.text.len() > room {
                    let mut cut = room;
                    while cut > 0 && !record.text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    pending.text.push_str(&record.text[..cut]);
                    pending.error = Some(format!(
                        "multiline: event longer than {} bytes, cut",
                        self.config.max_bytes
                    ));
                } else {
                    pending.text.push_str(&record.text);
                }
                *lines += 1;
                *last = now;
            }
            _ => {
                if let Some((done, _, _)) = self.pending.take() {
                    out.push(done);
                }
                self.pending = Some((record, 1, now));
            }
        }
        if let Some((pending, lines, _)) = &self.pending {
            if *lines >= self.config.max_lines || pending.text.len() >= self.config.max_bytes {
                if let Some((done, _, _)) = self.pending.take() {
                    out.push(done);
                }
            }
        }
    }

    /// Emits the pending event when no line arrived for the timeout.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<Record>) {
        if let Some((_, _, last)) = &self.pending {
            if now.duration_since(*last) >= self.config.timeout {
                self.flush(out);
            }
        }
    }

    /// Emits the pending event.
    pub fn flush(&mut self, out: &mut Vec<Record>) {
        if let Some((done, _, _)) = self.pending.take() {
            out.push(done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joiner(yaml: &str) -> Joiner {
        let m: Multiline = serde_saphyr::from_str(yaml).unwrap();
        Joiner::new(MultilineConfig::new("s", &m).unwrap())
    }

    fn rec(text: &str, start: u64) -> Record {
        Record {
            text: text.into(),
            start,
            ..Default::default()
        }
    }

    #[test]
    fn start_pattern_joins_until_next_start() {
        let mut j = joiner(r"startPattern: '^\d{4}-'");
        let now = Instant::now();
        let mut out = Vec::new();
        j.push(rec("2024-01-01 boom", 0), now, &mut out);
        j.push(rec("  at a()", 16), now, &mut out);
        j.push(rec("  at b()", 25), now, &mut out);
        assert!(out.is_empty());
        assert_eq!(j.pending_start(), Some(0));
        j.push(rec("2024-01-01 next", 34), now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "2024-01-01 boom\n  at a()\n  at b()");
        assert_eq!(j.pending_start(), Some(34));
        j.flush_due(now + Duration::from_millis(10), &mut out);
        assert_eq!(out.len(), 1);
        j.flush_due(now + Duration::from_secs(2), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(j.pending_start(), None);
    }

    #[test]
    fn continuation_pattern_and_bounds() {
        let mut j = joiner("continuationPattern: '^\\s'\nmaxLines: 3\nmaxBytes: 100");
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, t) in ["a", " 1", " 2", " 3", "b"].iter().enumerate() {
            j.push(rec(t, i as u64 * 10), now, &mut out);
        }
        assert_eq!(out[0].text, "a\n 1\n 2");
        assert_eq!(out[1].text, " 3");
        j.flush(&mut out);
        assert_eq!(out[2].text, "b");
        let mut j = joiner("continuationPattern: '^\\s'\nmaxBytes: 8");
        let mut out = Vec::new();
        j.push(rec("abcdef", 0), now, &mut out);
        j.push(rec(" ghijkl", 7), now, &mut out);
        assert_eq!(out[0].text, "abcdef\n ");
        assert!(out[0].error.as_deref().unwrap().contains("cut"));
    }
}
