//! The Prometheus text format as node_exporter 1.5's textfile collector reads it (the rules of
//! `expfmt.TextParser` in prometheus/common 0.37): what it accepts, this accepts; what it refuses
//! (a file without its final newline, a `TYPE` after the family's first sample, a trailing blank
//! after a value, an invalid escape, a duplicate label name, ...), this refuses with the line
//! number and the reason.
//!
//! Summaries and histograms are grouped the way that parser groups them: `NAME_sum`,
//! `NAME_count` (and `NAME_bucket`) lines belong to the family `NAME` when it was declared a
//! summary (histogram) before them, and samples with the same labels other than `quantile`
//! (`le`) are one metric.

use std::collections::{BTreeMap, HashMap};

use crate::metrics::Kind;

/// A parse error: the line (1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("text format parsing error in line {line}: {message}")]
pub struct ParseError {
    /// Line number, 1-based.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One parsed family.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFamily {
    /// Metric name.
    pub name: String,
    /// `# HELP` text, unescaped.
    pub help: Option<String>,
    /// `# TYPE`, or untyped when the first sample came first.
    pub kind: Option<Kind>,
    /// Metrics in file order.
    pub metrics: Vec<ParsedMetric>,
}

/// One metric of a family: labels (without `quantile`/`le` in summaries/histograms) and value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedMetric {
    /// Label names and values in file order.
    pub labels: Vec<(String, String)>,
    /// The value of a counter, gauge or untyped metric.
    pub value: f64,
    /// Whether a sample of it carried a timestamp.
    pub timestamp: bool,
    /// Summaries and histograms: `_count` (as an unsigned integer, like the parser stores it).
    pub count: u64,
    /// Summaries and histograms: `_sum`.
    pub sum: f64,
    /// Summaries: `(quantile, value)`; histograms: `(upper bound, cumulative count)`.
    pub points: Vec<(f64, f64)>,
}

/// Parses a whole file. Families without samples are left out.
pub fn parse(input: &[u8]) -> Result<Vec<ParsedFamily>, ParseError> {
    let mut parser = Parser::default();
    let mut rest = input;
    let mut line_no = 0;
    loop {
        line_no += 1;
        let (line, terminated) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        if !terminated {
            // Only blanks may follow the last newline: anything else ends before its line does.
            if line.iter().all(|&b| b == b' ' || b == b'\t') {
                break;
            }
            return Err(ParseError {
                line: line_no,
                message: "unexpected end of input stream".into(),
            });
        }
        parser.line(line).map_err(|message| ParseError {
            line: line_no,
            message,
        })?;
        rest = &rest[line.len() + 1..];
    }
    Ok(parser
        .families
        .into_iter()
        .filter(|f| !f.metrics.is_empty())
        .collect())
}

#[derive(Default)]
struct Parser {
    families: Vec<ParsedFamily>,
    by_name: HashMap<String, usize>,
    /// Per summary/histogram family: label signature → metric index.
    groups: HashMap<usize, HashMap<Vec<(String, String)>, usize>>,
}

/// What a sample line's name says about its place in a summary or histogram.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Plain,
    Count,
    Sum,
}

/// A cursor over one line; past the end it reads `\n`, as the parser sees the line's end.
struct Cursor<'a> {
    line: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> u8 {
        self.line.get(self.at).copied().unwrap_or(b'\n')
    }
    fn at_end(&self) -> bool {
        self.at >= self.line.len()
    }
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), b' ' | b'\t') {
            self.at += 1;
        }
    }
    /// Bytes up to the next blank, tab or the end.
    fn token(&mut self) -> &[u8] {
        let start = self.at;
        while !self.at_end() && !matches!(self.peek(), b' ' | b'\t') {
            self.at += 1;
        }
        &self.line[start..self.at]
    }
    fn name(&mut self, metric: bool) -> String {
        let start = self.at;
        let first = |b: u8| b.is_ascii_alphabetic() || b == b'_' || (metric && b == b':');
        if self.at_end() || !first(self.peek()) {
            return String::new();
        }
        while !self.at_end() && (first(self.peek()) || self.peek().is_ascii_digit()) {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.line[start..self.at]).into_owned()
    }
    fn rest(&mut self) -> &[u8] {
        let rest = &self.line[self.at.min(self.line.len())..];
        self.at = self.line.len();
        rest
    }
}

