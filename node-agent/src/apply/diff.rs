//! Unified diffs of file content with secrets masked. `apply --dry-run`, `drift check`, the
//! node's DriftReport and audit records all show the diff rendered here.
//!
//! Guarantees:
//! - The format is the classic unified diff (`--- PATH (live)`, `+++ PATH (desired)`, hunks
//!   with 3 lines of context, `\ No newline at end of file`), line for line what `diff -u`
//!   aligns.
//! - Every byte of either text that holds a secret value the policy knows is shown as
//!   `<redacted>` (a run of masked bytes on one line is one `<redacted>`); the rest of that line
//!   and every other line are shown as they are.
//! - A live line replaced by a desired line that carries a secret may hold an *earlier* value
//!   of that secret, which the policy no longer knows (a rotated secret). Such a live line is
//!   masked where it matches the literal text around the secret on a desired line
//!   (`password=old` against `password=${secret:DB}` shows `-password=<redacted>`). In a changed
//!   block where some secret-bearing desired line matched no live line, the live lines of that
//!   block that match no such pattern are shown as `<redacted>` whole.
//!
//! Caveat: an earlier secret value on a live line that neither has the shape of a current
//! secret-bearing line nor sits in a changed block with one (the line was moved, reworded and
//! its secret rotated at once) is not known to be a secret and is shown.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Range;

use driftless_crds::secret::{Redactor, REDACTED};
use similar::udiff::UnifiedHunkHeader;
use similar::{ChangeTag, DiffOp, TextDiff};

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// The unified diff from `before` (live) to `after` (desired), labelled with `path`, secrets
/// masked as the module documents; `None` when the texts are equal.
pub fn unified_diff(path: &str, before: &str, after: &str, redactor: &Redactor) -> Option<String> {
    if before == after {
        return None;
    }
    let diff = TextDiff::from_lines(before, after);
    let mut old = Side::new(diff.old_slices(), redactor);
    let new = Side::new(diff.new_slices(), redactor);
    mask_replaced(diff.ops(), &mut old, &new);
    let terminated = diff.newline_terminated();
    let mut out = format!("--- {path} (live)\n+++ {path} (desired)\n");
    for group in diff.grouped_ops(CONTEXT) {
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{}", UnifiedHunkHeader::new(&group));
        for op in &group {
            for change in diff.iter_changes(op) {
                let (tag, line) = match (change.tag(), change.old_index(), change.new_index()) {
                    (ChangeTag::Equal, Some(o), Some(n)) => {
                        let mut masks = old.masks[o].clone();
                        masks.extend(new.masks[n].iter().cloned());
                        (' ', render(old.lines[o], &masks))
                    }
                    (ChangeTag::Delete, Some(o), _) => ('-', render(old.lines[o], &old.masks[o])),
                    (ChangeTag::Insert, _, Some(n)) => ('+', render(new.lines[n], &new.masks[n])),
                    // similar always gives the indices its tag implies.
                    _ => continue,
                };
                out.push(tag);
                out.push_str(&line);
                if !terminated {
                    out.push('\n');
                } else if change.missing_newline() {
                    out.push_str("\n\\ No newline at end of file\n");
                }
            }
        }
    }
    Some(out)
}

/// A live line that the desired line `desired` (after substitution) replaces, masked like a
/// replaced line of a diff: known secret values, the secret positions of `desired` when the
/// live line has its shape, or the whole line when `desired` carries a secret and the live line
/// does not have its shape.
pub fn mask_replaced_line(live: &str, desired: &str, redactor: &Redactor) -> String {
    let mut old = Side::new(&[live], redactor);
    let new = Side::new(&[desired], redactor);
    mask_replaced(
        &[DiffOp::Replace {
            old_index: 0,
            old_len: 1,
            new_index: 0,
            new_len: 1,
        }],
        &mut old,
        &new,
    );
    render(live, &old.masks[0])
}

/// One side of a diff: its lines (with their line breaks) and, per line, the byte ranges to
/// mask.
struct Side<'a> {
    lines: Vec<&'a str>,
    masks: Vec<Vec<Range<usize>>>,
}

