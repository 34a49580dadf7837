//! The fast reader behind [`super::parse_yaml`]: the plain block-and-flow YAML that
//! configuration is written in, read in one pass straight into JSON values.
//!
//! Guarantees: it decides nothing on its own. Whatever it is not certain to read exactly as the
//! full reader (serde-saphyr) does makes it give up, and the caller reads the text again with
//! the full reader, which returns the value or the error. Giving up covers every error, anchors
//! and aliases, tags, directives, `?` keys, merge keys, folded (`>`) and multi-line scalars,
//! numbers other than decimal integers and floats, escapes other than `\\ \" \/ \n \t \r \u`,
//! tabs outside quoted and literal scalars, control characters, duplicate keys and nesting
//! near the depth limit. So a value it returns is the full reader's value, and every message is
//! the full reader's message; a differential test over the repository's YAML and mutations of
//! it, and the `loader` fuzz target, check that.
//!
//! It runs in time linear in the input: each line is looked at a bounded number of times.

use serde_json::{Map, Value};

/// The fast reader met something it does not read exactly as the full reader would.
#[derive(Debug)]
pub(super) struct GiveUp;

type Read<T> = Result<T, GiveUp>;

/// Deepest nesting read here; deeper input goes to the full reader, which enforces the limit.
const MAX_DEPTH: usize = 100;
/// Most nodes read here; the full reader's budget refuses a stream past 250,000.
const MAX_NODES: usize = 200_000;
/// Most documents read here; the full reader's budget refuses a stream past 1,024.
const MAX_DOCUMENTS: usize = 1_000;
/// Longest implicit key read here; the full reader limits how far it looks for the `:`.
const MAX_KEY_BYTES: usize = 1_000;

/// Longest text read here; the full reader's budget limits scalar text to 64 MiB.
const MAX_TEXT_BYTES: usize = 32 * 1024 * 1024;

/// The documents of `text`, empty ones skipped, or [`GiveUp`].
pub(super) fn parse(text: &str) -> Read<Vec<Value>> {
    if text.len() > MAX_TEXT_BYTES || !plain_characters(text.as_bytes()) {
        return Err(GiveUp);
    }
    Reader {
        s: text.as_bytes(),
        text,
        pos: 0,
        line_start: 0,
        depth: 0,
        nodes: 0,
    }
    .documents()
}

