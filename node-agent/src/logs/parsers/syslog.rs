//! `syslog`: RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`) and RFC 3164
//! (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`, the `<PRI>` optional as in files written by
//! syslog daemons, and an RFC 3339 timestamp accepted in place of the BSD one), detected per line.

use serde_json::Value;

use crate::logs::Fields;

/// Facility names by code (RFC 5424 table 1), shared with the syslog sink.
pub(crate) const FACILITIES: &[&str] = &[
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Parses one syslog line.
pub fn parse(text: &str, fields: &mut Fields) -> Result<(), String> {
    let text = text.trim_end_matches(['\r', '\n']);
    let (pri, rest) = split_pri(text)?;
    if let Some(pri) = pri {
        let facility = (pri / 8) as usize;
        let severity = (pri % 8) as usize;
        if let Some(name) = FACILITIES.get(facility) {
            fields.insert("facility".into(), Value::String((*name).to_owned()));
        }
        if let Some(name) = SEVERITIES.get(severity) {
            fields.insert("severity".into(), Value::String((*name).to_owned()));
        }
    }
    if pri.is_some() {
        if let Some(rest5424) = rest.strip_prefix("1 ") {
            return parse_5424(rest5424, fields);
        }
    }
    parse_3164(rest, fields)
}

fn split_pri(text: &str) -> Result<(Option<u8>, &str), String> {
    let Some(rest) = text.strip_prefix('<') else {
        return Ok((None, text));
    };
    let end = rest
        .find('>')
        .filter(|e| *e <= 3)
        .ok_or_else(|| "syslog: bad <PRI>".to_owned())?;
    let pri: u8 = rest[..end]
        .parse()
        .ok()
        .filter(|p| *p <= 191)
        .ok_or_else(|| "syslog: bad <PRI>".to_owned())?;
    Ok((Some(pri), &rest[end + 1..]))
}

fn nil(value: &str) -> Option<Value> {
    (value != "-").then(|| Value::String(value.to_owned()))
}

fn parse_5424(rest: &str, fields: &mut Fields) -> Result<(), String> {
    let mut parts = rest.splitn(5, ' ');
    let mut next = || {
        parts
            .next()
            .ok_or_else(|| "syslog: short RFC 5424 header".to_owned())
    };
    let timestamp = next()?;
    let host = next()?;
    let app = next()?;
    let procid = next()?;
    let rest = next()?;
    let (msgid, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (sd, msg) = split_structured_data(rest)?;
    for (key, value) in [
        ("timestamp", nil(timestamp)),
        ("host", nil(host)),
        ("app", nil(app)),
        ("procid", nil(procid)),
        ("msgid", nil(msgid)),
        ("structured_data", nil(sd)),
    ] {
        if let Some(value) = value {
            fields.insert(key.into(), value);
        }
    }
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    fields.insert("message".into(), Value::String(msg.to_owned()));
    Ok(())
}

fn split_structured_data(rest: &str) -> Result<(&str, &str), String> {
    if let Some(msg) = rest.strip_prefix('-') {
        return Ok(("-", msg.strip_prefix(' ').unwrap_or(msg)));
    }
    if !rest.starts_with('[') {
        return Err("syslog: bad RFC 5424 structured data".into());
    }
    let bytes = rest.as_bytes();
    let mut i = 0;
    let mut in_quotes = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b']' if !in_quotes && bytes.get(i + 1) != Some(&b'[') => {
                let msg = &rest[i + 1..];
                return Ok((&rest[..=i], msg.strip_prefix(' ').unwrap_or(msg)));
            }
            _ => {}
        }
        i += 1;
    }
    Err("syslog: unterminated structured data".into())
}

fn parse_3164(rest: &str, fields: &mut Fields) -> Result<(), String> {
    let (timestamp, rest) = if is_bsd_timestamp(rest) {
        (&rest[..15], rest[15..].trim_start())
    } else {
        match rest.split_once(' ') {
            Some((ts, more)) if is_rfc3339(ts) => (ts, more),
            _ => return Err("syslog: no RFC 3164 or RFC 5424 header".into()),
        }
    };
    fields.insert("timestamp".into(), Value::String(timestamp.to_owned()));
    let (host, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    fields.insert("host".into(), Value::String(host.to_owned()));
    let tag_end = rest.find([':', ' ']).filter(|i| *i > 0 && *i <= 48);
    let msg = match tag_end {
        Some(end) if rest[end..].starts_with(':') => {
            let tag = &rest[..end];
            let (app, pid) = match tag.split_once('[') {
                Some((app, pid)) => (app, Some(pid.trim_end_matches(']'))),
                None => (tag, None),
            };
            fields.insert("app".into(), Value::String(app.to_owned()));
            if let Some(pid) = pid {
                fields.insert("procid".into(), Value::String(pid.to_owned()));
            }
            rest[end + 1..]
                .strip_prefix(' ')
                .unwrap_or(&rest[end + 1..])
        }
        _ => rest,
    };
    fields.insert("message".into(), Value::String(msg.to_owned()));
    Ok(())
}

fn is_bsd_timestamp(s: &str) -> bool {
    const MONTHS: &[&str] = &[
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    b.len() >= 15
        && MONTHS.iter().any(|m| s.starts_with(m))
        && b[3] == b' '
        && b[6] == b' '
        && b[9] == b':'
        && b[12] == b':'
}

fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && (b[10] == b'T' || b[10] == b't')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424() {
        let mut f = Fields::new();
        parse(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application"] An application event"#,
            &mut f,
        )
        .unwrap();
        assert_eq!(f["facility"], "local4");
        assert_eq!(f["severity"], "notice");
        assert_eq!(f["host"], "mymachine.example.com");
        assert_eq!(f["app"], "evntslog");
        assert!(f.get("procid").is_none());
        assert_eq!(f["msgid"], "ID47");
        assert_eq!(f["message"], "An application event");
        let mut f = Fields::new();
        parse("<14>1 2024-01-01T00:00:00Z h a 12 - - hi there", &mut f).unwrap();
        assert_eq!(f["procid"], "12");
        assert_eq!(f["message"], "hi there");
    }

    #[test]
    fn rfc3164_with_and_without_pri() {
        let mut f = Fields::new();
        parse("<34>Oct 11 22:14:15 mymachine su: 'su root' failed", &mut f).unwrap();
        assert_eq!(f["facility"], "auth");
        assert_eq!(f["severity"], "crit");
        assert_eq!(f["app"], "su");
        assert_eq!(f["message"], "'su root' failed");
        let mut f = Fields::new();
        parse("Nov  2 10:00:01 web1 CRON[1234]: (root) CMD (run)", &mut f).unwrap();
        assert_eq!(f["host"], "web1");
        assert_eq!(f["app"], "CRON");
        assert_eq!(f["procid"], "1234");
        assert_eq!(f["message"], "(root) CMD (run)");
        let mut f = Fields::new();
        parse(
            "2024-11-02T10:00:01.123+00:00 web1 sshd[9]: Accepted key",
            &mut f,
        )
        .unwrap();
        assert_eq!(f["app"], "sshd");
        assert_eq!(f["message"], "Accepted key");
        assert!(parse("not syslog at all", &mut Fields::new()).is_err());
        assert!(parse("<999>x", &mut Fields::new()).is_err());
    }
}
