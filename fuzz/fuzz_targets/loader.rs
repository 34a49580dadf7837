//! Any bytes, read as a configuration file, must give resources or problems — never a panic.
#![no_main]

use driftless_agent::config::files::parse_yaml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = parse_yaml(text) else {
        return;
    };
    for document in documents {
        let _ = driftless_crds::resource::parse(document);
    }
});
