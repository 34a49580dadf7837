//! The fast YAML reader against the full one: wherever the fast reader returns documents, they
//! are exactly the full reader's, on every YAML file in the repository, on hand-picked edge
//! cases and on mutations of both. And the fast reader does take ordinary configuration.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use driftless_crds::yaml::{parse_yaml, parse_yaml_fast, parse_yaml_full};

/// Checks one text; returns whether the fast reader took it.
fn agree(name: &str, text: &str) -> bool {
    let Some(fast) = parse_yaml_fast(text) else {
        return false;
    };
    match parse_yaml_full(text) {
        Ok(full) => assert_eq!(fast, full, "{name}: the readers differ on {text:?}"),
        Err(err) => panic!(
            "{name}: the fast reader accepted what the full reader refuses ({err}): {text:?}"
        ),
    }
    assert_eq!(parse_yaml(text).unwrap(), fast);
    true
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            yaml_files(&path, out);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
}

fn repository_yaml() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in [
        "config",
        "charts",
        "crds",
        "node-agent",
        "operator",
        "e2e",
        "docs",
    ] {
        yaml_files(&root.join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path.strip_prefix(root).unwrap().display().to_string(), text))
        })
        .collect()
}

/// Edge cases around what the fast reader reads and where it must give up.
const CASES: &[&str] = &[
    "a: 1\nb: [x, 'y', \"z\"]\nc: {d: e, 'f': g, \"h\":i}\n",
    "a:\n- 1\n- two\nb:\n  - c: d\n    e: f\n  -\n  - [g]\n",
    "- a: 1\n  b:\n    c: 2\n- - x\n",
    "k: |\n  line 1\n\n  line 2\n\nnext: x\n",
    "k: |-\n  one\n  two\n\n\nn: 1\n",
    "k: |+\n  one\n\n\nn: 1\n",
    "k: |+\n  one\n\n",
    "k: |\n\n  after blank\n",
    "k: |\n    deeper\n  less\n",
    "k: |\n  # not a comment\n  x\n# a comment\nn: 2\n",
    "k: |\n  no newline at the end",
    "k: |2\n   indented\n",
    "k: >\n  folded\n  text\n",
    "k: |\n  \ttab after indent\n",
    "k: |\n  a\n   \n  b\n",
    "k: plain # comment\nl: a#b\nm: 'it''s'\nn: \"q\\\"\\n\\t\\u00e9\\\\\"\n",
    "k: \"\\x41\\e\\N\\_\"\n",
    "k: a: b\n",
    "k: a:\n",
    "k: http://example.com:8080/x\n",
    "k: multi\n  line\n",
    "k: 'multi\n  line'\n",
    "k: \"multi\n  line\"\n",
    "k: [a,\n  b, c\n  ]\n",
    "k: [a,\nb]\n",
    "k: {a: 1,\n    b: [2, 3]}\n",
    "k: [a: b]\n",
    "k: {a}\n",
    "k: {a:1}\n",
    "k: [a, , b]\n",
    "k: [a, b, ]\n",
    "k: {a: , b: }\n",
    "k: []\nl: {}\n",
    "a: 1\na: 2\n",
    "a: 1\n'a': 2\n",
    "{a: 1, a: 2}\n",
    "k: &x 1\nl: *x\n",
    "k: !!str 1\n",
    "<<: {a: 1}\n",
    "? a\n: b\n",
    "%YAML 1.2\n---\na: 1\n",
    "---\na: 1\n---\n---\nb: 2\n...\n",
    "--- a: 1\n",
    "---\n- x\n...\n---\ny: 1\n",
    "",
    "# only a comment\n",
    "a: 1\n  b: 2\n",
    "a: 1\n- b\n",
    "- a\nb: 1\n",
    "a:\n  - x\n  y: 1\n",
    "  a: 1\n",
    "a:\tb\n",
    "a: b\t\n",
    "\ta: 1\n",
    "a: \"tab\tinside\"\n",
    "a: \u{feff}x\n",
    "\u{feff}a: 1\n",
    "a: b\r\nc: d\r\n",
    "a: x\u{85}y\n",
    "n: [-5, -9223372036854775808, -9223372036854775809, 00.5, 0.5, 1.5e3, -1.5, 1e999, 5., 0755, -0755, 1_0,\n  9_9.5, 1e, e1, 1.5.5]\n",
    "n: [0, 7, 10, 18446744073709551615, 18446744073709551616, 007, 1_000, 0x1F, 0o17, -1, -0, +1]\n",
    "f: [1.5, 1e3, .5, .inf, -.inf, .nan, -.nan, inf, nan, Infinity, 1., 1.2.3, 2001-12-14]\n",
    "b: [true, True, TRUE, false, False, FALSE, tRue, yes, no, on, off, y, n]\n",
    "z: [null, Null, NULL, ~, nUll, '', \"\"]\n",
    "s: [-x, --flag, -, '-', a-b, -inf, -Inf, -nan, -1x, 1x, v1.2]\n",
    "true: 1\n",
    "1: a\n",
    "null: a\n",
    "'': a\n",
    ": a\n",
    "a: -\n",
    "a: - b\n",
    "a: ---\nb: ...\n",
    "a: [b]c\n",
    "a: \"b\"c\n",
    "a: 'b' # c\n",
    "a: 'b'#c\n",
    "\"a\" : 1\n",
    "a :1\n",
    "a : 1\n",
    "a: b  \n",
    "- |\n  x\n- >\n  y\n",
    "- |\n x\n",
    "a:\n- |\n  x\n- y\n",
    "a: |\nb: 1\n",
    "a: |\n\n\nb: 1\n",
    "a: |\n   \n  x\n",
    "a: |\n  x\n    \n",
    "a: [\"x\", 'y' , z ]  # c\n",
    "a: [x # c\n  , y]\n",
    "a: {b: [c, {d: e}], f: {g: [h]}}\n",
    "a: [[[[[[]]]]]]\n",
    // Found by the mutation test: serde-saphyr refuses a `:` right before `{` in flow.
    "a: {b: [c, {d: e}], f:{g: [h]}}\n",
    "a: {f:[g]}\n",
    "a: b # c: d\n",
    "a: x # c\n  # d\nb: y\n",
    "a: 'x\\n'\nb: \"\\/\"\n",
    "a: \"\\ud800\"\nb: \"\\u0000\"\n",
    "a: é ü 日本\n\"ключ\": значение\n",
    "a: @x\n",
    "a: `x`\n",
    "a: %x\n",
    "a: ,x\n",
    "a: ?x\n",
    "a: :x\n",
    "a: x:\n",
    "a: x:y\n",
    "-\n-\n",
    "- - - x\n",
    "-\n  - x\n",
    "- a\n  - b\n",
    "- a: 1\n b: 2\n",
    "- 'a': 1\n  b: 2\n",
    "- \"a\"\n",
    "key with spaces: value with spaces\n",
    "a: b\n\n\n# trailing\n",
    "a: b\n...\nc: d\n",
    "a:\n\n  b: c\n",
    "a:\n  # comment\n  b: c\n",
];

