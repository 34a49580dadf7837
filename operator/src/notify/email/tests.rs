use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use driftless_crds::drift_report::{DriftStatus, TargetKind};
use driftless_crds::notification_policy::Transition;
use driftless_crds::time::time;

use super::message::{
    body, fold, message_id, quoted_printable, render, Envelope, Mailbox, MAX_BODY_LINE,
    MAX_HEADER_LINE,
};
use super::smtp::{dot_stuff, parse_line, Extensions, Reply, Tls};
use super::*;

fn t(report: &str, from: Option<DriftStatus>, to: DriftStatus) -> Transition {
    Transition {
        report: report.into(),
        kind: TargetKind::Stack,
        target: format!("infra/{report}"),
        from,
        to,
        checked_at: time(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
        added: 1,
        changed: 2,
        removed: 0,
        revision: Some("abc".into()),
        error: (to == DriftStatus::Error).then(|| "plan failed:\n.terraform is stale".into()),
    }
}

fn events() -> Vec<Transition> {
    vec![
        t("net", Some(DriftStatus::InSync), DriftStatus::Drifted),
        t("db", Some(DriftStatus::Drifted), DriftStatus::InSync),
        t("dns", None, DriftStatus::Error),
    ]
}

fn message<'a>(events: &'a [Transition], dashboard: Option<&'a str>) -> Message<'a> {
    Message {
        namespace: "team-a",
        policy: "ops",
        id: "3f0c2a9e-0b7d-4a57-9d0e-4b1f2c3d4e5f-7",
        sequence: 7,
        events,
        rollouts: &[],
        omitted: 0,
        max_listed: 50,
        dashboard_url: dashboard,
    }
}

fn date() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_396_430, 0).unwrap() // 2026-12-04T15:00:30Z
}

fn mailboxes(list: &[&str]) -> Vec<Mailbox> {
    list.iter().map(|a| Mailbox::parse(a).unwrap()).collect()
}

