//! `make bench-plan`: plan-JSON parsing of a generated 10,000-resource plan by the release
//! `driftless-operator scan-runner --parse-plan` (goal: < 200 ms, peak memory growth < 3× the
//! file), side by side with `jq` extracting the drifted resources from the same file.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn operator() -> PathBuf {
    if let Ok(p) = std::env::var("DRIFTLESS_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.with_file_name("driftless-operator")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let bin = operator();
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `make bench-plan`",
        bin.display()
    );
    let resources: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("bench-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("plan.json");
    let out = Command::new(&bin)
        .args(["scan-runner", "--generate-plan", &resources.to_string()])
        .output()?;
    anyhow::ensure!(out.status.success(), "generating the plan failed");
    std::fs::write(&file, &out.stdout)?;
    let size = out.stdout.len();
    println!(
        "plan: {resources} resources, {:.1} MB ({})",
        size as f64 / 1e6,
        file.display()
    );

    let mut parse_ms = Vec::new();
    let mut wall_ms = Vec::new();
    let mut growth = Vec::new();
    let mut items = 0;
    for _ in 0..7 {
        let start = Instant::now();
        let out = Command::new(&bin)
            .args(["scan-runner", "--parse-plan"])
            .arg(&file)
            .output()?;
        wall_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            out.status.success(),
            "parse failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        parse_ms.push(v["parse_ms"].as_f64().unwrap_or(f64::NAN));
        growth.push(v["peak_growth_over_file"].as_f64().unwrap_or(f64::NAN));
        items = v["items"].as_u64().unwrap_or(0);
    }
    let ours_parse = median(parse_ms);
    let ours_wall = median(wall_ms);
    let ours_growth = growth.iter().cloned().fold(0.0, f64::max);
    println!("driftless parse:   {ours_parse:8.1} ms (median of 7), process wall {ours_wall:.1} ms, {items} items");
    println!(
        "driftless memory:  peak growth {ours_growth:.2}× the file (read buffer included; goal < 3×)"
    );
    println!(
        "goal parse < 200 ms: {}",
        if ours_parse < 200.0 { "met" } else { "NOT met" }
    );

    let jq_ok = Command::new("jq").arg("--version").output().is_ok();
    if jq_ok {
        let mut jq_ms = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let out = Command::new("jq")
                .args(["-c", r#"[.resource_changes[] | select(.change.actions != ["no-op"]) | .address] | length"#])
                .arg(&file)
                .output()?;
            jq_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(out.status.success(), "jq failed");
        }
        let jq = median(jq_ms);
        println!("jq (peer, addresses only): {jq:8.1} ms wall (median of 3)");
        println!("ratio jq / driftless (wall): {:.1}×", jq / ours_wall);
    } else {
        println!("jq not installed: peer comparison skipped");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
