//! Any template or `when` expression must render, evaluate or fail cleanly, in bounded time.
#![no_main]

use driftless_agent::apply::template::Templates;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let templates = Templates::new();
    let facts = serde_json::json!({"hostname": "node-1", "os": {"family": "debian"}, "cpu": {"count": 2}});
    let vars = serde_json::json!({"admins": ["alice", "bob"], "port": 8080, "nested": {"a": [1, 2]}});
    if templates.check_template(source).is_ok() {
        let _ = templates.render("fuzz", "template", source, &facts, &vars);
    }
    if templates.check_expression(source).is_ok() {
        let _ = templates.when("fuzz", source, &facts, &vars);
    }
});