/// Decodes quoted-printable with CRLF line ends (the receiving side of RFC 2045 §6.7).
fn qp_decode(text: &str) -> String {
    let mut out = Vec::new();
    for line in text.split("\r\n") {
        let (line, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' {
                out.push(u8::from_str_radix(&line[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        if !soft {
            out.push(b'\n');
        }
    }
    // The split after the final CRLF yields one empty line too many.
    out.pop();
    String::from_utf8(out).unwrap()
}

fn split(mail: &[u8]) -> (String, String) {
    let text = std::str::from_utf8(mail).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (format!("{head}\r\n"), body.to_owned())
}

/// The unfolded headers, in order.
fn headers(head: &str) -> Vec<(String, String)> {
    let unfolded = head.replace("\r\n ", " ");
    unfolded
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn headers_are_complete_and_stable_across_attempts() {
    let e = events();
    let m = message(&e, Some("https://dash.example.com"));
    let from = Mailbox::parse("Driftless <driftless@example.com>").unwrap();
    let to = mailboxes(&["ops@example.com", "\"On Call\" <oncall@example.org>"]);
    let envelope = Envelope {
        from: &from,
        to: &to,
        receiver: "mail",
        date: date(),
    };
    let mail = render(&m, &envelope);
    // A resend after a restart renders the same bytes: same Message-ID, same Date.
    assert_eq!(mail, render(&m, &envelope));
    let (head, _) = split(&mail);
    let h = headers(&head);
    let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "Date",
            "From",
            "To",
            "Subject",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
            "Auto-Submitted",
            "X-Driftless-Delivery"
        ]
    );
    let get = |k: &str| h.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get("Date"), "Fri, 4 Dec 2026 15:00:30 +0000");
    assert_eq!(get("From"), "\"Driftless\" <driftless@example.com>");
    assert_eq!(
        get("To"),
        "ops@example.com, \"On Call\" <oncall@example.org>"
    );
    assert_eq!(
        get("Subject"),
        "Driftless team-a: 1 drifted, 1 back in sync, 1 failed"
    );
    assert_eq!(
        get("Message-ID"),
        "<3f0c2a9e-0b7d-4a57-9d0e-4b1f2c3d4e5f-7.mail@example.com>"
    );
    assert_eq!(get("Message-ID"), message_id(m.id, &envelope));
    assert_eq!(get("Content-Type"), "text/plain; charset=utf-8");
    assert_eq!(get("Content-Transfer-Encoding"), "quoted-printable");
    assert_eq!(get("X-Driftless-Delivery"), m.id);
    // Another receiver of the same group: another Message-ID.
    let other = Envelope {
        receiver: "mail-2",
        ..envelope
    };
    assert_ne!(message_id(m.id, &other), message_id(m.id, &envelope));
}

#[test]
fn every_line_is_short_ascii_and_ends_with_crlf() {
    let mut e = events();
    e.push(Transition {
        target: format!("infra/{}", "ü".repeat(120)),
        error: Some(format!("{} = trailing space ", "x".repeat(200))),
        ..t("long", None, DriftStatus::Error)
    });
    let mut m = message(&e, Some("https://dash.example.com"));
    m.namespace = "a-namespace-with-a-long-name-that-makes-the-subject-wrap-over-the-line";
    let from = Mailbox::parse("Drïftless Bot <driftless@example.com>").unwrap();
    let to = mailboxes(&[
        "first.recipient@example.com",
        "second.recipient@example.com",
        "third.recipient@example.com",
        "Fourth \"Quoted\" Person <fourth@example.com>",
    ]);
    let mail = render(
        &m,
        &Envelope {
            from: &from,
            to: &to,
            receiver: "mail",
            date: date(),
        },
    );
    assert!(mail.is_ascii(), "an 8-bit byte in the message");
    let text = std::str::from_utf8(&mail).unwrap();
    assert!(text.ends_with("\r\n"));
    assert!(
        !text.replace("\r\n", "").contains(['\r', '\n']),
        "a bare CR or LF"
    );
    let (head, body) = split(&mail);
    for line in head.split("\r\n") {
        assert!(
            line.len() <= MAX_HEADER_LINE,
            "header line too long: {line:?}"
        );
    }
    for line in body.split("\r\n") {
        assert!(line.len() <= MAX_BODY_LINE, "body line too long: {line:?}");
        assert!(
            !line.ends_with(' ') && !line.ends_with('\t'),
            "trailing blank: {line:?}"
        );
    }
    // Folded headers unfold to the same values.
    let h = headers(&head);
    let subject = &h.iter().find(|(k, _)| k == "Subject").unwrap().1;
    assert_eq!(subject, &m.headline());
    let from_header = &h.iter().find(|(k, _)| k == "From").unwrap().1;
    let word = from_header
        .strip_prefix("=?utf-8?B?")
        .and_then(|w| w.strip_suffix("?= <driftless@example.com>"))
        .unwrap();
    let name = base64::engine::general_purpose::STANDARD
        .decode(word)
        .unwrap();
    assert_eq!(String::from_utf8(name).unwrap(), "Drïftless Bot");
    let to_header = &h.iter().find(|(k, _)| k == "To").unwrap().1;
    assert!(to_header.ends_with("\"Fourth \\\"Quoted\\\" Person\" <fourth@example.com>"));
    // The body decodes to the plain text.
    assert_eq!(qp_decode(&body), super::message::body(&m));
}

#[test]
fn body_lists_targets_with_links_and_indented_errors() {
    let e = events();
    let mut m = message(&e, Some("https://dash.example.com/"));
    m.max_listed = 2;
    m.omitted = 4;
    assert_eq!(
        body(&m),
        "Driftless team-a: 1 drifted, 1 back in sync, 1 failed, 4 more not listed\n\
         \n\
         - infra/net (stack): InSync → Drifted (+1 ~2 -0)\n  \
           https://dash.example.com/namespaces/team-a/driftreports/net\n\
         - infra/db (stack): Drifted → InSync\n  \
           https://dash.example.com/namespaces/team-a/driftreports/db\n\
         … and 5 more\n\
         \n\
         NotificationPolicy team-a/ops, delivery 3f0c2a9e-0b7d-4a57-9d0e-4b1f2c3d4e5f-7\n"
    );
    m.max_listed = 50;
    m.dashboard_url = None;
    let text = body(&m);
    assert!(
        text.contains("- infra/dns (stack): new → Error: plan failed:\n    .terraform is stale\n"),
        "{text}"
    );
    assert!(!text.contains("https://"));
}

#[test]
fn quoted_printable_encodes_what_it_must_and_round_trips() {
    let text = "a=b\ttab\nend space \nnon-ascii → ü\n\x07bell\n\n";
    let qp = quoted_printable(text);
    assert_eq!(
        qp,
        "a=3Db\ttab\r\nend space=20\r\nnon-ascii =E2=86=92 =C3=BC\r\n=07bell\r\n\r\n"
    );
    assert_eq!(qp_decode(&qp), text);
    // A long line gets soft breaks, never inside an =XX, each line at most 76.
    let long = format!("{}\n", "é".repeat(100));
    let qp = quoted_printable(&long);
    for line in qp.split("\r\n") {
        assert!(line.len() <= MAX_BODY_LINE, "{line}");
        assert!(line.is_empty() || line.starts_with('='), "{line}");
    }
    assert_eq!(qp_decode(&qp), long);
    // 76 characters fit without a break; 77 do not.
    let exact = format!("{}\n", "x".repeat(76));
    assert_eq!(quoted_printable(&exact), format!("{}\r\n", "x".repeat(76)));
    let over = format!("{}\n", "x".repeat(77));
    assert_eq!(
        quoted_printable(&over),
        format!("{}=\r\nxx\r\n", "x".repeat(75))
    );
}

#[test]
fn dot_stuffing_doubles_leading_dots_and_terminates() {
    assert_eq!(
        dot_stuff(b".first\r\nmid.dle\r\n.\r\n..two\r\nlast"),
        b"..first\r\nmid.dle\r\n..\r\n...two\r\nlast\r\n.\r\n".to_vec()
    );
    assert_eq!(dot_stuff(b"ends\r\n"), b"ends\r\n.\r\n".to_vec());
    // A soft line break that puts a dot at the start of a line is stuffed too.
    let line = format!("{}.tail\n", "x".repeat(75));
    let qp = quoted_printable(&line);
    assert_eq!(qp, format!("{}=\r\n.tail\r\n", "x".repeat(75)));
    let data = dot_stuff(qp.as_bytes());
    assert!(std::str::from_utf8(&data)
        .unwrap()
        .contains("=\r\n..tail\r\n.\r\n"));
}

#[test]
fn fold_breaks_between_words_only() {
    let words: Vec<String> = (0..30).map(|i| format!("word{i}")).collect();
    let folded = fold("Subject", &words);
    for line in folded.trim_end_matches("\r\n").split("\r\n") {
        assert!(line.len() <= MAX_HEADER_LINE);
    }
    assert_eq!(
        folded.replace("\r\n ", " "),
        format!("Subject: {}\r\n", words.join(" "))
    );
    // A word longer than a line stays whole on its own line.
    let long = vec!["short".to_owned(), "x".repeat(100)];
    assert_eq!(
        fold("To", &long),
        format!("To: short\r\n {}\r\n", "x".repeat(100))
    );
}

#[test]
fn mailboxes_parse_and_reject_with_a_reason() {
    assert_eq!(
        Mailbox::parse(" ops@example.com ").unwrap(),
        Mailbox {
            name: None,
            address: "ops@example.com".into()
        }
    );
    assert_eq!(
        Mailbox::parse("\"Ops, Team\" <ops+drift@mail.example.com>").unwrap(),
        Mailbox {
            name: Some("Ops, Team".into()),
            address: "ops+drift@mail.example.com".into()
        }
    );
    assert_eq!(
        Mailbox::parse("ops@example.com").unwrap().domain(),
        "example.com"
    );
    for bad in [
        "",
        "ops",
        "@example.com",
        "ops@",
        "o ps@example.com",
        "ops@exa_mple.com",
        "ops@-example.com",
        "a..b@example.com",
        "ops@example.com>",
        "ops@example.com\r\nBcc: x@example.com",
        "Na\r\nme <ops@example.com>",
        "ops@bücher.example",
    ] {
        let err = Mailbox::parse(bad).unwrap_err();
        assert!(
            err.contains("not an e-mail address") || err.contains("control characters"),
            "{bad:?}: {err}"
        );
    }
}

fn keys(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn config_defaults_to_starttls_on_587() {
    let c = Config::from_keys(
        "mail",
        &keys(&[
            ("host", " smtp.example.com\n"),
            ("from", "driftless@example.com"),
            ("to", "a@example.com, b@example.com,"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server.host, "smtp.example.com");
    assert_eq!(c.server.port, 587);
    assert_eq!(c.server.tls, Tls::StartTls);
    assert!(c.server.credentials.is_none());
    assert!(!c.server.roots.is_empty(), "no public roots");
    assert_eq!(c.to.len(), 2);
    let c = Config::from_keys(
        "mail",
        &keys(&[
            ("host", "smtp.example.com"),
            ("from", "driftless@example.com"),
            ("to", "a@example.com"),
            ("tls", "TLS"),
            ("username", "bot"),
            ("password", " pass word "),
        ]),
    )
    .unwrap();
    assert_eq!((c.server.port, c.server.tls), (465, Tls::Implicit));
    let creds = c.server.credentials.unwrap();
    assert_eq!(creds.username, "bot");
    // Passwords are taken as they are.
    assert_eq!(creds.password.expose(), " pass word ");
}

#[test]
fn config_reports_every_problem_without_secret_values() {
    let err = Config::from_keys(
        "mail",
        &keys(&[
            ("from", "not-an-address"),
            ("to", "a@example.com, nope"),
            ("port", "99999"),
            ("tls", "ssl"),
            ("password", "hunter2-secret"),
            ("ca.crt", "not pem"),
        ]),
    )
    .unwrap_err();
    for want in [
        "Secret mail: ",
        "no key \"host\"",
        "key \"from\": \"not-an-address\" is not an e-mail address",
        "key \"to\": \"nope\" is not an e-mail address",
        "key \"port\": \"99999\" is not a port",
        "key \"tls\": \"ssl\" is not one of starttls (the default), tls",
        "keys \"username\" and \"password\" must be set together",
        "key \"ca.crt\": expected PEM certificates",
    ] {
        assert!(err.contains(want), "{want:?} missing from {err}");
    }
    assert!(!err.contains("hunter2"), "{err}");
    let err = Config::from_keys(
        "mail",
        &keys(&[("host", "h"), ("from", "a@example.com"), ("to", " , ")]),
    )
    .unwrap_err();
    assert!(err.contains("no address"), "{err}");
}

#[test]
fn reply_lines_and_extensions_parse() {
    assert_eq!(
        parse_line("250-smtp.example.com").unwrap(),
        (250, false, "smtp.example.com")
    );
    assert_eq!(parse_line("250 OK").unwrap(), (250, true, "OK"));
    assert_eq!(parse_line("354").unwrap(), (354, true, ""));
    for bad in ["", "25", "OK 250", "250x", "650 no", "2a0 x"] {
        assert!(parse_line(bad).is_err(), "{bad:?}");
    }
    let reply = Reply {
        code: 250,
        lines: vec![
            "smtp.example.com Hello".into(),
            "SIZE 1000000".into(),
            "starttls".into(),
            "AUTH login Plain".into(),
            "AUTH=CRAM-MD5".into(),
        ],
    };
    assert_eq!(
        Extensions::parse(&reply),
        Extensions {
            starttls: true,
            auth: vec!["LOGIN".into(), "PLAIN".into(), "CRAM-MD5".into()],
        }
    );
    // The greeting line is not an extension.
    let only = Reply {
        code: 250,
        lines: vec!["STARTTLS".into()],
    };
    assert!(!Extensions::parse(&only).starttls);
}

#[test]
fn body_lists_rollouts_first_with_their_message() {
    use driftless_crds::notification_policy::{RolloutEvent, RolloutTransition};
    let e = events();
    let r = [RolloutTransition {
        policy: "web".into(),
        from: None,
        to: RolloutEvent::RolledBack,
        revision: Some("web-7".into()),
        node: None,
        message: Some("revision web-7 failed on node n1: unit failed; the nodes that took it were assigned web-6 again".into()),
        seen_at: time(date()),
    }];
    let mut m = message(&e, None);
    m.rollouts = &r;
    m.max_listed = 2;
    let text = body(&m);
    assert!(
        text.starts_with(
            "Driftless team-a: 1 drifted, 1 back in sync, 1 failed, 1 rollout rolled back\n\n\
             - ApplyPolicy web: new → RolledBack (revision web-7)\n    \
             revision web-7 failed on node n1: unit failed; the nodes that took it were assigned web-6 again\n\
             - infra/net (stack): InSync → Drifted (+1 ~2 -0)\n\
             … and 2 more\n"
        ),
        "{text}"
    );
    // The long message line is soft-broken on the wire and decodes back.
    assert_eq!(qp_decode(&quoted_printable(&text)), text);
}