#[test]
fn the_readers_agree_on_edge_cases() {
    let taken = CASES
        .iter()
        .enumerate()
        .filter(|(i, text)| agree(&format!("case {i}"), text))
        .count();
    // Ordinary shapes are read by the fast reader; the unusual ones are given up on.
    for text in [CASES[0], CASES[1], CASES[3], CASES[4], CASES[5], CASES[15]] {
        assert!(parse_yaml_fast(text).is_some(), "not taken: {text:?}");
    }
    for text in [
        "k: &x 1\nl: *x\n",
        "k: a: b\n",
        "a: 1\na: 2\n",
        "k: >\n  folded\n",
    ] {
        assert!(parse_yaml_fast(text).is_none(), "taken: {text:?}");
    }
    assert!(taken > CASES.len() / 3, "{taken} of {} taken", CASES.len());
}

#[test]
fn the_readers_agree_on_the_repositorys_yaml() {
    let files = repository_yaml();
    assert!(files.len() > 50, "only {} YAML files found", files.len());
    let mut taken = 0;
    for (name, text) in &files {
        if agree(name, text) {
            taken += 1;
        }
    }
    // Every example configuration and sample is ordinary YAML.
    for (name, text) in &files {
        if name.starts_with("config/examples/") || name.starts_with("config/samples/") {
            assert!(
                parse_yaml_fast(text).is_some(),
                "{name} is not read by the fast reader"
            );
        }
    }
    println!("the fast reader took {taken} of {} files", files.len());
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Characters that change YAML's structure, for mutations.
const PIECES: &[&str] = &[
    " ", "  ", "\n", "\n  ", ":", ": ", "-", "- ", "#", " #", "'", "\"", "|", "|-", ">", "[", "]",
    "{", "}", ",", "&a", "*a", "!", "?", "\\", "\t", "0", "1", "-1", ".", "e", "a", "é", "---\n",
    "\\n", "\\u00e9", "\\x41", "''", "null", "true", "~",
];

#[test]
fn the_readers_agree_on_mutations() {
    let mut seeds: Vec<String> = CASES.iter().map(|c| (*c).to_owned()).collect();
    seeds.extend(
        repository_yaml()
            .into_iter()
            .filter(|(name, _)| name.starts_with("config/") || name.contains("corpus"))
            .map(|(_, text)| text)
            .filter(|text| text.len() < 4_000),
    );
    // `YAML_MUTATIONS=<rounds>` and `YAML_SEED=<n>` search further than the default run.
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ env("YAML_SEED").unwrap_or(0));
    let mut taken = 0;
    let rounds = env("YAML_MUTATIONS").unwrap_or(20_000) as usize;
    for round in 0..rounds {
        let seed = &seeds[rng.below(seeds.len())];
        let mut text = seed.clone();
        for _ in 0..1 + rng.below(3) {
            let mut at = rng.below(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            match rng.below(3) {
                0 => {
                    let end = (at + 1 + rng.below(3)).min(text.len());
                    let mut end = end;
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(at..end, "");
                }
                _ => text.insert_str(at, PIECES[rng.below(PIECES.len())]),
            }
        }
        if agree(&format!("mutation {round}"), &text) {
            taken += 1;
        }
    }
    println!("the fast reader took {taken} of {rounds} mutations");
    assert!(
        taken > rounds / 10,
        "only {taken} of {rounds} mutations taken"
    );
}