/// No byte order mark, no carriage return and no control character but tab and line feed; no
/// C1 control, NEL, line or paragraph separator, or non-character (the full reader treats some
/// of them as line breaks or refuses them).
fn plain_characters(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match b {
            b'\t' | b'\n' | 0x20..=0x7e => {}
            0xc2 if matches!(s.get(i + 1), Some(0x80..=0x9f)) => return false,
            0xe2 if s.get(i + 1) == Some(&0x80) && matches!(s.get(i + 2), Some(0xa8 | 0xa9)) => {
                return false
            }
            0xef if matches!(
                (s.get(i + 1), s.get(i + 2)),
                (Some(0xbb), Some(0xbf)) | (Some(0xbf), Some(0xbe | 0xbf))
            ) =>
            {
                return false
            }
            0x80.. => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// How a literal block scalar ends (`|`, `|-`, `|+`).
#[derive(Clone, Copy, PartialEq)]
enum Chomp {
    Clip,
    Strip,
    Keep,
}

struct Reader<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    line_start: usize,
    depth: usize,
    nodes: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> u8 {
        self.s.get(self.pos).copied().unwrap_or(0)
    }

    fn byte_at(&self, at: usize) -> u8 {
        self.s.get(at).copied().unwrap_or(0)
    }

    fn col(&self) -> usize {
        self.pos - self.line_start
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// One more node, one level deeper.
    fn enter(&mut self) -> Read<()> {
        self.depth += 1;
        self.count()?;
        if self.depth > MAX_DEPTH {
            return Err(GiveUp);
        }
        Ok(())
    }

    fn count(&mut self) -> Read<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(GiveUp);
        }
        Ok(())
    }

    fn skip_spaces(&mut self) {
        while self.peek() == b' ' {
            self.pos += 1;
        }
    }

    /// At the end of the line's content: end of input, a line break, or a comment (a `#` after
    /// a space or at the start of the line).
    fn at_line_end(&self) -> bool {
        match self.peek() {
            0 | b'\n' => true,
            b'#' => self.pos == self.line_start || self.byte_at(self.pos - 1) == b' ',
            _ => false,
        }
    }

    /// Past the rest of the line, which must hold nothing but spaces and a comment.
    fn end_line(&mut self) -> Read<()> {
        self.skip_spaces();
        if !self.at_line_end() {
            return Err(GiveUp);
        }
        while !self.at_end() && self.peek() != b'\n' {
            self.pos += 1;
        }
        if !self.at_end() {
            self.pos += 1;
            self.line_start = self.pos;
        }
        Ok(())
    }

    /// From the start of a line, past blank and comment lines to the first character of the
    /// next content line; its indentation, or `None` at the end of the input.
    fn next_content(&mut self) -> Read<Option<usize>> {
        loop {
            self.skip_spaces();
            match self.peek() {
                _ if self.at_end() => return Ok(None),
                b'\t' => return Err(GiveUp),
                b'\n' | b'#' => self.end_line()?,
                _ => return Ok(Some(self.col())),
            }
        }
    }

    /// The indentation of the content line the reader stands on, or `None` at the end.
    fn indent_here(&self) -> Option<usize> {
        (!self.at_end()).then(|| self.col())
    }

    /// At a `---` or `...` line (the reader at the start of a content line).
    fn at_document_marker(&self) -> bool {
        self.col() == 0
            && (self.s[self.pos..].starts_with(b"---") || self.s[self.pos..].starts_with(b"..."))
            && matches!(self.byte_at(self.pos + 3), 0 | b' ' | b'\n' | b'\t')
    }

    /// At a block sequence entry: `-` then a space or the end of the line.
    fn at_entry(&self) -> bool {
        self.peek() == b'-' && matches!(self.byte_at(self.pos + 1), 0 | b' ' | b'\n')
    }

    fn documents(&mut self) -> Read<Vec<Value>> {
        let mut documents = Vec::new();
        let mut markers = 0;
        while self.next_content()?.is_some() {
            if self.at_document_marker() {
                markers += 1;
                if markers > MAX_DOCUMENTS {
                    return Err(GiveUp);
                }
                self.pos += 3;
                self.end_line()?;
                continue;
            }
            if self.col() != 0 {
                return Err(GiveUp);
            }
            let value = if self.at_entry() {
                self.block_sequence(0)?
            } else {
                self.block_mapping(0)?
            };
            documents.push(value);
            if !self.at_end() && !self.at_document_marker() {
                return Err(GiveUp);
            }
        }
        Ok(documents)
    }

    /// The block collection starting where the reader stands, more indented than its parent.
    fn block_node(&mut self) -> Read<Value> {
        let indent = self.col();
        if self.at_entry() {
            self.block_sequence(indent)
        } else {
            self.block_mapping(indent)
        }
    }

    /// Whether the reader, after a node, stands on the next line of the collection at
    /// `indent`; gives up on a more indented line (a continuation or an error).
    fn continues(&self, indent: usize) -> Read<bool> {
        match self.indent_here() {
            Some(col) if col > indent => Err(GiveUp),
            Some(col) => Ok(col == indent && !self.at_document_marker()),
            None => Ok(false),
        }
    }

    fn block_sequence(&mut self, indent: usize) -> Read<Value> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            self.pos += 1;
            self.skip_spaces();
            let item = if self.at_line_end() {
                self.end_line()?;
                self.value_below(indent)?
            } else {
                self.entry_inline(indent)?
            };
            items.push(item);
            if !self.continues(indent)? {
                break;
            }
            if !self.at_entry() {
                // A key at the sequence's own indentation ends a sequence that is a key's
                // value; the parent checks it is one.
                break;
            }
        }
        self.depth -= 1;
        Ok(Value::Array(items))
    }

    /// The value of an entry or key whose line ends after its indicator: the block collection
    /// on the next lines if they are more indented, else null.
    fn value_below(&mut self, indent: usize) -> Read<Value> {
        match self.next_content()? {
            Some(col) if col > indent && !self.at_document_marker() => self.block_node(),
            _ => {
                self.count()?;
                Ok(Value::Null)
            }
        }
    }

    /// A sequence entry's content on the line of its `-`: a scalar, a flow collection, a
    /// literal block scalar, or the first key of a compact mapping.
    fn entry_inline(&mut self, indent: usize) -> Read<Value> {
        let start = self.pos;
        match self.peek() {
            b'|' => return self.literal(indent),
            b'[' | b'{' => return self.flow_then_line(indent),
            b'\'' | b'"' => {
                let text = self.quoted()?;
                self.skip_spaces();
                if self.peek() != b':' {
                    self.count()?;
                    self.end_line()?;
                    self.next_content()?;
                    self.continues(indent)?;
                    return Ok(Value::String(text));
                }
            }
            _ => {
                let (text, is_key) = self.block_plain()?;
                if !is_key {
                    self.count()?;
                    let value = plain_value(text)?;
                    self.end_line()?;
                    self.next_content()?;
                    self.continues(indent)?;
                    return Ok(value);
                }
            }
        }
        self.pos = start;
        self.block_mapping(self.col())
    }

    fn block_mapping(&mut self, indent: usize) -> Read<Value> {
        self.enter()?;
        let mut map = Map::new();
        loop {
            let key = self.block_key()?;
            self.skip_spaces();
            let value = if self.at_line_end() {
                self.end_line()?;
                match self.next_content()? {
                    Some(col) if col == indent && self.at_entry() && !self.at_document_marker() => {
                        self.block_sequence(indent)?
                    }
                    _ => self.value_below(indent)?,
                }
            } else {
                self.value_inline(indent)?
            };
            if map.insert(key, value).is_some() {
                return Err(GiveUp);
            }
            if !self.continues(indent)? {
                break;
            }
            if self.at_entry() {
                return Err(GiveUp);
            }
        }
        self.depth -= 1;
        Ok(Value::Object(map))
    }

    /// A key and its `:`, which must be followed by a space or the end of the line.
    fn block_key(&mut self) -> Read<String> {
        let start = self.pos;
        let key = match self.peek() {
            b'\'' | b'"' => {
                let key = self.quoted()?;
                self.skip_spaces();
                if self.peek() != b':' {
                    return Err(GiveUp);
                }
                key
            }
            _ => {
                let (text, is_key) = self.block_plain()?;
                if !is_key {
                    return Err(GiveUp);
                }
                key_string(text)?
            }
        };
        if self.pos - start > MAX_KEY_BYTES {
            return Err(GiveUp);
        }
        self.pos += 1;
        if !matches!(self.peek(), 0 | b' ' | b'\n') {
            return Err(GiveUp);
        }
        self.count()?;
        Ok(key)
    }

    /// A key's value on the key's line.
    fn value_inline(&mut self, indent: usize) -> Read<Value> {
        match self.peek() {
            b'|' => self.literal(indent),
            b'[' | b'{' => self.flow_then_line(indent),
            b'\'' | b'"' => {
                let text = self.quoted()?;
                self.count()?;
                self.end_line()?;
                self.next_content()?;
                self.continues(indent)?;
                Ok(Value::String(text))
            }
            _ => {
                let (text, is_key) = self.block_plain()?;
                if is_key {
                    return Err(GiveUp);
                }
                self.count()?;
                let value = plain_value(text)?;
                self.end_line()?;
                self.next_content()?;
                self.continues(indent)?;
                Ok(value)
            }
        }
    }

    /// A plain scalar in block context, to the end of its line, a comment, or a `: ` that
    /// makes it a key (then the reader stands on the `:`). Gives up on a tab or a first
    /// character that is an indicator.
    fn block_plain(&mut self) -> Read<(&'a str, bool)> {
        if !plain_start(self.peek(), self.byte_at(self.pos + 1), false) {
            return Err(GiveUp);
        }
        let start = self.pos;
        let mut is_key = false;
        loop {
            match self.peek() {
                b'\n' | 0 => break,
                b'\t' => return Err(GiveUp),
                b'#' if self.byte_at(self.pos - 1) == b' ' => break,
                b':' if matches!(self.byte_at(self.pos + 1), 0 | b' ' | b'\n') => {
                    is_key = true;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        let text = self.text[start..self.pos].trim_end_matches(' ');
        Ok((text, is_key))
    }

    /// A flow collection, then the rest of its line; the next line must not be more indented
    /// than `indent`.
    fn flow_then_line(&mut self, indent: usize) -> Read<Value> {
        let value = self.flow(indent)?;
        self.end_line()?;
        self.next_content()?;
        self.continues(indent)?;
        Ok(value)
    }

    /// Spaces, line breaks and comments inside a flow collection; a continuation line must be
    /// more indented than the block collection holding the flow collection.
    fn flow_space(&mut self, indent: usize) -> Read<()> {
        loop {
            self.skip_spaces();
            match self.peek() {
                b'\n' | b'#' if self.at_line_end() => {
                    self.end_line()?;
                    self.skip_spaces();
                    if self.at_end() || (self.col() <= indent && self.peek() != b'\n') {
                        return Err(GiveUp);
                    }
                }
                b'\t' => return Err(GiveUp),
                _ => return Ok(()),
            }
        }
    }

    fn flow(&mut self, indent: usize) -> Read<Value> {
        self.enter()?;
        let value = if self.peek() == b'[' {
            self.flow_sequence(indent)?
        } else {
            self.flow_mapping(indent)?
        };
        self.depth -= 1;
        Ok(value)
    }

    fn flow_sequence(&mut self, indent: usize) -> Read<Value> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.flow_space(indent)?;
            if self.peek() == b']' {
                break;
            }
            items.push(self.flow_item(indent)?);
            if self.flow_entry_ends(indent, b']')? {
                break;
            }
        }
        self.pos += 1;
        Ok(Value::Array(items))
    }

    fn flow_mapping(&mut self, indent: usize) -> Read<Value> {
        self.pos += 1;
        let mut map = Map::new();
        loop {
            self.flow_space(indent)?;
            if self.peek() == b'}' {
                break;
            }
            let start = self.pos;
            let key = match self.peek() {
                b'\'' | b'"' => self.quoted()?,
                _ => key_string(self.flow_plain()?)?,
            };
            self.count()?;
            self.skip_spaces();
            if self.peek() != b':' || self.pos - start > MAX_KEY_BYTES {
                return Err(GiveUp);
            }
            self.pos += 1;
            self.flow_space(indent)?;
            let value = if matches!(self.peek(), b',' | b'}') {
                self.count()?;
                Value::Null
            } else {
                self.flow_item(indent)?
            };
            if map.insert(key, value).is_some() {
                return Err(GiveUp);
            }
            if self.flow_entry_ends(indent, b'}')? {
                break;
            }
        }
        self.pos += 1;
        Ok(Value::Object(map))
    }

    /// Past the `,` after a flow entry (`false`), or at the collection's `close` (`true`).
    fn flow_entry_ends(&mut self, indent: usize, close: u8) -> Read<bool> {
        self.flow_space(indent)?;
        match self.peek() {
            b',' => {
                self.pos += 1;
                Ok(false)
            }
            c if c == close => Ok(true),
            _ => Err(GiveUp),
        }
    }

    /// A node inside a flow collection: a nested collection or a scalar. A scalar followed by
    /// `:` in a sequence (a single-pair mapping) is given up on by the caller.
    fn flow_item(&mut self, indent: usize) -> Read<Value> {
        match self.peek() {
            b'[' | b'{' => self.flow(indent),
            b'\'' | b'"' => {
                self.count()?;
                Ok(Value::String(self.quoted()?))
            }
            _ => {
                self.count()?;
                plain_value(self.flow_plain()?)
            }
        }
    }

    /// A plain scalar in flow context, to a flow indicator, a `: ` that ends a key, a comment
    /// or the end of the line.
    fn flow_plain(&mut self) -> Read<&'a str> {
        if !plain_start(self.peek(), self.byte_at(self.pos + 1), true) {
            return Err(GiveUp);
        }
        let start = self.pos;
        loop {
            match self.peek() {
                b'\n' | 0 | b',' | b'[' | b']' | b'{' | b'}' => break,
                b'\t' => return Err(GiveUp),
                b'#' if self.byte_at(self.pos - 1) == b' ' => break,
                b':' => match self.byte_at(self.pos + 1) {
                    0 | b' ' | b'\n' => break,
                    // `a:,` and `a:{`: the readers of the YAML world disagree.
                    b',' | b'[' | b']' | b'{' | b'}' => return Err(GiveUp),
                    _ => self.pos += 1,
                },
                _ => self.pos += 1,
            }
        }
        Ok(self.text[start..self.pos].trim_end_matches(' '))
    }

    /// A single- or double-quoted scalar on one line; the reader ends past the closing quote.
    fn quoted(&mut self) -> Read<String> {
        let quote = self.peek();
        self.pos += 1;
        let mut out = String::new();
        let mut run = self.pos;
        loop {
            match self.peek() {
                b'\n' | 0 => return Err(GiveUp),
                b'\'' if quote == b'\'' => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    if self.peek() != b'\'' {
                        return Ok(out);
                    }
                    out.push('\'');
                    self.pos += 1;
                    run = self.pos;
                }
                b'"' if quote == b'"' => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' if quote == b'"' => {
                    out.push_str(&self.text[run..self.pos]);
                    self.escape(&mut out)?;
                    run = self.pos;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// One escape of a double-quoted scalar, the reader on its `\`. Only `\\ \" \/ \n \t \r`
    /// and `\u` (not naming a control character) are read here.
    fn escape(&mut self, out: &mut String) -> Read<()> {
        let c = match self.byte_at(self.pos + 1) {
            b'\\' => '\\',
            b'"' => '"',
            b'/' => '/',
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'u' => {
                let hex = self.text.get(self.pos + 2..self.pos + 6).ok_or(GiveUp)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(GiveUp);
                }
                let code = u32::from_str_radix(hex, 16).map_err(|_| GiveUp)?;
                let c = char::from_u32(code).ok_or(GiveUp)?;
                if c.is_control() {
                    return Err(GiveUp);
                }
                out.push(c);
                self.pos += 6;
                return Ok(());
            }
            _ => return Err(GiveUp),
        };
        out.push(c);
        self.pos += 2;
        Ok(())
    }

    /// A literal block scalar (`|`, `|-`, `|+`), the reader on its `|`; its content must be
    /// more indented than `parent`. The reader ends on the next content line.
    fn literal(&mut self, parent: usize) -> Read<Value> {
        self.count()?;
        self.pos += 1;
        let chomp = match self.peek() {
            b'-' => Chomp::Strip,
            b'+' => Chomp::Keep,
            _ => Chomp::Clip,
        };
        if chomp != Chomp::Clip {
            self.pos += 1;
        }
        if !matches!(self.peek(), 0 | b' ' | b'\n') {
            return Err(GiveUp);
        }
        self.end_line()?;
        let indent = self.literal_indent(parent)?;
        let mut out = String::new();
        let mut breaks = 0;
        loop {
            let start = self.pos;
            self.skip_spaces();
            let spaces = self.pos - start;
            if self.at_end() || self.peek() == b'\n' {
                if spaces > indent {
                    return Err(GiveUp);
                }
                if self.at_end() {
                    break;
                }
                breaks += 1;
                self.pos += 1;
                self.line_start = self.pos;
                continue;
            }
            if spaces < indent {
                self.pos = start;
                break;
            }
            let end = self.s[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|n| start + n)
                .ok_or(GiveUp)?;
            for _ in 0..breaks {
                out.push('\n');
            }
            out.push_str(&self.text[start + indent..end]);
            breaks = 1;
            self.pos = end + 1;
            self.line_start = self.pos;
        }
        match chomp {
            Chomp::Strip => {}
            Chomp::Clip => out.push('\n'),
            Chomp::Keep => (0..breaks).for_each(|_| out.push('\n')),
        }
        self.next_content()?;
        Ok(Value::String(out))
    }

    /// The indentation of a literal scalar's content: that of its first non-blank line, which
    /// must be more indented than `parent` and than every blank line before it.
    fn literal_indent(&self, parent: usize) -> Read<usize> {
        let mut at = self.pos;
        let mut widest_blank = 0;
        loop {
            let spaces = self.s[at..].iter().take_while(|&&b| b == b' ').count();
            match self.s.get(at + spaces) {
                Some(b'\n') => {
                    widest_blank = widest_blank.max(spaces);
                    at += spaces + 1;
                }
                Some(_) if spaces > parent && spaces >= widest_blank => return Ok(spaces),
                _ => return Err(GiveUp),
            }
        }
    }
}

