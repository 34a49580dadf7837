//! `cri`: container runtime log lines, `TIME STREAM TAG CONTENT`, where the tag `P` marks a
//! partial line continued by the next one and `F` the final part. Partial lines are reassembled
//! by [`Reassembler`], bounded in bytes.

/// One CRI line split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// RFC 3339 timestamp written by the runtime.
    pub time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Whether the tag is `P` (more parts follow).
    pub partial: bool,
    /// The content.
    pub content: &'a str,
}

/// Splits a CRI line; `None` when it is not one.
pub fn split(line: &str) -> Option<CriLine<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or("");
    if time.len() < 10 || !time.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let partial = match tag.split(':').next() {
        Some("P") => true,
        Some("F") => false,
        _ => return None,
    };
    Some(CriLine {
        time,
        stream,
        partial,
        content,
    })
}

/// A reassembled record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriRecord {
    /// Time of the first part.
    pub time: String,
    /// Stream of the first part.
    pub stream: String,
    /// The joined content.
    pub content: String,
    /// Set when the record was cut at the byte bound, or the line was not CRI.
    pub error: Option<String>,
}

/// Joins `P` parts with their `F` part, per file.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: Option<CriRecord>,
    max_bytes: usize,
}

impl Reassembler {
    /// A reassembler that emits a record once its content reaches `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            pending: None,
            max_bytes: max_bytes.max(1),
        }
    }

    /// Whether parts are waiting for their final part.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Feeds one physical line; returns a record when one is complete.
    pub fn push(&mut self, line: &str) -> Option<CriRecord> {
        let Some(cri) = split(line) else {
            // Not CRI: flush what is pending first is not possible in one return, so the
            // pending parts are emitted with this line appended and an error.
            let mut record = self.pending.take().unwrap_or_else(|| CriRecord {
                time: String::new(),
                stream: String::new(),
                content: String::new(),
                error: None,
            });
            record.content.push_str(line);
            record.error = Some("cri: not a CRI log line".into());
            return Some(record);
        };
        let record = self.pending.get_or_insert_with(|| CriRecord {
            time: cri.time.to_owned(),
            stream: cri.stream.to_owned(),
            content: String::new(),
            error: None,
        });
        let room = self.max_bytes.saturating_sub(record.content.len());
        if cri.content.len() > room {
            let mut cut = room;
            while cut > 0 && !cri.content.is_char_boundary(cut) {
                cut -= 1;
            }
            record.content.push_str(&cri.content[..cut]);
            record.error = Some(format!(
                "cri: record longer than {} bytes, cut",
                self.max_bytes
            ));
            return self.pending.take();
        }
        record.content.push_str(cri.content);
        if cri.partial && record.content.len() < self.max_bytes {
            None
        } else {
            self.pending.take()
        }
    }

    /// Emits pending parts (end of a file).
    pub fn flush(&mut self) -> Option<CriRecord> {
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines() {
        let line = split("2024-05-01T10:00:00.123456789Z stderr F boom: x y").unwrap();
        assert_eq!(line.stream, "stderr");
        assert!(!line.partial);
        assert_eq!(line.content, "boom: x y");
        assert!(split("hello world").is_none());
        assert!(split("2024-05-01T10:00:00Z stdout X text").is_none());
    }

    #[test]
    fn reassembles_partials_and_bounds_them() {
        let mut r = Reassembler::new(1024);
        assert_eq!(r.push("2024-05-01T10:00:00Z stdout P hel"), None);
        assert!(r.is_pending());
        assert_eq!(r.push("2024-05-01T10:00:01Z stdout P lo "), None);
        let rec = r.push("2024-05-01T10:00:02Z stdout F world").unwrap();
        assert_eq!(rec.content, "hello world");
        assert_eq!(rec.time, "2024-05-01T10:00:00Z");
        assert_eq!(rec.error, None);
        let mut small = Reassembler::new(8);
        assert_eq!(small.push("2024-05-01T10:00:00Z stdout P 12345"), None);
        let rec = small.push("2024-05-01T10:00:00Z stdout P 67890").unwrap();
        assert_eq!(rec.content, "12345678");
        assert!(rec.error.unwrap().contains("cut"));
        let bad = small.push("garbage").unwrap();
        assert_eq!(bad.content, "garbage");
        assert!(bad.error.is_some());
    }
}