impl Parser {
    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        let mut c = Cursor { line, at: 0 };
        c.skip_blanks();
        if c.at_end() {
            return Ok(());
        }
        if c.peek() == b'#' {
            c.at += 1;
            return self.comment(&mut c);
        }
        self.sample(&mut c)
    }

    fn comment(&mut self, c: &mut Cursor) -> Result<(), String> {
        c.skip_blanks();
        let keyword = c.token().to_vec();
        if c.at_end() || (keyword != b"HELP" && keyword != b"TYPE") {
            return Ok(());
        }
        c.skip_blanks();
        let name = c.name(true);
        if c.at_end() {
            return Ok(());
        }
        if !matches!(c.peek(), b' ' | b'\t') {
            return Err("invalid metric name in comment".into());
        }
        let (index, _) = self.family(&name);
        c.skip_blanks();
        if c.at_end() {
            return Ok(());
        }
        let family = &mut self.families[index];
        if keyword == b"HELP" {
            if family.help.is_some() {
                return Err(format!(
                    "second HELP line for metric name {:?}",
                    family.name
                ));
            }
            family.help = Some(unescape_help(c.rest())?);
        } else {
            if family.kind.is_some() {
                return Err(format!(
                    "second TYPE line for metric name {:?}, or TYPE reported after samples",
                    family.name
                ));
            }
            let word = String::from_utf8_lossy(c.rest()).to_ascii_uppercase();
            family.kind = Some(match word.as_str() {
                "COUNTER" => Kind::Counter,
                "GAUGE" => Kind::Gauge,
                "UNTYPED" => Kind::Untyped,
                "SUMMARY" => Kind::Summary,
                "HISTOGRAM" => Kind::Histogram,
                _ => return Err(format!("unknown metric type {word:?}")),
            });
        }
        Ok(())
    }

    /// The family a name belongs to, created when new: `NAME_count`/`NAME_sum` (`_bucket`)
    /// belong to an existing summary (histogram) `NAME`.
    fn family(&mut self, name: &str) -> (usize, Part) {
        if let Some(&i) = self.by_name.get(name) {
            return (i, Part::Plain);
        }
        let (base, part) = if let Some(b) = name.strip_suffix("_count").filter(|b| !b.is_empty()) {
            (Some(b), Part::Count)
        } else if let Some(b) = name.strip_suffix("_sum").filter(|b| !b.is_empty()) {
            (Some(b), Part::Sum)
        } else {
            (None, Part::Plain)
        };
        if let Some(&i) = base.and_then(|b| self.by_name.get(b)) {
            if self.families[i].kind == Some(Kind::Summary) {
                return (i, part);
            }
        }
        let histogram_base =
            base.or_else(|| name.strip_suffix("_bucket").filter(|b| !b.is_empty()));
        if let Some(&i) = histogram_base.and_then(|b| self.by_name.get(b)) {
            if self.families[i].kind == Some(Kind::Histogram) {
                return (i, part);
            }
        }
        self.families.push(ParsedFamily {
            name: name.to_owned(),
            help: None,
            kind: None,
            metrics: Vec::new(),
        });
        self.by_name
            .insert(name.to_owned(), self.families.len() - 1);
        (self.families.len() - 1, Part::Plain)
    }

    fn sample(&mut self, c: &mut Cursor) -> Result<(), String> {
        let name = c.name(true);
        if name.is_empty() {
            return Err("invalid metric name".into());
        }
        let (index, part) = self.family(&name);
        let kind = *self.families[index].kind.get_or_insert(Kind::Untyped);
        let family_name = self.families[index].name.clone();
        c.skip_blanks();
        let mut labels: Vec<(String, String)> = Vec::new();
        // Labels without quantile/le, for grouping summaries and histograms.
        let mut signature: BTreeMap<String, String> = BTreeMap::new();
        let mut point: Option<f64> = None;
        if c.peek() == b'{' {
            c.at += 1;
            loop {
                c.skip_blanks();
                if c.peek() == b'}' {
                    c.at += 1;
                    c.skip_blanks();
                    break;
                }
                let label = c.name(false);
                if label.is_empty() {
                    return Err(format!("invalid label name for metric {family_name:?}"));
                }
                if label == "__name__" {
                    return Err("label name \"__name__\" is reserved".into());
                }
                let special = (kind == Kind::Summary && label == "quantile")
                    || (kind == Kind::Histogram && label == "le");
                c.skip_blanks();
                if c.peek() != b'=' {
                    return Err(format!(
                        "expected '=' after label name, found {:?}",
                        char::from(c.peek())
                    ));
                }
                c.at += 1;
                if !special && labels.iter().any(|(l, _)| *l == label) {
                    return Err(format!("duplicate label names for metric {family_name:?}"));
                }
                c.skip_blanks();
                if c.peek() != b'"' {
                    return Err(format!(
                        "expected '\"' at start of label value, found {:?}",
                        char::from(c.peek())
                    ));
                }
                c.at += 1;
                let value = label_value(c)?;
                if special {
                    let what = if kind == Kind::Summary {
                        "quantile"
                    } else {
                        "le"
                    };
                    point = Some(parse_float(&value).ok_or_else(|| {
                        format!("expected float as value for '{what}' label, got {value:?}")
                    })?);
                } else {
                    signature.insert(label.clone(), value.clone());
                    labels.push((label, value));
                }
                c.skip_blanks();
                match c.peek() {
                    b',' => c.at += 1,
                    b'}' => {
                        c.at += 1;
                        c.skip_blanks();
                        break;
                    }
                    _ => {
                        return Err(format!(
                            "unexpected end of label value {:?}",
                            labels.last().map(|(_, v)| v.as_str()).unwrap_or("")
                        ))
                    }
                }
            }
        }
        let metric = self.metric_for(index, kind, labels, signature);
        let token = c.token();
        let text = String::from_utf8_lossy(token).into_owned();
        let value =
            parse_float(&text).ok_or_else(|| format!("expected float as value, got {text:?}"))?;
        let m = &mut self.families[index].metrics[metric];
        match kind {
            Kind::Counter | Kind::Gauge | Kind::Untyped => m.value = value,
            Kind::Summary | Kind::Histogram => match (part, point) {
                // Go's uint64(float64): the parser stores counts as integers.
                (Part::Count, _) => m.count = value as u64,
                (Part::Sum, _) => m.sum = value,
                (Part::Plain, Some(p)) => m.points.push((p, value)),
                (Part::Plain, None) => {}
            },
        }
        if c.at_end() {
            return Ok(());
        }
        c.skip_blanks();
        let token = String::from_utf8_lossy(c.token()).into_owned();
        if token.parse::<i64>().is_err() {
            return Err(format!("expected integer as timestamp, got {token:?}"));
        }
        self.families[index].metrics[metric].timestamp = true;
        let rest = c.rest();
        if !rest.is_empty() {
            return Err(format!(
                "spurious string after timestamp: {:?}",
                String::from_utf8_lossy(rest)
            ));
        }
        Ok(())
    }

    /// The metric a sample goes to: a new one, or for summaries and histograms the one with
    /// the same labels.
    fn metric_for(
        &mut self,
        index: usize,
        kind: Kind,
        labels: Vec<(String, String)>,
        signature: BTreeMap<String, String>,
    ) -> usize {
        let family = &mut self.families[index];
        if matches!(kind, Kind::Summary | Kind::Histogram) {
            let groups = self.groups.entry(index).or_default();
            let key: Vec<(String, String)> = signature.into_iter().collect();
            if let Some(&i) = groups.get(&key) {
                return i;
            }
            groups.insert(key, family.metrics.len());
        }
        family.metrics.push(ParsedMetric {
            labels,
            ..Default::default()
        });
        family.metrics.len() - 1
    }
}

