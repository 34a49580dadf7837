//! Any bytes, read as a configuration file, must give resources or problems — never a panic;
//! and wherever the fast YAML reader returns documents, they are the full reader's.
#![no_main]

use driftless_agent::config::files::parse_yaml;
use driftless_crds::yaml::{parse_yaml_fast, parse_yaml_full};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(fast) = parse_yaml_fast(text) {
        assert_eq!(Ok(fast), parse_yaml_full(text), "the YAML readers differ on {text:?}");
    }
    let Ok(documents) = parse_yaml(text) else {
        return;
    };
    for document in documents {
        let _ = driftless_crds::resource::parse(document);
    }
});