/// Whether a plain scalar may start with `first` (followed by `next`) here: not an indicator,
/// except a `-` followed by a character that cannot end the scalar.
fn plain_start(first: u8, next: u8, flow: bool) -> bool {
    match first {
        b'-' => {
            let ends = matches!(next, 0 | b' ' | b'\n' | b'\t');
            let flow_indicator = matches!(next, b',' | b'[' | b']' | b'{' | b'}');
            !(ends || flow && flow_indicator)
        }
        b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|'
        | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`' | b' ' | b'\n' | b'\t' | 0 => false,
        _ => true,
    }
}

/// A plain key, which must resolve to a string (not null, a boolean or a number) and not be a
/// merge key.
fn key_string(text: &str) -> Read<String> {
    if text.len() > MAX_KEY_BYTES || text.starts_with("<<") {
        return Err(GiveUp);
    }
    match plain_value(text)? {
        Value::String(s) => Ok(s),
        _ => Err(GiveUp),
    }
}

/// A plain scalar as YAML 1.2's core schema, with the loader's options, resolves it: null,
/// `true`/`false` in three spellings, integers in decimal that fit 64 bits, finite floats in
/// decimal, strings for text with an underscore or a leading zero (`1_000`, `0755`), else a
/// string. Radix prefixes, `+` signs, `.inf`, `.nan` and every other spelling Rust's float
/// parser takes (`inf`, overflowing exponents) are given up on.
fn plain_value(text: &str) -> Read<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let digits = |b: &[u8]| !b.is_empty() && b.iter().all(u8::is_ascii_digit);
    let bytes = text.as_bytes();
    match bytes {
        [b'0'..=b'9', ..] if digits(bytes) && (bytes[0] != b'0' || bytes.len() == 1) => {
            return text.parse::<u64>().map(Value::from).map_err(|_| GiveUp);
        }
        [b'-', b'1'..=b'9', rest @ ..] if rest.iter().all(u8::is_ascii_digit) => {
            return text.parse::<i64>().map(Value::from).map_err(|_| GiveUp);
        }
        _ => {}
    }
    let unsigned = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let leading_zero = digits(unsigned) && unsigned.len() > 1 && unsigned[0] == b'0';
    if text.contains('_') || leading_zero {
        return Ok(Value::String(text.to_owned()));
    }
    if digits(unsigned) {
        return Err(GiveUp);
    }
    let radix = matches!(
        unsigned,
        [b'0', b'x' | b'o' | b'b' | b'X' | b'O' | b'B', ..]
    );
    let dotted = unsigned.first() == Some(&b'.') && unsigned.len() == 4;
    if radix || dotted || text.starts_with('+') {
        return Err(GiveUp);
    }
    match text.parse::<f64>() {
        Ok(number) if number.is_finite() => Ok(Value::from(number)),
        Ok(_) => Err(GiveUp),
        Err(_) => Ok(Value::String(text.to_owned())),
    }
}