/// A label value after its opening quote, up to the closing one: `\"`, `\\` and `\n` escapes.
fn label_value(c: &mut Cursor) -> Result<String, String> {
    let mut value = Vec::new();
    loop {
        if c.at_end() {
            return Err(format!(
                "label value {:?} contains unescaped new-line",
                String::from_utf8_lossy(&value)
            ));
        }
        let b = c.peek();
        c.at += 1;
        match b {
            b'"' => break,
            b'\\' => {
                let e = c.peek();
                c.at += 1;
                match e {
                    b'"' | b'\\' => value.push(e),
                    b'n' => value.push(b'\n'),
                    _ => return Err(format!("invalid escape sequence '\\{}'", char::from(e))),
                }
            }
            _ => value.push(b),
        }
    }
    String::from_utf8(value).map_err(|e| {
        format!(
            "invalid label value {:?}",
            String::from_utf8_lossy(e.as_bytes())
        )
    })
}

/// A `# HELP` text: `\\` and `\n` escapes, nothing else after a backslash.
fn unescape_help(raw: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(&e) => return Err(format!("invalid escape sequence '\\{}'", char::from(e))),
            None => return Err("invalid escape sequence '\\\\n'".into()),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `strconv.ParseFloat(s, 64)` as the text parser calls it: no `p`, `P` or `_`; `Inf`,
/// `Infinity` (signed) and `NaN` (unsigned) in any case; an overflow is an error.
pub fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.contains(['p', 'P', '_']) {
        return None;
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = unsigned.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "infinity" => {
            return Some(if s.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        "nan" => return (unsigned.len() == s.len()).then_some(f64::NAN),
        _ => {}
    }
    // Only digits, one point and an exponent: Rust would take words Go does not.
    if !unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let value: f64 = s.parse().ok()?;
    value.is_finite().then_some(value)
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it (how node_exporter writes
/// `le` and `quantile` label values): shortest digits, exponent form below 1e-4 and from 1e6.
pub fn go_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if value == 0.0 {
        return "0".into();
    }
    let sci = format!("{value:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{point}{rest}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1;
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        format!("{sign}0.{zeros}{digits}")
    } else if point as usize >= digits.len() {
        let zeros = "0".repeat(point as usize - digits.len());
        format!("{sign}{digits}{zeros}")
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<ParsedFamily> {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &str) -> ParseError {
        parse(text.as_bytes()).expect_err(text)
    }

    #[test]
    fn reads_families_labels_escapes_and_types() {
        let families = ok("# HELP a_total Jobs\\\\run\\n.\n# TYPE a_total counter\n\
             a_total{job=\"x \\\"y\\\"\\\\z\\n\" , kind = \"b\",} 3\n\
             \t b 1.5e3\n# a plain comment\n\nc{} -Inf\n");
        assert_eq!(families.len(), 3);
        assert_eq!(families[0].name, "a_total");
        assert_eq!(families[0].help.as_deref(), Some("Jobs\\run\n."));
        assert_eq!(families[0].kind, Some(Kind::Counter));
        assert_eq!(
            families[0].metrics[0].labels,
            [
                ("job".to_owned(), "x \"y\"\\z\n".to_owned()),
                ("kind".to_owned(), "b".to_owned())
            ]
        );
        assert_eq!(families[0].metrics[0].value, 3.0);
        assert_eq!(families[1].kind, Some(Kind::Untyped));
        assert_eq!(families[1].metrics[0].value, 1500.0);
        assert_eq!(families[2].metrics[0].value, f64::NEG_INFINITY);
    }

    #[test]
    fn groups_summaries_and_histograms() {
        let families = ok("# TYPE rpc summary\n\
             rpc{m=\"get\",quantile=\"0.5\"} 0.2\nrpc{m=\"get\",quantile=\"0.99\"} 0.9\n\
             rpc_sum{m=\"get\"} 12\nrpc_count{m=\"get\"} 40\n\
             # TYPE lat histogram\nlat_bucket{le=\"0.1\"} 3\nlat_bucket{le=\"+Inf\"} 5\n\
             lat_sum 1.25\nlat_count 5\n");
        assert_eq!(families.len(), 2);
        let rpc = &families[0].metrics;
        assert_eq!(rpc.len(), 1);
        assert_eq!(rpc[0].points, [(0.5, 0.2), (0.99, 0.9)]);
        assert_eq!((rpc[0].count, rpc[0].sum), (40, 12.0));
        let lat = &families[1].metrics[0];
        assert_eq!(lat.points, [(0.1, 3.0), (f64::INFINITY, 5.0)]);
        assert_eq!((lat.count, lat.sum), (5, 1.25));
        // Without a TYPE first, `_sum` is a family of its own.
        let families = ok("x_sum 1\nx_count 2\n");
        assert_eq!(families.len(), 2);
    }

    #[test]
    fn timestamps_are_read_and_marked() {
        let families = ok("a 1 1700000000000\nb 2\n");
        assert!(families[0].metrics[0].timestamp);
        assert!(!families[1].metrics[0].timestamp);
    }

    #[test]
    fn refuses_what_node_exporter_refuses() {
        for (text, line, message) in [
            ("a 1", 1, "unexpected end of input stream"),
            ("a 1\nb{x=\"y\"} 2", 2, "unexpected end of input stream"),
            ("a 1 \n", 1, "expected integer as timestamp, got \"\""),
            ("a 1 2 3\n", 1, "spurious string after timestamp: \" 3\""),
            ("a one\n", 1, "expected float as value, got \"one\""),
            ("a 1_000\n", 1, "expected float as value, got \"1_000\""),
            ("a 1e999\n", 1, "expected float as value, got \"1e999\""),
            ("a\n", 1, "expected float as value, got \"\""),
            (
                "a{x=\"1\",x=\"2\"} 1\n",
                1,
                "duplicate label names for metric \"a\"",
            ),
            (
                "a{__name__=\"b\"} 1\n",
                1,
                "label name \"__name__\" is reserved",
            ),
            (
                "a{x=y} 1\n",
                1,
                "expected '\"' at start of label value, found 'y'",
            ),
            ("a{x=\"\\t\"} 1\n", 1, "invalid escape sequence '\\t'"),
            (
                "a{x=\"open} 1\n",
                1,
                "label value \"open} 1\" contains unescaped new-line",
            ),
            ("a{1x=\"\"} 1\n", 1, "invalid label name for metric \"a\""),
            (
                "a 1\n# TYPE a gauge\n",
                2,
                "second TYPE line for metric name \"a\", or TYPE reported after samples",
            ),
            (
                "# HELP a x\n# HELP a y\n",
                2,
                "second HELP line for metric name \"a\"",
            ),
            ("# TYPE a gauge \n", 1, "unknown metric type \"GAUGE \""),
            ("# TYPE a-b gauge\n", 1, "invalid metric name in comment"),
            ("# HELP a bad \\t\n", 1, "invalid escape sequence '\\t'"),
            ("-a 1\n", 1, "invalid metric name"),
            (
                "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n",
                2,
                "expected float as value for 'le' label, got \"x\"",
            ),
        ] {
            let e = err(text);
            assert_eq!((e.line, e.message.as_str()), (line, message), "{text:?}");
        }
    }

    #[test]
    fn lenient_where_node_exporter_is() {
        // Trailing blanks after the last newline, comments and HELP without text, `+Inf`.
        assert_eq!(ok("a 1\n  ").len(), 1);
        assert!(ok("# HELP\n# TYPE x\n# HELP y \n#\n").is_empty());
        assert_eq!(ok("a +inf\nb NaN\n")[0].metrics[0].value, f64::INFINITY);
        assert!(ok("b NaN\n")[0].metrics[0].value.is_nan());
        assert!(err("b +NaN\n").message.contains("expected float"));
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        for (v, s) in [
            (0.005, "0.005"),
            (0.5, "0.5"),
            (1.0, "1"),
            (2.5, "2.5"),
            (10.0, "10"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-3.25, "-3.25"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_float(v), s, "{v}");
        }
    }
}
