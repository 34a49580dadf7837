//! Any bytes, read as a configuration file, must give resources or problems — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for document in serde_yaml::Deserializer::from_str(text) {
        let Ok(value) = serde_json::Value::deserialize(document) else {
            return;
        };
        if value.is_null() {
            continue;
        }
        let _ = driftless_crds::resource::parse(value);
    }
});
