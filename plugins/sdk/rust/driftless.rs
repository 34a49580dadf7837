//! driftless.rs: helpers for writing a Driftless plugin in Rust (plugin ABI 1, see
//! docs/developer/plugins.md). Needs only std: no crates, so it builds with a bare `rustc`.
//!
//! Include it as a module of the plugin; it defines the `driftless_alloc` and `_initialize`
//! exports:
//!
//! ```ignore
//! #[path = "../../sdk/rust/driftless.rs"]
//! mod driftless;
//!
//! #[no_mangle]
//! pub extern "C" fn driftless_facts(ptr: i32, len: i32) -> i64 {
//!     driftless::call(ptr, len, |_input| Ok(r#"{"facts":{"hello":"world"},"metrics":[]}"#.into()))
//! }
//! ```
//!
//! Build as a WASI reactor:
//!     rustc --edition 2021 --target wasm32-wasi --crate-type cdylib -C opt-level=2 plugin.rs
#![allow(dead_code)]

use std::alloc::{alloc, Layout};
use std::cell::RefCell;

extern "C" {
    fn __wasm_call_ctors();
}

/// The reactor constructor, which the host calls once before anything else. It runs the C
/// library's initialisers: among them the one that finds the preopened (granted) directories, which
/// std::fs needs to open absolute paths. (Without an `_initialize`, the linker would instead wrap
/// every export in a run of the initialisers and finalisers.)
#[no_mangle]
pub extern "C" fn _initialize() {
    unsafe { __wasm_call_ctors() }
}

/// The host asks for `size` bytes to write a call's input into; 0 means out of memory.
#[no_mangle]
pub extern "C" fn driftless_alloc(size: i32) -> i32 {
    if size < 0 {
        return 0;
    }
    if size == 0 {
        // Nothing to allocate: a dangling, non-null pointer, as an empty Vec has.
        return std::ptr::NonNull::<u8>::dangling().as_ptr() as i32;
    }
    match Layout::array::<u8>(size as usize) {
        Ok(layout) => unsafe { alloc(layout) as i32 },
        Err(_) => 0,
    }
}

/// Takes over an entry point's input: driftless_alloc allocated exactly `len` bytes, as a
/// `Vec<u8>` of that capacity would, so the Vec frees them when dropped.
pub fn take_input(ptr: i32, len: i32) -> Vec<u8> {
    unsafe { Vec::from_raw_parts(ptr as usize as *mut u8, len as usize, len as usize) }
}

/// Packs an output the way entry points return it: (ptr << 32) | len.
pub fn pack(bytes: &[u8]) -> i64 {
    (((bytes.as_ptr() as usize as u64) << 32) | bytes.len() as u64) as i64
}

thread_local! {
    /// The last output handed to the host: it must stay valid until the next call, so it lives
    /// here until the next output replaces it.
    static OUTPUT: RefCell<Vec<u8>> = RefCell::new(Vec::new());
}

/// Returns `json` as the output.
pub fn output(json: String) -> i64 {
    let bytes = json.into_bytes();
    let packed = pack(&bytes);
    OUTPUT.with(|out| *out.borrow_mut() = bytes);
    packed
}

/// Returns {"error": message}: the host fails the call with that message.
pub fn error(message: &str) -> i64 {
    output(format!("{{\"error\":{}}}", quote(message)))
}

/// Runs an entry point: takes its input, hands it to `f` as text and returns what `f` returns,
/// `Ok(json)` as the output, `Err(message)` as {"error": message}.
pub fn call(ptr: i32, len: i32, f: impl FnOnce(&str) -> Result<String, String>) -> i64 {
    let input = take_input(ptr, len);
    let result = match std::str::from_utf8(&input) {
        Ok(text) => f(text),
        Err(_) => Err("input is not UTF-8".to_string()),
    };
    match result {
        Ok(json) => output(json),
        Err(message) => error(&message),
    }
}

// ---- Writing JSON ----------------------------------------------------------------------------

/// `s` as a JSON string, quotes included.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    out
}

/// Appends `s` to `out` as a JSON string: `"` `\` and control characters escaped, the rest as is.
pub fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---- Reading JSON ----------------------------------------------------------------------------
// Just enough to pick members out of the host's input, which is valid JSON. These functions find
// where values end; they do not validate.

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the string whose opening quote is at `i` (the index after its closing quote).
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// The end of the value starting at `i`. Objects and arrays: brackets counted outside strings.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_ws(b, i);
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // A number, true, false or null: up to the next delimiter.
            let end = (i..b.len())
                .find(|&j| matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(b.len());
            (end > i).then(|| end)
        }
    }
}

/// The raw value (e.g. `"a\"b"`, `{...}`, `12`) of the member `key` of the JSON object `json`;
/// None when it is absent or `json` is not an object. Names are compared after unescaping.
pub fn member<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let b = json.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        let name_end = skip_string(b, i)?;
        let name = unescape(json.get(i..name_end)?)?;
        i = skip_ws(b, name_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = skip_value(b, start)?;
        if name == key {
            return json.get(start..end);
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            _ => return None,
        }
    }
}

/// The member `key` of the object `json` as a string: Ok(None) when absent, an error naming `key`
/// when it is there but not a string.
pub fn string_member(json: &str, key: &str) -> Result<Option<String>, String> {
    match member(json, key) {
        None => Ok(None),
        Some(raw) => unescape(raw)
            .map(Some)
            .ok_or_else(|| format!("{} must be a string", key)),
    }
}

/// Decodes a JSON string literal (quotes included): every escape, \uXXXX too, with surrogate pairs
/// joined and a lone surrogate turned into U+FFFD. None when `raw` is not a string literal.
pub fn unescape(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let unit = hex4(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate: join it with the low one that should follow.
                    let mut ahead = chars.clone();
                    match (ahead.next(), ahead.next(), hex4(&mut ahead)) {
                        (Some('\\'), Some('u'), Some(low)) if (0xDC00..0xE000).contains(&low) => {
                            chars = ahead;
                            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        }
                        _ => 0xFFFD,
                    }
                } else {
                    unit
                };
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            _ => return None,
        }
    }
    Some(out)
}

fn hex4(chars: &mut std::str::Chars) -> Option<u32> {
    let mut value = 0;
    for _ in 0..4 {
        value = value * 16 + chars.next()?.to_digit(16)?;
    }
    Some(value)
}