impl<'a> Side<'a> {
    /// The lines with the known secret values masked. Secrets are found in the whole text, so
    /// a value that spans lines masks its part of each.
    fn new(lines: &[&'a str], redactor: &Redactor) -> Self {
        let mut masks = vec![Vec::new(); lines.len()];
        if !redactor.is_empty() {
            let text: String = lines.concat();
            let mut starts = Vec::with_capacity(lines.len());
            let mut at = 0;
            for line in lines {
                starts.push(at);
                at += line.len();
            }
            for found in redactor.find(&text) {
                let first = starts
                    .partition_point(|&s| s <= found.start)
                    .saturating_sub(1);
                for i in first..lines.len() {
                    let (start, end) = (starts[i], starts[i] + lines[i].len());
                    if start >= found.end {
                        break;
                    }
                    let (a, b) = (found.start.max(start) - start, found.end.min(end) - start);
                    if a < b {
                        masks[i].push(a..b);
                    }
                }
            }
        }
        Self {
            lines: lines.to_vec(),
            masks,
        }
    }

    fn secret_bearing(&self, i: usize) -> bool {
        !self.masks[i].is_empty()
    }
}

/// A line without its line break.
fn body(line: &str) -> &str {
    line.strip_suffix('\n').unwrap_or(line)
}

/// Masks clipped to the line's body, sorted, empty ones dropped, overlapping and adjacent ones
/// merged.
fn normalized(line: &str, masks: &[Range<usize>]) -> Vec<Range<usize>> {
    let len = body(line).len();
    let mut sorted: Vec<Range<usize>> = masks
        .iter()
        .map(|r| r.start.min(len)..r.end.min(len))
        .filter(|r| r.start < r.end)
        .collect();
    sorted.sort_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<usize>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The line with each masked run replaced by `<redacted>`, its line break kept.
fn render(line: &str, masks: &[Range<usize>]) -> String {
    let text = body(line);
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    for r in normalized(line, masks) {
        // Ranges come from substring searches, so they sit on character boundaries; a range
        // that did not would hide more, never less.
        out.push_str(text.get(at..r.start).unwrap_or_default());
        out.push_str(REDACTED);
        at = r.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    if line.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The literal text around the secrets of a secret-bearing line (`password=S;` gives
/// `["password=", ";"]`), or `None` when that text is only white space: such a line has no
/// shape to recognise.
fn skeleton<'a>(line: &'a str, masks: &[Range<usize>]) -> Option<Vec<&'a str>> {
    let text = body(line);
    let mut pieces = Vec::new();
    let mut at = 0;
    for r in normalized(line, masks) {
        pieces.push(text.get(at..r.start)?);
        at = r.end;
    }
    pieces.push(text.get(at..)?);
    pieces
        .iter()
        .any(|p| !p.trim().is_empty())
        .then_some(pieces)
}

/// Where the secrets would be if `line` had the shape `pieces` (literal text around each
/// secret): one range per secret, or `None` when it does not have that shape.
fn slots(line: &str, pieces: &[&str]) -> Option<Vec<Range<usize>>> {
    let text = body(line);
    let (first, rest) = pieces.split_first()?;
    let (last, middle) = rest.split_last()?;
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return None;
    }
    let end = text.len() - last.len();
    let mut at = first.len();
    let mut out = Vec::with_capacity(pieces.len() - 1);
    for piece in middle {
        let found = at + text.get(at..end)?.find(piece)?;
        out.push(at..found);
        at = found + piece.len();
    }
    if at > end {
        return None;
    }
    out.push(at..end);
    Some(out)
}

/// Masks the live lines that may hold an earlier secret value (see the module's guarantees).
fn mask_replaced(ops: &[DiffOp], old: &mut Side, new: &Side) {
    let shapes: Vec<(usize, Vec<&str>)> = (0..new.lines.len())
        .filter(|&j| new.secret_bearing(j))
        .filter_map(|j| skeleton(new.lines[j], &new.masks[j]).map(|s| (j, s)))
        .collect();
    for op in ops {
        let (olds, news) = match *op {
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index..old_index + old_len, 0..0),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (
                old_index..old_index + old_len,
                new_index..new_index + new_len,
            ),
            DiffOp::Equal { .. } | DiffOp::Insert { .. } => continue,
        };
        // Shapes of this block's desired lines first: a replaced line most likely became one.
        let local = |j: &usize| news.contains(j);
        let ordered: Vec<&(usize, Vec<&str>)> = shapes
            .iter()
            .filter(|(j, _)| local(j))
            .chain(shapes.iter().filter(|(j, _)| !local(j)))
            .collect();
        let mut claimed = BTreeSet::new();
        let mut unmatched = Vec::new();
        for i in olds {
            let hit = ordered
                .iter()
                .find_map(|entry| slots(old.lines[i], &entry.1).map(|s| (&entry.1, s)));
            match hit {
                Some((shape, found)) => {
                    old.masks[i].extend(found);
                    claimed.extend(shapes.iter().filter(|(_, s)| s == shape).map(|(j, _)| *j));
                }
                None => unmatched.push(i),
            }
        }
        let unclaimed = news
            .clone()
            .any(|j| new.secret_bearing(j) && !claimed.contains(&j));
        if unclaimed {
            for i in unmatched {
                let whole = 0..body(old.lines[i]).len();
                old.masks[i] = std::iter::once(whole).collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_crds::secret::SecretString;

    fn redactor(values: &[&str]) -> Redactor {
        Redactor::new(values.iter().map(|v| SecretString::new(*v)))
    }

    #[test]
    fn without_secrets_it_is_the_classic_unified_diff() {
        let cases = [
            ("a\nb\nc\n", "a\nB\nc\n"),
            ("", "new\n"),
            ("gone\n", ""),
            ("x\ny", "x\nz"),
            ("x\ny", "x\ny\n"),
            (
                "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n",
                "1\n2\nthree\n4\n5\n6\n7\n8\n9\n10\neleven\n12\n",
            ),
        ];
        for (before, after) in cases {
            let expected = TextDiff::from_lines(before, after)
                .unified_diff()
                .context_radius(3)
                .header("/f (live)", "/f (desired)")
                .to_string();
            assert_eq!(
                unified_diff("/f", before, after, &Redactor::default()).as_deref(),
                Some(expected.as_str()),
                "{before:?} → {after:?}"
            );
        }
        assert_eq!(
            unified_diff("/f", "same", "same", &Redactor::default()),
            None
        );
    }

    #[test]
    fn only_the_secret_is_masked_and_a_neighbouring_change_stays_visible() {
        let live = "port=1\npassword=hunter2\nuser=app\n";
        let desired = "port=2\npassword=hunter2\nuser=app\n";
        let d = unified_diff("/etc/app.conf", live, desired, &redactor(&["hunter2"])).unwrap();
        assert_eq!(
            d,
            "--- /etc/app.conf (live)\n+++ /etc/app.conf (desired)\n@@ -1,3 +1,3 @@\n-port=1\n+port=2\n password=<redacted>\n user=app\n"
        );
    }

    #[test]
    fn a_rotated_secret_is_masked_by_the_shape_of_its_line() {
        let live = "port=1\npassword=oldpass\n";
        let desired = "port=2\npassword=newpass\n";
        let d = unified_diff("/c", live, desired, &redactor(&["newpass"])).unwrap();
        assert!(!d.contains("oldpass") && !d.contains("newpass"), "{d}");
        assert!(
            d.contains("-port=1\n-password=<redacted>\n+port=2\n+password=<redacted>\n"),
            "{d}"
        );
        // Moved elsewhere, same shape: still recognised.
        let live = "password=oldpass\na\nb\nc\nd\ne\nf\ng\n";
        let desired = "a\nb\nc\nd\ne\nf\ng\npassword=newpass\n";
        let d = unified_diff("/c", live, desired, &redactor(&["newpass"])).unwrap();
        assert!(!d.contains("oldpass"), "{d}");
        assert!(d.contains("-password=<redacted>\n"), "{d}");
    }

    #[test]
    fn a_replaced_line_of_unknown_shape_is_masked_whole() {
        // The whole line is the secret: no shape to recognise.
        let live = "OLDTOKEN\n";
        let desired = "NEWTOKEN\n";
        let d = unified_diff("/t", live, desired, &redactor(&["NEWTOKEN"])).unwrap();
        assert!(d.ends_with("-<redacted>\n+<redacted>\n"), "{d}");
        // Reworded and rotated at once.
        let live = "a\npass = oldpass\nb\n";
        let desired = "a\npassword=newpass\nb\n";
        let d = unified_diff("/t", live, desired, &redactor(&["newpass"])).unwrap();
        assert!(d.contains("\n-<redacted>\n+password=<redacted>\n"), "{d}");
    }

    #[test]
    fn multi_line_secrets_are_masked_on_every_line() {
        let key = "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n";
        let desired = format!("# key\n{key}");
        let d = unified_diff("/k", "# key\n", &desired, &redactor(&[key])).unwrap();
        assert!(!d.contains("AAAA") && !d.contains("BEGIN"), "{d}");
        assert!(
            d.ends_with("+<redacted>\n+<redacted>\n+<redacted>\n"),
            "{d}"
        );
        let live = format!("# key\n{}", key.replace("AAAA", "BBBB"));
        let d = unified_diff("/k", &live, &desired, &redactor(&[key])).unwrap();
        assert!(!d.contains("AAAA") && !d.contains("BBBB"), "{d}");
    }

    #[test]
    fn replaced_lines_outside_diffs() {
        let r = redactor(&["newpass"]);
        assert_eq!(
            mask_replaced_line("password=old", "password=newpass", &r),
            "password=<redacted>"
        );
        assert_eq!(
            mask_replaced_line("pw: old", "password=newpass", &r),
            REDACTED
        );
        assert_eq!(mask_replaced_line("port=1", "port=2", &r), "port=1");
    }
}
